"""The streaming job never stops and never goes blind (real Kafka broker, real Spark, real Delta):
hostile records while good streams flow, streams met mid-way, restarts with a changed configuration on
file:// locations, and state that returns to where it started when streams end or vanish."""
from __future__ import annotations

import json
import random
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from avwatch.local import analyze_source
from avwatch.samples import read_rgb_frames, real_clip, sine, write_clip
from detectors.config import DetectorConfig
from jobs.kafka_io import create_topics, producer
from jobs.publish import PublishOptions, publish
from jobs.stream import run
from jobs.stream_stages import stage1_rows
from schemas import AUDIO_SEGMENT, CONTROL, VIDEO_SEGMENT
from schemas import encode as encode_record
from schemas.records import META_NAME, META_VERSION
from tests.pipeline_fixture import segments_of, send_segments, stream_args, table_rows
from tests.test_stream_job import assert_same_events

pytestmark = [pytest.mark.spark, pytest.mark.kafka]

BLACK = (3.0, 4.6)


def make_clip(path: Path, seconds: float = 6.0, black=BLACK) -> Path:
    frames = read_rgb_frames(real_clip("bikes"), size=(160, 90))
    frames = (frames * (int(seconds * 25) // len(frames) + 1))[:int(seconds * 25)]
    for i in range(int(black[0] * 25), int(black[1] * 25)):
        frames[i] = np.zeros_like(frames[i])
    audio = sine(seconds, amplitude=0.1)
    audio[int(1.0 * 48000):int(2.5 * 48000)] = 0.0
    return write_clip(path, frames, 25, audio=audio)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return make_clip(tmp_path_factory.mktemp("rel") / "clip.mkv")


def record_of(segment):
    if segment.kind.startswith("control"):
        return CONTROL
    return VIDEO_SEGMENT if segment.kind == "video" else AUDIO_SEGMENT


def send_raw(bootstrap: str, records: list[tuple[str, bytes | None, bytes]]) -> list[tuple[str, int, int]]:
    """Send (topic, key, value) records; returns (topic, partition, offset) of each, in order."""
    prod = producer(bootstrap)
    futures = [prod.send(topic, key=key, value=value) for topic, key, value in records]
    prod.flush()
    meta = [f.get(timeout=30) for f in futures]
    prod.close()
    return [(m.topic, m.partition, m.offset) for m in meta]


def mutate(value: bytes, rng: random.Random, how: int) -> bytes:
    data = bytearray(value)
    if how == 0:
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif how == 1:
        data = data[:rng.randrange(len(data))]
    elif how == 2:
        data = bytearray(rng.randbytes(rng.randint(0, 3000)))
    elif how == 3:
        pos = rng.randrange(max(1, min(len(data), 600)))
        data[pos] = rng.randrange(256)
    return bytes(data)


def hostile_values(good: bytes, rng: random.Random) -> list[bytes]:
    """Records that are valid Arrow with the right schema but hostile values (the field failures)."""
    from schemas import decode, encode

    record_type, table = decode(good)
    out = []
    for column, value in (("source", "[]"), ("source", '{"live": 1}'), ("sequence", -5)):
        if column in table.column_names:
            idx = table.schema.get_field_index(column)
            arr = pa.array([value] * table.num_rows, table.schema.field(column).type)
            out.append(encode(record_type, table.set_column(idx, table.schema.field(column), arr)))
    future = CONTROL.schema.with_metadata({META_NAME: b"control", META_VERSION: b"9"})
    buf = pa.BufferOutputStream()
    with pa.ipc.new_stream(buf, future) as writer:
        writer.write_table(pa.Table.from_pylist([{"stream_id": "x", "sequence": 0, "kind": "eos", "media_time_s": 0.0,
                                                  "wall_time": 0, "source": "{}"}], schema=future))
    out.append(buf.getvalue().to_pybytes())
    return out


def test_a_thousand_hostile_records_do_not_stop_the_job_or_change_good_streams(spark, broker, clip, tmp_path):
    topics = ("fuzz.video", "fuzz.audio")
    kinds = {topics[0]: "video", topics[1]: "audio"}
    create_topics(broker.bootstrap, list(topics), partitions=2)
    config = DetectorConfig.build()
    good_ids = ["good-1", "good-2", "good-3"]
    good = {sid: segments_of(clip, sid) for sid in good_ids}
    rng = random.Random(7)
    pool = [(s, encode_record(record_of(s), s.table)) for s in segments_of(clip, "fz")]
    bad: list[tuple[str, bytes | None, bytes]] = []
    for i in range(1000):
        seg, value = rng.choice(pool)
        topic = topics[0] if seg.kind.endswith("video") else topics[1]
        key = f"fz-{i % 40}".encode()
        if i % 100 == 0:
            bad += [(topic, key, v) for v in hostile_values(value, rng)]
        # a fifth of them under a good stream's key: only records that fail entirely may carry one
        if i % 5 == 4:
            bad.append((topic, rng.choice(good_ids).encode(), mutate(value, rng, 2)))
        else:
            bad.append((topic, key, mutate(value, rng, i % 4)))
    # good streams and bad records interleaved on the same topics
    good_records = []
    for sid, segs in good.items():
        for s in segs:
            topic = topics[0] if s.kind.endswith("video") else topics[1]
            good_records.append((topic, sid.encode(), encode_record(record_of(s), s.table)))
    mixed = []
    step = max(1, len(bad) // len(good_records))
    for j, rec in enumerate(good_records):
        mixed.append(rec)
        mixed += bad[j * step:(j + 1) * step]
    mixed += bad[len(good_records) * step:]
    places = send_raw(broker.bootstrap, mixed)

    sink = tmp_path / "sink"
    summary = run(stream_args(broker.bootstrap, topics, sink, "--alerts-topic", "", "--max-offsets-per-trigger",
                              "400"), spark=spark)
    assert summary["dead_letters"] >= 800

    rows = table_rows(sink)
    for sid in good_ids:  # the good streams' events equal a clean run's
        reference = analyze_source(str(clip), config, stream_id=sid).rows
        assert reference
        assert_same_events([r for r in rows if r["stream_id"] == sid], reference)

    # every record stage 1 refuses is in dead_letter, with the same reason
    dead = {(r["topic"], r["partition"], r["offset"]): r for r in table_rows(sink, "dead_letter")}
    expected = stage1_rows([{"key": key, "value": value, "topic": topic, "partition": p, "offset": o,
                             "timestamp": None} for (topic, key, value), (_, p, o) in zip(mixed, places)],
                           config, kinds, 12 << 20)
    refused = [r for r in expected if r.get("reason")]
    assert len(refused) >= 800
    for r in refused:
        got = dead.get((r["topic"], r["partition"], r["offset"]))
        assert got is not None, r["reason"]
        assert got["reason"] == r["reason"] and len(got["value"] or b"") <= 4096
    reasons = " | ".join(r["reason"] for r in refused)
    for needle in ("source must be a JSON object, got list", "unsupported control schema version",
                   "not an Arrow IPC stream", "sequence must be between"):
        assert needle in reasons


# -- streams met mid-way ------------------------------------------------------------------------------


def test_a_job_started_at_latest_offsets_analyses_a_stream_already_running(spark, broker, tmp_path):
    topics = ("latest.video", "latest.audio")
    create_topics(broker.bootstrap, list(topics), partitions=1)
    clip = make_clip(tmp_path / "long.mkv", seconds=15.0, black=(10.0, 12.0))
    publisher = threading.Thread(target=publish, args=([str(clip)], ["live-cam"], PublishOptions(
        bootstrap=broker.bootstrap, video_topic=topics[0], audio_topic=topics[1], realtime=True)), daemon=True)
    publisher.start()
    time.sleep(3.0)  # the stream is well under way when the job starts
    args = stream_args(broker.bootstrap, topics, tmp_path / "sink", "--alerts-topic", "")
    args.until_idle = False
    args.starting_offsets = "latest"
    args.trigger = 0.5

    def stop_when_published():
        publisher.join(timeout=120)
        time.sleep(4.0)
        for q in spark.streams.active:
            if q.name == "avwatch-stream":
                q.stop()

    stopper = threading.Thread(target=stop_when_published, daemon=True)
    stopper.start()
    run(args, spark=spark)
    stopper.join(timeout=60)
    rows = table_rows(tmp_path / "sink")
    black = [r for r in rows if r["detector"] == "black"]
    assert len(black) == 1 and abs(black[0]["start_s"] - 10.0) < 0.1 and abs(black[0]["end_s"] - 12.0) < 0.1
    assert "joined mid-stream" in json.loads(black[0]["details"])["cold_start"]["reason"]


def test_streams_whose_beginning_was_deleted_or_dead_lettered_are_analysed(spark, broker, clip, tmp_path):
    from kafka import KafkaAdminClient, TopicPartition

    topics = ("begin.video", "begin.audio")
    create_topics(broker.bootstrap, list(topics), partitions=1)
    send_segments(broker.bootstrap, topics, segments_of(clip, "retained"))
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:  # retention deleted the first two segments of each topic
        admin.delete_records({TopicPartition(topics[0], 0): 2, TopicPartition(topics[1], 0): 2})
    finally:
        admin.close()
    segments = segments_of(clip, "first-bad")
    first = next(s for s in segments if s.kind == "video")
    send_raw(broker.bootstrap, [(topics[0], b"first-bad", b"\x00 not a segment")])
    send_segments(broker.bootstrap, topics, [s for s in segments if s is not first])

    sink = tmp_path / "sink"
    run(stream_args(broker.bootstrap, topics, sink, "--alerts-topic", ""), spark=spark)
    rows = table_rows(sink)
    for sid in ("retained", "first-bad"):
        black = [r for r in rows if r["stream_id"] == sid and r["detector"] == "black"]
        assert len(black) == 1 and abs(black[0]["start_s"] - BLACK[0]) < 0.1, (sid, rows)
        assert "cold_start" in json.loads(black[0]["details"])
    assert [r["reason"][:35] for r in table_rows(sink, "dead_letter")] == ["RecordError: not an Arrow IPC strea"]


# -- restarts ---------------------------------------------------------------------------------------------


def test_a_restart_with_other_detectors_on_file_uris_keeps_streams_running(spark, broker, clip, tmp_path):
    topics = ("restart.video", "restart.audio")
    create_topics(broker.bootstrap, list(topics), partitions=1)
    segments = segments_of(clip, "cam")
    half = len(segments) // 2
    send_segments(broker.bootstrap, topics, segments[:half])
    sink, checkpoint = f"file://{tmp_path}/sink", f"file://{tmp_path}/ck"
    base = ["--alerts-topic", "", "--checkpoint", checkpoint]
    run(stream_args(broker.bootstrap, topics, sink, *base, "--detectors", "silence,freeze"), spark=spark)
    app_file = tmp_path / "ck" / "avwatch_app_id"
    app_id = app_file.read_text()
    assert app_id.startswith("avwatch-stream-")
    send_segments(broker.bootstrap, topics, segments[half:])
    run(stream_args(broker.bootstrap, topics, sink, *base, "--detectors", "black,silence"), spark=spark)
    assert app_file.read_text() == app_id                       # the same checkpoint, the same app id
    rows = table_rows(tmp_path / "sink")
    black = [r for r in rows if r["detector"] == "black"]
    assert len(black) == 1 and "added to the job" in json.loads(black[0]["details"])["cold_start"]["reason"]
    assert [r["detector"] for r in rows if r["detector"] == "silence"] == ["silence"]
    assert not (tmp_path / "file:").exists() and not list(Path(".").glob("file:*"))
    from avwatch.sink import read_events

    assert set(read_events(sink)["event_id"]) == {r["event_id"] for r in rows}  # `avwatch events` on the URI


def test_a_republished_stream_id_keeps_both_publications_events(spark, broker, clip, tmp_path):
    topics = ("repub.video", "repub.audio")
    create_topics(broker.bootstrap, list(topics), partitions=1)
    options = PublishOptions(bootstrap=broker.bootstrap, video_topic=topics[0], audio_topic=topics[1])
    publish([str(clip)], ["studio"], options)
    publish([str(clip)], ["studio"], options)     # the converter restarted: same stream id, new publication
    run(stream_args(broker.bootstrap, topics, tmp_path / "sink", "--alerts-topic", ""), spark=spark)
    black = [r for r in table_rows(tmp_path / "sink") if r["detector"] == "black"]
    assert len(black) == 2 and len({r["event_id"] for r in black}) == 2


# -- state that ends ----------------------------------------------------------------------------------------


def test_state_returns_to_where_it_started_when_streams_end_or_vanish(spark, broker, clip, tmp_path):
    topics = ("ttl.video", "ttl.audio")
    create_topics(broker.bootstrap, list(topics), partitions=1)
    prod = producer(broker.bootstrap)
    stop = threading.Event()
    source = json.dumps({"live": True, "has_video": True, "has_audio": False, "publish_id": "keeper-1",
                         "epoch": datetime.now(timezone.utc).isoformat()})

    def keeper():  # a live stream whose source hangs: the converter's heartbeats keep batches running
        seq = 0
        while not stop.is_set():
            value = encode_record(CONTROL, [{"stream_id": "keeper", "sequence": seq, "kind": "heartbeat",
                                             "media_time_s": seq * 0.5, "wall_time": datetime.now(timezone.utc),
                                             "source": source}])
            prod.send(topics[0], key=b"keeper", value=value)
            prod.flush()
            seq += 1
            stop.wait(0.5)

    # decoded before the job starts, so that the four streams are sent within a second or so and are all in
    # the state together (decoding them while sending let the first file's state end before the last came)
    files = [segments_of(clip, f"file-{i}") for i in range(3)]   # files that end
    vanishing = [s for s in segments_of(clip, "vanishing") if not s.kind.startswith("control")]

    def streams():
        time.sleep(6.0)
        for segments in files:
            send_segments(broker.bootstrap, topics, segments)
        send_segments(broker.bootstrap, topics, vanishing)  # a live stream that stops without an end

    def stop_when_state_is_back():  # the job stops once state came back to the keeper alone (40 s at most)
        peak, settled, seen = 0, 0, None
        while not stop.is_set():
            for q in [q for q in spark.streams.active if q.name == "avwatch-stream"]:
                progress = q.lastProgress or {}
                if progress.get("batchId") == seen:
                    continue
                seen = progress.get("batchId")
                rows = sum(op.get("numRowsTotal", 0) for op in progress.get("stateOperators") or [])
                peak = max(peak, rows)
                settled = settled + 1 if peak >= 5 and rows == 1 else 0
                if settled >= 2:  # two batches in a row: the job's own listener has seen it too
                    q.stop()
                    return
            stop.wait(0.5)

    threading.Thread(target=keeper, daemon=True).start()
    threading.Thread(target=streams, daemon=True).start()
    threading.Thread(target=stop_when_state_is_back, daemon=True).start()
    # an ended file's state is kept as long as a vanished stream's (6 s), so the four overlap in the state even
    # when sending them takes a few seconds on a loaded machine (with 3 s the first file's state had ended before
    # the vanishing stream came, once in a fresh-clone run); the vanished stream's 6 s gates the end either way
    args = stream_args(broker.bootstrap, topics, tmp_path / "sink", "--alerts-topic", "", "--ended-state-ttl", "6",
                       "--idle-state-ttl", "6", "--stall-timeout", "1")
    args.until_idle = False
    args.trigger = 0.5
    args.timeout = 40.0
    try:
        summary = run(args, spark=spark)
    finally:
        stop.set()
        prod.close()
    assert summary["state_rows_max"] >= 5            # keeper + 3 files + the vanishing stream at the peak
    assert summary["state_rows"] == 1                # only the keeper is left
    streams_seen = {r["stream_id"] for r in table_rows(tmp_path / "sink") if r["detector"] == "black"}
    assert {"file-0", "file-1", "file-2", "vanishing"} <= streams_seen
