"""The converter against the real local broker: what it publishes is exactly what the media holds."""
from __future__ import annotations

import http.server
import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict

import av
import numpy as np
import pytest

from jobs.kafka_io import HEADER_KIND, HEADER_SCHEMA, read_all
from jobs.publish import PublishOptions, publish
from schemas import decode
from tests.conftest import free_port_pair
from tests.media import ffmpeg, read_rgb_frames, real_clip, sine, write_clip

pytestmark = pytest.mark.kafka


def topics(name: str) -> tuple[str, str]:
    return f"pub.{name}.video", f"pub.{name}.audio"


def records_now(bootstrap: str, names: list[str]) -> list:
    """What the topics hold now; nothing while the publisher has not created them yet."""
    try:
        return read_all(bootstrap, names, timeout_s=2.0)
    except ValueError:  # "No partitions are currently assigned": the topic does not exist yet
        return []


def run_publish(broker, sources, ids, name, **kw):
    video, audio = topics(name)
    options = PublishOptions(bootstrap=broker.bootstrap, video_topic=video, audio_topic=audio, **kw)
    stats = publish([str(s) for s in sources], ids, options)
    return stats, read_all(broker.bootstrap, [video, audio])


def decoded(records):
    """(stream, kind) -> list of (sequence, record name, table, headers) in sequence order."""
    out = defaultdict(list)
    for r in records:
        record_type, table = decode(r.value)
        headers = dict(r.headers)
        kind = "video" if r.topic.endswith(".video") else "audio"
        assert r.key.decode() == table.column("stream_id")[0].as_py()
        assert headers[HEADER_SCHEMA] == record_type.tag.encode()
        out[(r.key.decode(), kind)].append((table.column("sequence")[0].as_py(), record_type.name, table, headers,
                                            r.timestamp))
    for value in out.values():
        value.sort(key=lambda x: x[0])
    return out


def probe(path) -> dict:
    """What PyAV reports for a file: video PTS (s, from the start), audio samples, stream starts."""
    with av.open(str(path)) as c:
        v = c.streams.video[0] if c.streams.video else None
        a = c.streams.audio[0] if c.streams.audio else None
        starts = [float(s.start_time * s.time_base) for s in (v, a) if s is not None and s.start_time is not None]
        origin = min(starts)
        out = {"video_start": float(v.start_time * v.time_base) - origin if v else None,
               "audio_start": float(a.start_time * a.time_base) - origin if a else None}
        out["pts"] = [float(f.pts * f.time_base) - origin for f in c.decode(video=0)] if v else []
    if a is not None:
        with av.open(str(path)) as c:
            out["audio_samples"] = sum(f.samples for f in c.decode(audio=0))
            out["audio_rate"] = c.streams.audio[0].codec_context.sample_rate
    return out


@pytest.fixture(scope="module")
def av_clip(tmp_path_factory):
    """A generated clip with audio starting 120 ms after the video (an offset the converter must keep)."""
    frames = read_rgb_frames(real_clip("bikes"), limit=75)
    return write_clip(tmp_path_factory.mktemp("pub") / "offset.mkv", frames, 25, audio=sine(2.8, amplitude=0.3),
                      audio_offset_s=0.12)


def test_generated_and_real_clips_arrive_exactly(broker, av_clip):
    real = real_clip("bigbuckbunny")  # 720p, 25 fps, 5.1 AAC
    stats, records = run_publish(broker, [av_clip, real], ["offset", "bbb"], "exact")
    assert all(s.error is None and s.failed == 0 for s in stats)
    got = decoded(records)
    for sid, path in (("offset", av_clip), ("bbb", real)):
        truth = probe(path)
        video = got[(sid, "video")]
        # sequence numbers contiguous from 0, the last record is the end of stream
        assert [s for s, *_ in video] == list(range(len(video)))
        assert video[-1][1] == "control" and video[-1][3][HEADER_KIND] == b"eos"
        frames = [t for _, name, table, _, _ in video if name == "video_segment"
                  for t, ctx in zip(table.column("pts_s").to_pylist(), table.column("context").to_pylist()) if not ctx]
        assert len(frames) == len(truth["pts"])
        assert np.allclose(frames, truth["pts"], atol=1e-6)
        audio = got[(sid, "audio")]
        assert [s for s, *_ in audio] == list(range(len(audio)))
        tables = [table for _, name, table, _, _ in audio if name == "audio_segment"]
        samples = sum(t.column("n_samples")[0].as_py() for t in tables)
        assert samples == pytest.approx(truth["audio_samples"] * 48000 / truth["audio_rate"], abs=2)
        assert tables[0].column("pts_s")[0].as_py() == pytest.approx(truth["audio_start"], abs=1e-4)
        first_frame = frames[0]
        assert tables[0].column("pts_s")[0].as_py() - first_frame == pytest.approx(
            truth["audio_start"] - truth["video_start"], abs=1e-4)
        # record timestamps are epoch + media start: one clock for audio and video
        vts = {s: ts for s, name, _, _, ts in video}
        seg0 = video[0][2]
        assert vts[0] == pytest.approx(video[1][4] - 1000 * (video[1][2].column("pts_s")[1].as_py()
                                                             - seg0.column("pts_s")[0].as_py()), abs=2)
    assert got[("offset", "audio")][0][2].column("pts_s")[0].as_py() == pytest.approx(0.12, abs=1e-3)


def test_two_sources_at_once_keep_their_streams_apart(broker, av_clip):
    other = real_clip("carphone_pristine")
    stats, records = run_publish(broker, [av_clip, other], ["cam-a", "cam-b"], "apart")
    got = decoded(records)
    assert set(got) == {("cam-a", "video"), ("cam-a", "audio"), ("cam-b", "video")}
    for (sid, _), items in got.items():
        assert all(t.column("stream_id")[0].as_py() == sid for _, _, t, _, _ in items)
    assert stats[1].note == "no audio stream: publishing video only"
    # per-stream keys put each stream in one partition: order within a stream is the partition's order
    parts = defaultdict(set)
    for r in records:
        parts[(r.key, r.topic)].add(r.partition)
    assert all(len(p) == 1 for p in parts.values())


def test_bytes_per_frame_are_small(broker):
    stats, records = run_publish(broker, [real_clip("bigbuckbunny")], ["size"], "size")
    video = [r for r in records if r.topic.endswith(".video")]
    per_frame = sum(len(r.value) for r in video) / stats[0].frames
    raw_1080p = 1920 * 1080 * 3 // 2   # one decoded 1080p frame, 8-bit 4:2:0
    assert per_frame < raw_1080p / 100  # the target: a hundredth of a raw 1080p frame


def test_corrupt_packets_are_counted_flagged_and_survived(broker, tmp_path):
    frames = read_rgb_frames(real_clip("bikes"), limit=100)
    clean = write_clip(tmp_path / "clean.mp4", frames, 25, gop=25)
    broken = tmp_path / "broken.mp4"
    # damage packets in the middle with FFmpeg's own noise bitstream filter (real bitstream corruption)
    subprocess.run([ffmpeg(), "-v", "error", "-i", str(clean), "-c", "copy", "-bsf:v",
                    "noise=amount=200:dropamount=0", "-ss", "0", str(broken)], check=True)
    stats, records = run_publish(broker, [broken], ["broken"], "corrupt")
    s = stats[0]
    assert s.error is None and s.frames > 50 and s.decode_errors > 0
    got = decoded(records)
    flags = [f for _, name, t, _, _ in got[("broken", "video")] if name == "video_segment"
             for f in t.column("decode_error").to_pylist()]
    assert any(flags)                       # frames the decoder reports damaged travel flagged
    assert sum(flags) <= s.decode_errors    # and are counted among the decode errors


def test_live_hls_is_published_while_it_is_still_being_written(broker, tmp_path):
    live = tmp_path / "hls"
    live.mkdir()
    # a live HLS stream written in real time by FFmpeg: 8 s of test pattern + tone, 1 s segments
    writer = subprocess.Popen([ffmpeg(), "-v", "error", "-re", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25",
                               "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "8",
                               "-c:v", "libx264", "-g", "25", "-c:a", "aac", "-f", "hls", "-hls_time", "1",
                               "-hls_list_size", "0", str(live / "live.m3u8")])
    port = free_port_pair()
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(live), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        deadline = time.monotonic() + 20
        while not (live / "live.m3u8").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        writing = {}
        result = {}
        worker = threading.Thread(target=lambda: result.update(zip(("stats", "records"), run_publish(
            broker, [f"http://127.0.0.1:{port}/live.m3u8"], ["hls"], "hls"))))
        worker.start()
        while worker.is_alive() and "first" not in writing:  # the first segment reaches Kafka ...
            if records_now(broker.bootstrap, list(topics("hls"))):
                writing["first"] = writer.poll() is None    # ... while FFmpeg is still writing the stream
            time.sleep(0.2)
        worker.join(timeout=60)
        writer.wait(timeout=30)
        stats, records = result["stats"], result["records"]
    finally:
        server.shutdown()
        if writer.poll() is None:
            writer.kill()
    assert stats[0].error is None
    got = decoded(records)
    video = [x for x in got[("hls", "video")] if x[1] == "video_segment"]
    assert sum(t.num_rows for _, _, t, _, _ in video) >= 100   # most of the 8 s arrived
    assert writing.get("first") is True  # published as the source was written, not after it was complete
    assert any(x[3][HEADER_KIND] == b"eos" for x in got[("hls", "video")])


def test_live_source_that_goes_silent_sends_heartbeats_then_fails_clearly(broker):
    """A UDP MPEG-TS feed that stops: the stream's clock keeps moving by heartbeats until the read
    timeout, then the run fails naming the source; everything that arrived was published."""
    port = free_port_pair()
    writer = subprocess.Popen([ffmpeg(), "-v", "error", "-re", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25",
                               "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "3",
                               "-c:v", "libx264", "-g", "25", "-c:a", "aac", "-f", "mpegts",
                               f"udp://127.0.0.1:{port}?pkt_size=1316"])
    try:
        stats, records = run_publish(broker, [f"udp://127.0.0.1:{port}"], ["udp"], "udp", heartbeat_s=0.5,
                                     read_timeout_s=2.0)
    finally:
        writer.kill()
        writer.wait()
    s = stats[0]
    assert s.error is not None and f"udp://127.0.0.1:{port}: no data for 2 s: the source stopped" in s.error
    assert s.frames > 0 and s.heartbeats >= 2
    got = decoded(records)[("udp", "video")]
    assert [x[0] for x in got] == list(range(len(got)))  # heartbeats take their place in the sequence
    beats = [x[2].to_pylist()[0] for x in got if x[1] == "control"]
    assert len(beats) == s.heartbeats and all(b["kind"] == "heartbeat" for b in beats)
    last_frame = max(max(x[2].column("pts_s").to_pylist()) for x in got if x[1] == "video_segment")
    times = [b["media_time_s"] for b in beats]
    assert times == sorted(set(times)) and times[0] > last_frame  # the clock moves on past the last frame


def test_broker_killed_and_restarted_mid_publish_loses_and_duplicates_nothing(tmp_path):
    from avwatch.stack import Stack

    stack = Stack.at(tmp_path / "state", free_port_pair())
    stack.up(echo=lambda *_: None)
    try:
        clip = write_clip(tmp_path / "long.mp4", read_rgb_frames(real_clip("bikes"), limit=100), 25,
                          audio=sine(4.0))
        video, audio = topics("restart")
        options = PublishOptions(bootstrap=stack.bootstrap, video_topic=video, audio_topic=audio, realtime=True,
                                 loop=True, max_loops=3, send_timeout_s=90, segment_s=0.5)
        result = {}
        worker = threading.Thread(target=lambda: result.update(stats=publish([str(clip)], ["restart"], options)))
        worker.start()
        before = []
        while len(before) < 4:                      # wait until the publish is under way ...
            assert worker.is_alive()
            before = records_now(stack.bootstrap, [video])
            time.sleep(0.1)
        pid = stack.pid()
        os.kill(pid, signal.SIGKILL)                # ... then the broker dies mid-publish
        while stack.pid() is not None:
            time.sleep(0.05)
        assert worker.is_alive()                    # the converter is still sending: its sends are cut off
        time.sleep(3.0)                             # the scenario: a 3 s outage (then the restart's own start-up)
        stack.up(echo=lambda *_: None)              # the broker comes back on the same data
        worker.join(timeout=120)
        assert not worker.is_alive()
        stats = result["stats"][0]
        assert stats.error is None and stats.failed == 0
        got = decoded(read_all(stack.bootstrap, [video, audio]))
        for kind in ("video", "audio"):
            seqs = [s for s, *_ in got[("restart", kind)]]
            unique = sorted(set(seqs))
            assert unique == list(range(len(unique)))  # contiguous: nothing lost
            assert len(unique) == stats.segments // 2 + (1 if kind == "video" else 0) or len(unique) > 10
        total = sum(len(set(s for s, *_ in got[("restart", k)])) for k in ("video", "audio"))
        assert total == stats.segments               # every segment sent is there, exactly once after dedup
        assert len(got[("restart", "video")]) > len(before)  # what was sent during the outage arrived
    finally:
        stack.down(purge=True, echo=lambda *_: None)


# -- bad input: clear messages, non-zero exits, nothing lost ------------------------------------------


def cli(*args, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli", "publish", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_missing_file(broker, tmp_path):
    r = cli(str(tmp_path / "nope.mp4"), "--bootstrap", broker.bootstrap)
    assert r.returncode == 1
    assert f"avwatch: {tmp_path / 'nope.mp4'}: no such file. Check the path" in r.stderr
    assert "Traceback" not in r.stderr


def test_not_media_and_good_file_together(broker, tmp_path, av_clip):
    junk = tmp_path / "notes.mp4"
    junk.write_text("this is not a video\n" * 100)
    video, audio = topics("mixed")
    r = cli(str(junk), str(av_clip), "--bootstrap", broker.bootstrap, "--video-topic", video, "--audio-topic", audio)
    assert r.returncode == 1
    assert f"avwatch: {junk} is not a media file FFmpeg can read" in r.stderr
    assert "offset: 70 frames" in r.stdout or "offset: 75 frames" in r.stdout  # the good source was published
    got = decoded(read_all(broker.bootstrap, [video, audio]))
    assert ("offset", "video") in got and ("notes", "video") not in got


def test_audio_only_source_publishes_audio_and_says_so(broker, tmp_path):
    wav = write_clip(tmp_path / "tone.mkv", None, audio=sine(2.0))
    video, audio = topics("audioonly")
    r = cli(str(wav), "--bootstrap", broker.bootstrap, "--video-topic", video, "--audio-topic", audio)
    assert r.returncode == 0, r.stderr
    assert "tone: note: no video stream: publishing audio only" in r.stderr
    got = decoded(read_all(broker.bootstrap, [video, audio]))
    assert set(got) == {("tone", "audio")}


def test_unreachable_url_retries_then_fails_clearly(broker):
    port = free_port_pair()  # nothing listens there
    r = cli(f"rtsp://127.0.0.1:{port}/live", "--bootstrap", broker.bootstrap, "--open-retries", "3")
    assert r.returncode == 1
    assert f"avwatch: rtsp://127.0.0.1:{port}/live: cannot connect after 3 attempts" in r.stderr


def test_unknown_option_and_bad_values(broker):
    r = cli("x.mp4", "--frobnicate")
    assert r.returncode == 2 and "unrecognized arguments: --frobnicate" in r.stderr
    r = cli("x.mp4", "--size", "wide")
    assert r.returncode == 2 and "--size must look like 320x180" in r.stderr
    r = cli("a.mp4", "b.mp4", "--stream-id", "one", "--bootstrap", broker.bootstrap)
    assert r.returncode == 2 and "--stream-id was given 1 time(s) for 2 source(s)" in r.stderr
    r = cli("a.mp4", "--segment", "20", "--bootstrap", broker.bootstrap)
    assert r.returncode == 2 and "--segment must be between 0.1 and 10 seconds, got 20" in r.stderr
    r = cli("a.mp4", "--heartbeat", "0", "--bootstrap", broker.bootstrap)
    assert r.returncode == 2 and "--heartbeat must be a positive number of seconds, got 0" in r.stderr
    r = cli("a.mp4", "--read-timeout", "-1", "--bootstrap", broker.bootstrap)
    assert r.returncode == 2 and "--read-timeout must be a positive number of seconds, got -1" in r.stderr


def test_unreachable_broker_is_named(tmp_path, av_clip):
    port = free_port_pair()
    r = cli(str(av_clip), "--bootstrap", f"127.0.0.1:{port}", timeout=120)
    assert r.returncode == 2
    assert f"no Kafka broker answers at 127.0.0.1:{port}" in r.stderr
