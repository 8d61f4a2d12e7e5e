"""transport: TR 101 290 checks on MPEG-TS sources, on transport streams of real footage muxed by PyAV and by
the FFmpeg command line, with faults injected into their packets at times found by ffprobe.

Every check must find each fault of its kind in the generated set (F1 >= 0.95, per check) with no
transport event on clean captures; FFmpeg's own "Continuity check failed" log and ffprobe's packet
listing are the oracles. The limits are TR 101 290's (nothing here is tuned on these clips).
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from avwatch.convert.transport import TsAnalyzer
from avwatch.local import analyze_source
from avwatch.samples import REAL_CLIPS, real_clip
from detectors.config import DetectorConfig
from detectors.table import Features
from tests import ts_media as tm
from tests.media import ffmpeg

TRANSPORT = DetectorConfig.build(["transport"])
SEEDS = range(5)
TOLERANCE_S = 1.5   # the transport's clock (PCR) leads the pictures by the decoder's buffer delay

# fault -> (injector, argument drawn from rng, the checks that must report it)
FAULTS = {
    "drop": (tm.drop, lambda rng: int(rng.integers(2, 40)), {"continuity"}),
    "tei": (tm.transport_error, lambda rng: int(rng.integers(1, 6)), {"tei"}),
    "pat": (tm.remove_pat, lambda rng: float(rng.uniform(0.8, 2.0)), {"pat"}),
    "pid_stop": (tm.stop_pid, lambda rng: "audio", {"pid"}),
    "sync": (tm.break_sync, lambda rng: int(rng.integers(2, 6)), {"sync_loss"}),
    "outage": (tm.outage, lambda rng: float(rng.uniform(1.2, 2.0)), {"pid", "pat", "pmt", "pcr", "pts", "continuity"}),
    "crc": (tm.corrupt_tables, lambda rng: int(rng.integers(1, 4)), {"crc"}),
}


def check_of(row: dict) -> str:
    """The check family of an event ('continuity pid 256' -> 'continuity', 'pid 257' -> 'pid')."""
    return json.loads(row["details"])["check"].split(" ")[0]


@pytest.fixture(scope="module")
def clean_ts(tmp_path_factory) -> dict[int, Path]:
    """Clean captures: each seed its real clip, size, bitrate and audio codec."""
    folder = tmp_path_factory.mktemp("ts")
    sizes = [(320, 180), (640, 360), (320, 180), (480, 270), (640, 360)]
    out = {}
    for seed in SEEDS:
        rng = np.random.default_rng(seed)
        out[seed] = tm.make_ts(folder / f"clean{seed}.ts", seed, seconds=8.0, size=sizes[seed],
                               audio_codec="aac" if seed % 2 else "mp2", bitrate=int(rng.integers(300, 2000)) * 1000)
    return out


@pytest.fixture(scope="module")
def damaged_set(clean_ts, tmp_path_factory) -> list[dict]:
    """Each fault on each clean capture at a seeded time: (file, fault, its span)."""
    folder = tmp_path_factory.mktemp("ts_damaged")
    cases = []
    for seed, clean in clean_ts.items():
        tl = tm.timeline(clean)
        for k, (name, (inject, draw, expected)) in enumerate(FAULTS.items()):
            rng = np.random.default_rng(1000 * seed + k)
            pkts = tm.packets(clean)
            start, end = inject(pkts, tl, float(rng.uniform(2.0, 4.5)), draw(rng))
            path = tm.write_packets(folder / f"{name}_{seed}.ts", pkts)
            cases.append({"path": path, "fault": name, "span": (start, min(end, 8.0)), "expected": expected})
    return cases


def _overlaps(row: dict, span: tuple[float, float]) -> bool:
    return row["start_s"] <= span[1] + TOLERANCE_S and row["end_s"] >= span[0] - TOLERANCE_S


@pytest.mark.footage
def test_each_check_finds_its_faults_with_f1_of_at_least_095(damaged_set):
    found = {c: {"tp": 0, "fn": 0, "fp": 0} for c in ("continuity", "tei", "pat", "pmt", "pid", "sync_loss", "pcr",
                                                     "pts", "crc", "sync_byte", "pat_invalid", "pmt_invalid")}
    for case in damaged_set:
        rows = analyze_source(str(case["path"]), TRANSPORT).rows
        for check in case["expected"]:
            hit = any(check_of(r) == check and _overlaps(r, case["span"]) for r in rows)
            found[check]["tp" if hit else "fn"] += 1
        for r in rows:   # any transport event away from the fault is a false alarm of its check
            if not _overlaps(r, case["span"]):
                found[check_of(r)]["fp"] += 1
    report = {}
    for check, n in found.items():
        if n["tp"] + n["fn"] == 0:
            continue
        precision = n["tp"] / max(1, n["tp"] + n["fp"])
        recall = n["tp"] / (n["tp"] + n["fn"])
        report[check] = (round(2 * precision * recall / max(1e-9, precision + recall), 3), n)
    print("transport F1 per check:", report)
    assert set(report) == {"continuity", "tei", "pat", "pmt", "pid", "sync_loss", "pcr", "pts", "crc"}
    assert not any(found[c]["fp"] for c in ("sync_byte", "pat_invalid", "pmt_invalid"))
    for check, (f1, n) in report.items():
        assert f1 >= 0.95, (check, n)


@pytest.mark.footage
def test_no_transport_event_on_clean_captures(clean_ts, tmp_path):
    """PyAV-muxed captures (MP2 and AAC, 300 kb/s to 2 Mb/s) and the real clips remuxed by FFmpeg's own
    muxer (other PAT, PCR and PES habits)."""
    sources = list(clean_ts.values())
    for rate in (25, 50):   # FFmpeg's muxer on a low-rate stream: a PCR every 100 ms exactly, the limit
        out = tmp_path / f"testsrc{rate}.ts"
        subprocess.run([ffmpeg(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                        f"testsrc2=size=320x180:rate={rate}", "-f", "lavfi", "-i", "sine=frequency=440", "-t", "6",
                        "-c:v", "libx264", "-g", str(rate), "-c:a", "mp2", "-f", "mpegts", str(out)], check=True)
        sources.append(out)
    for name in REAL_CLIPS:
        out = tmp_path / f"{name}.ts"
        subprocess.run([ffmpeg(), "-hide_banner", "-loglevel", "error", "-y", "-i", str(real_clip(name)), "-c", "copy",
                        "-f", "mpegts", str(out)], check=True)
        sources.append(out)
    for path in sources:
        result = analyze_source(str(path), TRANSPORT)
        assert result.frames > 0
        assert result.rows == [], (path.name, [(r["start_s"], json.loads(r["details"])) for r in result.rows])


@pytest.mark.footage
def test_continuity_errors_are_on_the_pids_ffmpeg_reports(damaged_set):
    """FFmpeg's demuxer logs 'Continuity check failed for pid N': the same PIDs, for every lost-packet clip."""
    for case in [c for c in damaged_set if c["fault"] in ("drop", "outage")]:
        rows = analyze_source(str(case["path"]), TRANSPORT).rows
        ours = {json.loads(r["details"])["pid"] for r in rows if check_of(r) == "continuity"}
        assert ours == tm.ffmpeg_continuity_pids(case["path"]), case["path"].name


@pytest.mark.footage
def test_a_stopped_audio_pid_is_one_event_from_its_last_packet_to_the_end(damaged_set):
    """ffprobe's packet listing says when the audio's last packet was: the PID_error starts there (within
    the PCR lead) and lasts to the end of the stream; it names the PID and what it carried."""
    for case in [c for c in damaged_set if c["fault"] == "pid_stop"]:
        tl = tm.timeline(case["path"])
        last_audio = max(t for t, _ in tl.audio)
        rows = [r for r in analyze_source(str(case["path"]), TRANSPORT).rows if check_of(r) == "pid"]
        assert len(rows) == 1, rows
        details = json.loads(rows[0]["details"])
        assert details["pid"] == tl.pids["audio"] and details["carries"].startswith("audio")
        assert details["tr101290"] == "1.6 PID_error" and rows[0]["severity"] == "major"
        assert abs(rows[0]["start_s"] - last_audio) <= TOLERANCE_S
        assert rows[0]["end_s"] >= max(t for t, _ in tl.video) - 0.1


@pytest.mark.footage
def test_a_withheld_pat_is_raised_while_it_lasts_and_closed_when_it_returns(damaged_set):
    case = next(c for c in damaged_set if c["fault"] == "pat")
    result = analyze_source(str(case["path"]), TRANSPORT)
    pats = [r for r in result.reports if check_of(r) == "pat"]
    assert [r["state"] for r in pats][0] == "open" and pats[-1]["state"] == "closed"
    assert len({r["event_id"] for r in pats}) == 1
    opened, closed = pats[0], pats[-1]
    assert opened["end_s"] - opened["start_s"] == pytest.approx(0.5, abs=1e-6)   # raised after 0.5 s of absence
    width = case["span"][1] - case["span"][0]
    assert closed["end_s"] - closed["start_s"] == pytest.approx(width, abs=0.3)


@pytest.mark.footage
def test_a_burst_of_errors_is_one_event_with_its_count(damaged_set):
    for case in [c for c in damaged_set if c["fault"] == "tei"]:
        rows = [r for r in analyze_source(str(case["path"]), TRANSPORT).rows if check_of(r) == "tei"]
        assert len(rows) == 1
        assert json.loads(rows[0]["details"])["errors"] >= 1 and rows[0]["severity"] == "minor"


# -- the analyser on its own: packets built here, bytes cut anywhere ------------------------------------------


def _packet(pid: int, cc: int, payload: bool = True, discontinuity: bool = False) -> bytes:
    if discontinuity:
        header = bytes([0x47, pid >> 8, pid & 0xFF, 0x30 | cc, 1, 0x80])
        return header + b"\xff" * (188 - len(header))
    return bytes([0x47, pid >> 8, pid & 0xFF, (0x10 if payload else 0x20) | cc]) + b"\xff" * 184


def _stream(ccs, pid=0x100, **flags) -> bytes:
    return b"".join(_packet(pid, c, **flags) for c in ccs)


LEAD = _stream(range(8), pid=0x200)   # packets of another PID first: the analyser finds sync on five


def _counts(data: bytes, cut: int | None = None) -> dict:
    a = TsAnalyzer()
    data = LEAD + data
    step = cut or len(data)
    for i in range(0, len(data), step):
        a.feed(data[i:i + step])
    return a.counts


def test_continuity_rules_duplicates_and_discontinuity_indicator():
    assert _counts(_stream(range(16)) + _stream(range(16)))["continuity"] == 0           # wraps at 16
    assert _counts(_stream([0, 1, 2, 2, 3]))["continuity"] == 0                            # one duplicate
    assert _counts(_stream([0, 1, 2, 2, 2, 3]))["continuity"] == 1                         # more than twice
    assert _counts(_stream([0, 1, 3, 4]))["continuity"] == 1                               # one lost
    assert _counts(_stream([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 0, 0]))["continuity"] == 0
    # the same counter after 16 lost packets is no duplicate: the bytes differ
    different = _packet(0x100, 3)[:-1] + b"\x00"
    assert _counts(_stream([0, 1, 2, 3]) + different)["continuity"] == 1
    assert _counts(_stream([0, 1]) + _packet(0x100, 9, discontinuity=True) + _stream([10]))["continuity"] == 0
    assert _counts(_stream([0, 1]) + _stream([1, 1], payload=False) + _stream([2]))["continuity"] == 0
    assert _counts(_stream([0, 1]) + _stream([5, 9], pid=0x1FFF) + _stream([2]))["continuity"] == 0  # null PID
    for cut in (1, 188, 376):   # the same across reads
        assert _counts(_stream([0, 1, 2, 2, 3, 5]), cut)["continuity"] == 1


def test_scrambled_or_foreign_tables_on_table_pids():
    """A PAT packet with the scrambling bits set, or a section of another table on PID 0 (TR 101 290 1.3a)."""
    pat = bytearray(_packet(0, 0))
    pat[1] |= 0x40                     # a section starts here
    pat[4:7] = bytes([0, 0x42, 0xB0])  # pointer 0, table_id 0x42 (an SDT) on PID 0
    assert _counts(bytes(pat))["pat_invalid"] == 1
    scrambled = bytearray(_packet(0, 0))
    scrambled[1] |= 0x40
    scrambled[3] |= 0x80
    assert _counts(bytes(scrambled))["pat_invalid"] == 1


def test_sync_byte_errors_and_sync_loss():
    good = _stream(range(10))
    one_bad = bytearray(good)
    one_bad[188 * 4] = 0x00
    assert _counts(bytes(one_bad))["sync_byte"] == 1 and _counts(bytes(one_bad))["sync_loss"] == 0
    lost = bytearray(good + _stream(range(10, 16)))
    lost[188 * 4] = lost[188 * 5] = 0x00
    counts = _counts(bytes(lost))
    assert counts["sync_loss"] == 1 and counts["sync_byte"] == 0


@pytest.mark.footage
@pytest.mark.parametrize("cut", [1, 7, 188, 1316, 4096, 32768])
def test_the_analyser_gives_the_same_notes_however_the_bytes_arrive(clean_ts, cut):
    """A file read by FFmpeg in 32 kB blocks or UDP datagrams of 7 packets: the same counts and notes."""
    data = tm.packets(clean_ts[0])
    pkts = list(data)
    del pkts[300:311]                     # lost packets
    pkts[700][1] |= 0x80                  # a transport error
    for p in pkts[900:903]:
        p[0] = 0                          # lost sync
    raw = b"".join(bytes(p) for p in pkts)

    def notes(step):
        a = TsAnalyzer()
        for i in range(0, len(raw), step):
            a.feed(raw[i:i + step])
        return a.counts, [(n["check"], n.get("pid"), round(n["t"], 6), n.get("count")) for n in a.take_notes()]

    whole = notes(len(raw))
    assert whole[0]["continuity"] >= 1 and whole[0]["tei"] == 1 and whole[0]["sync_loss"] == 1
    counts, found = notes(cut)
    assert counts == whole[0]
    # counted notes may be split differently across reads; their sums per check, PID and time may not
    def summed(ns):
        out = {}
        for check, pid, t, count in ns:
            out[(check, pid, t)] = out.get((check, pid, t), 0) + (count or 1)
        return out

    assert summed(found) == summed(whole[1])


# -- bitrate (optional) -----------------------------------------------------------------------------------------


def _rates(seconds: dict[int, int], pid: str = "256") -> Features:
    """Feature rows carrying one second's bytes each (as stage 1 gives them), one row per second."""
    t = np.array(sorted(seconds), float)
    notes = [json.dumps({"rates": [{"check": "rate", "t": float(s), "bytes": {pid: seconds[s]}}],
                         "streams": {pid: "video h264"}}).encode() for s in sorted(seconds)]
    return Features(t=t, frame_dur=np.full(len(t), 1.0), bitrate_notes=np.array(notes, dtype=object))


def test_bitrate_low_and_high_runs_against_the_median():
    from detectors.bitrate import Bitrate

    det = Bitrate()
    normal = {s: 100_000 + 5_000 * (s % 3) for s in range(30)}
    rows = {**normal, **{s: 20_000 for s in range(12, 15)}, **{s: 400_000 for s in range(20, 22)},
            25: 10_000}   # 3 s low, 2 s high, 1 s low (too short)
    state = det.initial_state()
    events = det.process(state, "video", _rates(rows)) + det.finish(state, 30.0)
    found = sorted((e.check, e.start_s, e.end_s) for e in events)
    assert found == [("high pid 256", 20.0, 22.0), ("low pid 256", 12.0, 15.0)]
    low = next(e for e in events if e.check.startswith("low"))
    assert low.details["carries"] == "video h264" and low.details["ratio"] == pytest.approx(20_000 / 105_000, abs=0.001)
    # nothing before min_history_s seconds of history
    state = det.initial_state()
    early = {**{s: 100_000 for s in range(8)}, **{s: 1_000 for s in range(3, 7)}}
    assert det.process(state, "video", _rates(early)) + det.finish(state, 8.0) == []


@pytest.mark.footage
def test_bitrate_finds_a_starved_video_pid_in_a_transport_stream(tmp_path):
    clean = tm.make_ts(tmp_path / "long.ts", seed=11, seconds=22.0, bitrate=1_000_000)
    tl = tm.timeline(clean)
    pkts = tm.packets(clean)
    start, end = tm.starve_pid(pkts, tl, 14.0, 4.0)
    damaged = tm.write_packets(tmp_path / "starved.ts", pkts)
    config = DetectorConfig.build(["bitrate"])
    assert analyze_source(str(clean), config).rows == []
    rows = analyze_source(str(damaged), config).rows
    assert [json.loads(r["details"])["check"] for r in rows] == [f"low pid {tl.pids['video']}"]
    assert abs(rows[0]["start_s"] - start) <= TOLERANCE_S and abs(rows[0]["end_s"] - end) <= TOLERANCE_S


@pytest.mark.footage
def test_a_transport_level_splice_shows_its_discontinuities_at_the_splice_only(tmp_path):
    """Two encodes joined at the transport level (720p then 1080p, each muxed on its own): their
    continuity counters and clocks do not follow on, which a TR 101 290 monitor reports at the join, and
    nowhere else."""
    from tests.test_format_change import ffprobe_switch, spliced_feed

    clip = spliced_feed(tmp_path)
    switch = ffprobe_switch(clip.path)
    rows = analyze_source(str(clip.path), TRANSPORT).rows
    assert {check_of(r) for r in rows} >= {"continuity"}
    assert all(abs(r["start_s"] - switch) <= TOLERANCE_S for r in rows), [(r["start_s"], check_of(r)) for r in rows]


@pytest.mark.footage
def test_an_srt_feed_is_received_and_its_transport_checked(clean_ts, tmp_path):
    """srt:// (received by the system ffmpeg, its payload piped through unchanged): the lost packets of
    the feed are found as they were sent, and the pictures are analysed."""
    from tests.conftest import free_port_pair

    tl = tm.timeline(clean_ts[2])
    pkts = tm.packets(clean_ts[2])
    tm.drop(pkts, tl, 3.0, 20)
    damaged = tm.write_packets(tmp_path / "srt_feed.ts", pkts)
    port = free_port_pair()
    sender = tm.send_srt(damaged, port, seconds=8.0)
    import time

    time.sleep(0.5)   # the listener is up
    result = analyze_source(f"srt://127.0.0.1:{port}", TRANSPORT, stream_id="srt-cam")
    sender.join(timeout=20)
    assert result.frames >= 150
    rows = [r for r in result.rows if check_of(r) == "continuity"]
    assert rows and all(abs(r["start_s"] - 3.0) <= TOLERANCE_S for r in rows)
    assert {json.loads(r["details"])["pid"] for r in rows} == tm.ffmpeg_continuity_pids(damaged)


@pytest.fixture
def http_folder(tmp_path):
    """A folder served over HTTP on 127.0.0.1 (an HLS origin)."""
    import http.server
    import threading

    from tests.conftest import free_port_pair

    folder = tmp_path / "origin"
    folder.mkdir()
    port = free_port_pair()
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(folder), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield folder, f"http://127.0.0.1:{port}"
    server.shutdown()


@pytest.mark.footage
def test_an_hls_stream_of_ts_segments_has_its_transport_checked(clean_ts, http_folder):
    """The segments' bytes are checked as fetched: packets lost inside a segment are found; an
    EXT-X-DISCONTINUITY between two encodes restarts the checks (no error at the join), while the same
    join without the tag is reported as the broken transport it is."""
    folder, origin = http_folder
    tl = tm.timeline(clean_ts[3])
    pkts = tm.packets(clean_ts[3])
    tm.drop(pkts, tl, 4.0, 15)
    tm.write_hls(folder, tm.split_at(pkts, tl), "lossy.m3u8")
    result = analyze_source(f"{origin}/lossy.m3u8", TRANSPORT, stream_id="hls")
    assert result.frames >= 190
    rows = [r for r in result.rows if check_of(r) == "continuity"]
    assert rows and all(abs(r["start_s"] - 4.0) <= TOLERANCE_S for r in rows)

    first, second = (tm.split_at(tm.packets(clean_ts[k]), tm.timeline(clean_ts[k])) for k in (0, 4))
    joined = first[:2] + second[:2]
    tm.write_hls(folder, joined, "tagged.m3u8", discontinuity_before={2})
    tm.write_hls(folder, joined, "untagged.m3u8")
    tagged = analyze_source(f"{origin}/tagged.m3u8", TRANSPORT, stream_id="tagged").rows
    assert tagged == [], [(r["start_s"], check_of(r)) for r in tagged]
    untagged = analyze_source(f"{origin}/untagged.m3u8", TRANSPORT, stream_id="untagged").rows
    assert {check_of(r) for r in untagged} & {"continuity", "pcr", "pts"}
