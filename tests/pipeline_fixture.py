"""The suite's own pipeline run, shared by the stream-job, report and notebook tests (one per session).

The demo clips (real footage with defects injected at known times), bad records, a shuffled stream and a
stream with a segment far too late go through the real converter, the local Kafka broker and the
streaming job on the session's SparkSession, into a Delta sink folder.
"""
from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable

from avwatch.convert.decode import MediaDecoder
from avwatch.convert.segments import Segmenter
from avwatch.local import analyze_source
from avwatch.samples import demo_clips
from detectors.config import DetectorConfig
from jobs.kafka_io import HEADER_KIND, HEADER_SCHEMA, create_topics, producer
from jobs.publish import PublishOptions, publish
from jobs.stream import build_parser, run
from schemas import AUDIO_SEGMENT, CONTROL, VIDEO_SEGMENT, encode
from schemas.records import META_NAME, META_VERSION


def segments_of(path: Path, stream_id: str) -> list:
    decoder = MediaDecoder(str(path))
    seg = Segmenter(stream_id, decoder.info)
    out = []
    for item in decoder.items():
        out += seg.add(item)
    return out + seg.finish()


def send_segments(bootstrap: str, topics: tuple[str, str], segments: list) -> None:
    prod = producer(bootstrap)
    for s in segments:
        kind = s.kind.split(":")[-1]
        record = CONTROL if s.kind.startswith("control") else (VIDEO_SEGMENT if kind == "video" else AUDIO_SEGMENT)
        prod.send(topics[0] if kind == "video" else topics[1], key=s.stream_id.encode(), value=encode(record, s.table),
                  headers=[(HEADER_SCHEMA, record.tag.encode()), (HEADER_KIND, kind.encode())])
    prod.flush()
    prod.close()


def stream_args(bootstrap, topics, sink, *extra):
    return build_parser().parse_args(["--bootstrap", bootstrap, "--video-topic", topics[0], "--audio-topic", topics[1],
                                      "--sink", str(sink), "--until-idle", *extra])


def table_rows(sink, name="anomaly_events") -> list[dict]:
    return DeltaTable(str(Path(sink) / name)).to_pyarrow_table().to_pylist()


@pytest.fixture(scope="session")
def clips(tmp_path_factory):
    return demo_clips(tmp_path_factory.mktemp("clips"))


@pytest.fixture(scope="session")
def local_events(clips):
    """The reference: every clip through the in-process runner."""
    config = DetectorConfig.build()
    return {c.stream_id: analyze_source(str(c.path), config, stream_id=c.stream_id).rows for c in clips}


@pytest.fixture(scope="session")
def mixed_run(spark, broker, clips, tmp_path_factory):
    """Publish the demo clips, bad records, a shuffled stream and a stream with a segment far too late,
    then run the job once over all of it, a few records per micro-batch."""
    topics = ("mixed.video", "mixed.audio")
    create_topics(broker.bootstrap, list(topics) + ["mixed.alerts"], partitions=2)
    stats = publish([str(c.path) for c in clips], [c.stream_id for c in clips],
                    PublishOptions(bootstrap=broker.bootstrap, video_topic=topics[0], audio_topic=topics[1]))
    assert all(s.error is None for s in stats)

    # bad records on both topics, between good ones
    prod = producer(broker.bootstrap)
    good = encode(CONTROL, [{"stream_id": "bad", "sequence": 0, "kind": "heartbeat", "media_time_s": 0.0,
                             "wall_time": 0, "source": "{}"}])
    future = CONTROL.schema.with_metadata({META_NAME: b"control", META_VERSION: b"7"})
    sink_buf = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink_buf, future) as w:
        w.write_table(pa.Table.from_pylist([{"stream_id": "bad", "sequence": 0, "kind": "eos", "media_time_s": 0.0,
                                              "wall_time": 0, "source": "{}"}], schema=future))
    bad = [(topics[0], b"bad", b"\x00\x01 these are foreign bytes"),
           (topics[1], b"bad", good[: len(good) // 2]),
           (topics[0], b"bad", sink_buf.getvalue().to_pybytes()),
           (topics[0], b"bad", os.urandom(13_000_000)),
           (topics[1], None, good)]
    for topic, key, value in bad:
        prod.send(topic, key=key, value=value)
    prod.flush()
    prod.close()

    # the studio feed again under another name, its segments shuffled within 3-segment blocks
    shuffled = [s for s in segments_of(clips[0].path, "shuffled")]
    rng = random.Random(5)
    blocks = [shuffled[i:i + 3] for i in range(0, len(shuffled), 3)]
    for b in blocks:
        rng.shuffle(b)
    send_segments(broker.bootstrap, topics, [s for b in blocks for s in b])

    # the field camera again, with video segment 2 held back: sent only after the job has moved past it
    late = segments_of(clips[1].path, "late")
    held = next(s for s in late if s.kind == "video" and s.sequence == 2)
    send_segments(broker.bootstrap, topics, [s for s in late if s is not held])

    sink = tmp_path_factory.mktemp("mixed")
    args = stream_args(broker.bootstrap, topics, sink, "--max-offsets-per-trigger", "60", "--lateness", "5",
                       "--alerts-topic", "mixed.alerts", "--features")
    summary = run(args, spark=spark)
    send_segments(broker.bootstrap, topics, [held])   # 8 s late: beyond the allowed 5 s
    again = run(args, spark=spark)                    # the same job resumes from its checkpoint
    return {"sink": sink, "summary": summary, "again": again, "topics": topics}


@pytest.fixture(scope="session")
def events_sink(mixed_run) -> Path:
    """The sink the report and notebook tests read: the pipeline run's."""
    return mixed_run["sink"]


@pytest.fixture(scope="session")
def injected(clips) -> set[tuple[str, str]]:
    """(stream_id, detector) pairs the sink must show: the defects injected into the demo clips."""
    return {(c.stream_id, i.detector) for c in clips for i in c.injected}


def stop_stream_job_once(spark, done, timeout_s: float) -> None:
    """Wait until done() (or timeout_s), give the batch in progress a second, then stop the stream query."""
    import time

    deadline = time.time() + timeout_s
    while time.time() < deadline and not done():
        time.sleep(0.2)
    time.sleep(1.0)
    for q in spark.streams.active:
        if q.name == "avwatch-stream":
            q.stop()


def run_live_job(spark, bootstrap: str, topics: tuple[str, str, str], sink, workers: list, stop) -> None:
    """The stream job on a 0.5 s trigger with an alerts topic, not stopping when idle: the worker threads
    (a listener on the alerts, a publisher that ends by stop_stream_job_once) start first; once the job
    returns, `stop` is set and they are joined (a list: workers started meanwhile are joined too)."""
    import threading

    threads = [threading.Thread(target=f, daemon=True) for f in workers]
    for t in threads:
        t.start()
    args = stream_args(bootstrap, topics[:2], sink, "--alerts-topic", topics[2], "--trigger", "0.5")
    args.until_idle = False
    try:
        run(args, spark=spark)
    finally:
        stop.set()
        for t in threads[::-1] + [t for t in workers if isinstance(t, threading.Thread)]:
            t.join(timeout=120)


def alert_budget_s() -> float:
    """The open-alert latency the benchmarks report (docs/benchmarks.json, p95 at 10 real-time streams):
    live tests bound an alert's arrival by the media seconds published meanwhile, not by a wall clock."""
    figures = json.loads((Path(__file__).resolve().parents[1] / "docs" / "benchmarks.json").read_text())
    return float(figures["alert_open_p95_s"])
