"""The streaming job through the real parts (Kafka broker, Spark, Delta): it agrees with the local
reference path, survives bad records and disorder, and is exactly-once across driver kills."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from deltalake import DeltaTable

from jobs.kafka_io import create_topics, read_all
from jobs.publish import PublishOptions, publish
from jobs.stream import run
from tests.pipeline_fixture import stream_args, table_rows

pytestmark = [pytest.mark.spark, pytest.mark.kafka]

FRAME = 0.04        # one video frame at 25 fps
AUDIO_TOL = 0.05    # 50 ms


def comparable(rows) -> list[tuple]:
    return sorted((r["stream_id"], r["detector"], json.loads(r["details"]).get("check", ""),
                   round(r["start_s"], 3), round(r["end_s"], 3)) for r in rows)


def assert_same_events(streamed: list[dict], reference: list[dict]):
    """Same detectors, same count, start/end within one frame (video) or 50 ms (audio)."""
    a, b = comparable(streamed), comparable(reference)
    assert [x[:3] for x in a] == [x[:3] for x in b], (a, b)
    for x, y in zip(a, b):
        assert abs(x[3] - y[3]) <= max(FRAME, AUDIO_TOL) and abs(x[4] - y[4]) <= max(FRAME, AUDIO_TOL), (x, y)





def test_streaming_events_equal_the_local_reference(mixed_run, clips, local_events):
    rows = table_rows(mixed_run["sink"])
    for clip in clips:
        got = [r for r in rows if r["stream_id"] == clip.stream_id]
        assert_same_events(got, local_events[clip.stream_id])


def test_every_injected_defect_is_in_the_table(mixed_run, clips):
    rows = table_rows(mixed_run["sink"])
    for clip in clips:
        for inj in clip.injected:
            hits = [r for r in rows if r["stream_id"] == clip.stream_id and r["detector"] == inj.detector
                    and r["start_s"] < inj.end_s + 1 and r["end_s"] > inj.start_s - 1]
            assert hits, (clip.stream_id, inj)
    detectors = {r["detector"] for r in rows}
    assert {"black", "freeze", "blockiness", "blur", "colorbars", "solid_color", "frame_drop", "silence",
            "clipping", "loudness"} <= detectors


def test_bad_records_go_to_the_dead_letter_table_with_reasons(mixed_run):
    dead = table_rows(mixed_run["sink"], "dead_letter")
    reasons = sorted(r["reason"] for r in dead if r["key"] in (b"bad", None))
    assert len(reasons) == 5
    text = "\n".join(reasons)
    assert "not an Arrow IPC stream" in text
    assert "truncated" in text
    assert "unsupported control schema version '7'" in text
    assert "oversize record: 13000000 bytes > the job's limit of 12582912" in text
    assert "record has no key" in text
    full = [r for r in dead if r["reason"].startswith("RecordError: not an Arrow")][0]
    assert full["value"] == b"\x00\x01 these are foreign bytes" and full["offset"] is not None


def test_out_of_order_segments_within_lateness_change_nothing(mixed_run, local_events):
    rows = [dict(r, stream_id="studio_feed") for r in table_rows(mixed_run["sink"]) if r["stream_id"] == "shuffled"]
    assert_same_events(rows, local_events["studio_feed"])


def test_a_segment_later_than_the_allowed_lateness_is_counted_not_lost(mixed_run):
    dead = [r for r in table_rows(mixed_run["sink"], "dead_letter") if r["key"] == b"late"]
    assert len(dead) == 1 and dead[0]["reason"].startswith("late video segment 2")
    events = [r for r in table_rows(mixed_run["sink"]) if r["stream_id"] == "late"]
    assert any(r["detector"] == "blur" for r in events)  # the rest of the stream was analysed


def test_frame_features_table_is_partitioned_and_complete(mixed_run, clips):
    table = DeltaTable(str(mixed_run["sink"] / "frame_features"))
    assert table.metadata().partition_columns == ["stream_id", "date"]
    df = table.to_pandas()
    counts = df.groupby("stream_id").size().to_dict()
    assert counts["field_camera"] == 195 and counts["studio_feed"] == 250


def test_alerts_topic_holds_every_event_but_suppressed_consequences(mixed_run, broker):
    rows = table_rows(mixed_run["sink"])
    suppressed = {r["event_id"] for r in rows if "suppressed_by" in json.loads(r["details"])}
    alerts = [json.loads(a.value) for a in read_all(broker.bootstrap, ["mixed.alerts"])]
    keys = {a["event_id"] for a in alerts}
    # the shuffled and late streams are re-sent recordings on the year-2000 clock: history, not alerted
    history = {r["event_id"] for r in rows if r["end_time"] < r["detected_at"] - timedelta(minutes=5)}
    assert history and {r["stream_id"] for r in rows if r["event_id"] in history} == {"shuffled", "late"}
    assert {r["event_id"] for r in rows} - suppressed - history <= keys
    assert not (suppressed | history) & keys
    closed = [(a["event_id"], a["end_s"]) for a in alerts if a["state"] == "closed"]
    assert len(closed) == len(set(closed))                            # each state change once
    assert {"event_id", "stream_id", "detector", "start_s", "end_s", "score", "details", "state"} <= set(alerts[0])


def test_edge_features_give_the_same_events(spark, broker, clips, local_events, tmp_path):
    """The converter's --edge-features mode (stage 1 at the edge, features on the wire) changes nothing."""
    from detectors.config import DetectorConfig

    topics = ("edge.video", "edge.audio")
    create_topics(broker.bootstrap, list(topics), partitions=2)
    chosen = [clips[0], clips[2]]  # the studio feed and the sync test: every kind of detector
    stats = publish([str(c.path) for c in chosen], [c.stream_id for c in chosen],
                    PublishOptions(bootstrap=broker.bootstrap, video_topic=topics[0], audio_topic=topics[1],
                                   edge_features=DetectorConfig.build()))
    video_bytes = sum(len(r.value) for r in read_all(broker.bootstrap, [topics[0]]))
    assert video_bytes / sum(s.frames for s in stats) < 5000  # features, not pixels, on the wire
    sink = tmp_path / "sink"
    run(stream_args(broker.bootstrap, topics, sink, "--alerts-topic", ""), spark=spark)
    rows = table_rows(sink)
    for clip in chosen:
        assert_same_events([r for r in rows if r["stream_id"] == clip.stream_id], local_events[clip.stream_id])


# -- exactly once across driver kills -----------------------------------------------------------------


def _job_process(bootstrap, topics, sink, checkpoint, alerts):
    cmd = [sys.executable, "-m", "jobs.stream", "--bootstrap", bootstrap, "--video-topic", topics[0],
           "--audio-topic", topics[1], "--sink", str(sink), "--checkpoint", str(checkpoint), "--until-idle",
           "--max-offsets-per-trigger", "6", "--alerts-topic", alerts, "--master", "local[2]"]
    log = open(Path(sink).parent / f"job-{time.monotonic_ns()}.log", "w")
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _wait_for(predicate, proc, timeout=240.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.05)
    raise TimeoutError("the job never reached the kill point")


def test_driver_killed_at_three_points_gives_the_uninterrupted_table(spark, broker, clips, tmp_path):
    topics = ("eo.video", "eo.audio")
    create_topics(broker.bootstrap, list(topics) + ["eo.alerts"], partitions=2)
    chosen = [clips[0], clips[1]]
    publish([str(c.path) for c in chosen], [c.stream_id for c in chosen],
            PublishOptions(bootstrap=broker.bootstrap, video_topic=topics[0], audio_topic=topics[1]))

    reference_sink = tmp_path / "reference"
    run(stream_args(broker.bootstrap, topics, reference_sink, "--alerts-topic", "", "--max-offsets-per-trigger",
                    "6"), spark=spark)
    reference = table_rows(reference_sink)
    assert reference

    sink, ck = tmp_path / "killed" / "sink", tmp_path / "killed" / "checkpoint"
    sink.parent.mkdir()
    commits = ck / "commits"
    offsets = ck / "offsets"
    delta_log = sink / "anomaly_events" / "_delta_log"

    def n(folder):
        return len([p for p in folder.glob("[0-9]*")]) if folder.exists() else 0

    kill_points = [
        lambda: n(commits) >= 1,                            # 1: right after the first batch committed
        lambda: n(offsets) > n(commits) and n(offsets) >= 4,  # 2: a batch planned, not yet committed
        lambda: n(delta_log) >= 3,                          # 3: just after an events MERGE committed
    ]
    kills = 0
    for point in kill_points:
        proc = _job_process(broker.bootstrap, topics, sink, ck, "eo.alerts")
        if _wait_for(point, proc):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            kills += 1
        else:
            proc.wait()
    assert kills == 3, "every kill point must be reached before the job finishes"
    proc = _job_process(broker.bootstrap, topics, sink, ck, "eo.alerts")
    assert proc.wait(timeout=600) == 0

    got = table_rows(sink)
    key = lambda r: (r["event_id"], r["stream_id"], r["detector"], r["start_s"], r["end_s"], r["score"],  # noqa
                     r["details"])
    assert sorted(map(key, got)) == sorted(map(key, reference))       # nothing lost, nothing twice
    assert len({r["event_id"] for r in got}) == len(got)
    alerts = {a.key.decode() for a in read_all(broker.bootstrap, ["eo.alerts"])}
    suppressed = {r["event_id"] for r in got if "suppressed_by" in json.loads(r["details"])}
    assert {r["event_id"] for r in got} - suppressed <= alerts       # every event alerted at least once


# -- a real standalone cluster --------------------------------------------------------------------------


def test_spark_submit_on_a_standalone_cluster(broker, clips, local_events, tmp_path):
    import pyspark

    from tests.conftest import free_port_pair

    spark_home = Path(pyspark.__file__).parent
    spark_class = spark_home / "bin" / "spark-class"
    port = free_port_pair()
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_HOME": str(spark_home),
           "SPARK_WORKER_DIR": str(tmp_path / "work"), "SPARK_LOG_DIR": str(tmp_path / "logs")}
    master = subprocess.Popen([str(spark_class), "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                               "--port", str(port), "--webui-port", str(free_port_pair())], env=env,
                              stdout=open(tmp_path / "master.log", "w"), stderr=subprocess.STDOUT,
                              start_new_session=True)
    worker = subprocess.Popen([str(spark_class), "org.apache.spark.deploy.worker.Worker", f"spark://127.0.0.1:{port}",
                               "--host", "127.0.0.1", "--cores", "2", "--memory", "3g",
                               "--webui-port", str(free_port_pair())], env=env,
                              stdout=open(tmp_path / "worker.log", "w"), stderr=subprocess.STDOUT,
                              start_new_session=True)
    try:
        topics = ("cluster.video", "cluster.audio")
        clip = clips[1]
        publish([str(clip.path)], [clip.stream_id],
                PublishOptions(bootstrap=broker.bootstrap, video_topic=topics[0], audio_topic=topics[1]))
        sink = tmp_path / "sink"
        root = Path(__file__).resolve().parents[1]
        result = subprocess.run([str(root / "spark-submit.sh"), "stream", "--master", f"spark://127.0.0.1:{port}",
                                 "--conf", "spark.ui.enabled=false", "--executor-memory", "1g", "--",
                                 "--bootstrap", broker.bootstrap, "--video-topic", topics[0], "--audio-topic",
                                 topics[1], "--sink", str(sink), "--until-idle", "--alerts-topic", ""],
                                capture_output=True, text=True, timeout=600, env=env)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "Asked to launch executor" in (tmp_path / "worker.log").read_text()  # the work ran on the worker
        assert "Registering app avwatch-stream" in (tmp_path / "master.log").read_text()
        assert_same_events(table_rows(sink), local_events[clip.stream_id])
    finally:
        for proc in (worker, master):
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
