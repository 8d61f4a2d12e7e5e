"""Alerts exactly once per event state (jobs/sinks.py BatchSink): a replayed batch sends nothing, a broker
outage shorter than --alert-retry-s loses no alert and stops nothing, a longer one fails the batch, whose
replay then sends its alerts once. A dedicated broker, so stopping it disturbs no other test."""
from __future__ import annotations

import json
import threading
import time
from collections import Counter
from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest
from deltalake import DeltaTable

from jobs.kafka_io import create_topics, read_all
from jobs.sinks import AlertsNotDelivered, BatchSink
from jobs.spark_schemas import arrow_to_spark
from jobs.stream_stages import STAGE2_SCHEMA
from tests.conftest import write_in_background

pytestmark = [pytest.mark.spark, pytest.mark.kafka]

T0 = datetime(2026, 11, 26, 8, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def own_broker():
    """A broker of this module's own: the tests stop and restart it."""
    from tests.conftest import running_broker

    yield from running_broker("avwatch-test-alerts-broker-")


def batch(spark, stream: str, starts: list[float]):
    """A stage-2 output DataFrame holding one event per start time (as the stream job's foreachBatch gets)."""
    rows = []
    for s in starts:
        rows.append({"row_type": "event", "event_id": f"{stream}-{s}", "stream_id": stream, "detector": "black",
                     "detector_version": "1", "start_s": s, "end_s": s + 1, "start_time": T0 + timedelta(seconds=s),
                     "end_time": T0 + timedelta(seconds=s + 1), "score": 1.0, "threshold": 0.5, "severity": "major",
                     "details": json.dumps({"check": "picture"}), "run_id": "test",
                     "detected_at": datetime.now(timezone.utc)})
    pdf = pd.DataFrame([{c: r.get(c) for c in STAGE2_SCHEMA.names} for r in rows], columns=STAGE2_SCHEMA.names)
    return spark.createDataFrame(pdf, schema=arrow_to_spark(STAGE2_SCHEMA))


def alert_keys(bootstrap: str, topic: str) -> Counter:
    return Counter(a.key.decode() for a in read_all(bootstrap, [topic]))


def test_replays_send_nothing_and_an_outage_within_the_budget_loses_no_alert(spark, own_broker, tmp_path):
    topic = "alerts.once"
    create_topics(own_broker.bootstrap, [topic], partitions=2)
    sink_dir = tmp_path / "sink"

    def new_sink(retry_s: float) -> BatchSink:  # a fresh object: what a restarted driver builds
        return BatchSink(spark, str(sink_dir), "app-1", own_broker.bootstrap, topic, "run", alert_retry_s=retry_s)

    first = batch(spark, "a", [1.0, 2.0, 3.0])
    sink = new_sink(60)
    sink.write_batch(first, 0)
    assert alert_keys(own_broker.bootstrap, topic) == Counter({"a-1.0": 1, "a-2.0": 1, "a-3.0": 1})
    events_version = DeltaTable(str(sink_dir / "anomaly_events")).version()

    sink.write_batch(first, 0)                 # a replayed batch, same driver
    restarted = new_sink(60)
    restarted.write_batch(first, 0)            # ... and after a restart
    restarted.close()
    assert alert_keys(own_broker.bootstrap, topic) == Counter({"a-1.0": 1, "a-2.0": 1, "a-3.0": 1})
    assert DeltaTable(str(sink_dir / "anomaly_events")).version() == events_version
    assert sink.alerts_sent_upto() == 0 and sink.totals["alerts"] == 3

    # an outage shorter than the budget: the batch waits, retries, and delivers every alert once
    own_broker.down(echo=lambda *_: None)
    second = batch(spark, "a", [10.0, 11.0])
    writer, errors = write_in_background(sink, second, 1)
    time.sleep(8)
    assert writer.is_alive() and not errors    # still retrying: the batch neither failed nor gave up
    own_broker.up(echo=lambda *_: None)
    writer.join(timeout=120)
    assert not writer.is_alive() and not errors, errors
    keys = alert_keys(own_broker.bootstrap, topic)
    assert keys == Counter({"a-1.0": 1, "a-2.0": 1, "a-3.0": 1, "a-10.0": 1, "a-11.0": 1})
    assert sink.alerts_sent_upto() == 1
    sink.close()

    # an outage longer than the budget fails the batch (events committed, alerts not recorded) ...
    own_broker.down(echo=lambda *_: None)
    third = batch(spark, "a", [20.0])
    short = new_sink(3)
    with pytest.raises(AlertsNotDelivered, match=r"of batch 2 not delivered .*\(--alert-retry-s\)"):
        short.write_batch(third, 2)
    short.close()
    assert DeltaTable(str(sink_dir / "anomaly_events")).transaction_version("app-1-events") == 2
    assert short.alerts_sent_upto() == 1
    own_broker.up(echo=lambda *_: None)
    # ... and its replay after the restart sends them, once
    replay = new_sink(60)
    replay.write_batch(third, 2)
    replay.write_batch(third, 2)
    replay.close()
    time.sleep(1)
    keys = alert_keys(own_broker.bootstrap, topic)
    assert keys == Counter({"a-1.0": 1, "a-2.0": 1, "a-3.0": 1, "a-10.0": 1, "a-11.0": 1, "a-20.0": 1})
    assert replay.alerts_sent_upto() == 2


def test_the_job_rides_out_a_broker_outage_while_events_flow(spark, own_broker, tmp_path):
    """The whole job on a dedicated broker: the broker is stopped while a backlog of segments with events
    is being processed and restarted 10 s later; the job keeps running, and every event in the table has
    exactly one alert."""
    from avwatch.samples import studio_feed
    from jobs.publish import PublishOptions, publish
    from jobs.stream import build_parser, run

    topics = ("outage.video", "outage.audio")
    alerts = "outage.alerts"
    create_topics(own_broker.bootstrap, list(topics) + [alerts], partitions=2)
    clip = studio_feed(tmp_path)
    publish([str(clip.path)], ["feed"], PublishOptions(bootstrap=own_broker.bootstrap, video_topic=topics[0],
                                                       audio_topic=topics[1]))
    sink = tmp_path / "sink"
    args = build_parser().parse_args(["--bootstrap", own_broker.bootstrap, "--video-topic", topics[0],
                                      "--audio-topic", topics[1], "--sink", str(sink), "--alerts-topic", alerts,
                                      "--max-offsets-per-trigger", "3", "--trigger", "0.5", "--alert-retry-s", "120",
                                      "--timeout", "400"])
    outcome: dict = {}

    def job():
        try:
            outcome["summary"] = run(args, spark=spark)
        except BaseException as exc:  # noqa: BLE001 - reported below
            outcome["error"] = exc

    thread = threading.Thread(target=job)
    thread.start()
    try:
        deadline = time.monotonic() + 240
        while not (sink / "_alerts_sent" / "_delta_log").exists() or \
                DeltaTable(str(sink / "_alerts_sent")).version() < 1:   # the first batch's alerts were sent
            assert thread.is_alive(), outcome
            assert time.monotonic() < deadline, "no alert within 240 s"
            time.sleep(0.2)
        own_broker.down(echo=lambda *_: None)                           # ... while the backlog is processed
        time.sleep(10)
        own_broker.up(echo=lambda *_: None)
        total = None
        while True:  # until the whole clip is processed: its five video defects and audio ones in the table
            rows = DeltaTable(str(sink / "anomaly_events")).to_pyarrow_table().to_pylist()
            keys = alert_keys(own_broker.bootstrap, alerts)
            if {"black", "freeze", "solid_color", "colorbars", "silence", "clipping"} <= {r["detector"] for r in rows} \
                    and {r["event_id"] for r in rows} <= set(keys):
                if total == len(rows):
                    break
                total = len(rows)
            assert thread.is_alive(), outcome                            # the job never stopped
            assert time.monotonic() < deadline + 240, "the job did not catch up after the outage"
            time.sleep(3)
        assert thread.is_alive() and "error" not in outcome
    finally:
        for query in spark.streams.active:
            if query.name == "avwatch-stream":
                query.stop()
        thread.join(timeout=120)
    assert "error" not in outcome, outcome
    sent = [json.loads(a.value) for a in read_all(own_broker.bootstrap, [alerts])]
    rows = DeltaTable(str(sink / "anomaly_events")).to_pyarrow_table().to_pylist()
    alerted = {r["event_id"] for r in rows if "suppressed_by" not in json.loads(r["details"])}
    assert {a["event_id"] for a in sent} == alerted
    changes = Counter((a["event_id"], a["state"], a["end_s"]) for a in sent)
    assert all(n == 1 for n in changes.values()), changes              # each state change once, none twice
    assert {(a["event_id"], a["end_s"]) for a in sent if a["state"] == "closed"} == \
        {(r["event_id"], r["end_s"]) for r in rows if r["event_id"] in alerted}  # every alarm cleared
