"""Prometheus endpoints (jobs/metrics.py): the stream job's driver and the converter, each run as its own
process the way an operator runs them (`python -m jobs.stream ... --metrics-port`, `avwatch publish ...
--metrics-port`), against the session broker; both endpoints are scraped while they run and parsed with
prometheus_client's own parser. The job keeps Spark's UI on, so Spark's PrometheusServlet metrics must come
through the same endpoint."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from jobs.kafka_io import create_topics, producer
from jobs.metrics import reason_class
from tests.conftest import free_port_pair

pytestmark = [pytest.mark.kafka]

ROOT = Path(__file__).resolve().parents[1]


def scrape(port: int) -> dict[str, list]:
    """family name -> its samples, parsed by prometheus_client (raises on any malformed line)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def value(families: dict, name: str, sample: str | None = None, **labels) -> float | None:
    for s in families.get(name, []):
        if (sample is None or s.name == sample) and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    return None


def wait_for(what: str, check, proc: subprocess.Popen, timeout_s: float):
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"{what}: the process exited with {proc.returncode}"
        try:
            last = check()
            if last:
                return last
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{what}: not seen within {timeout_s} s (last: {last})")


def test_reason_classes_are_a_small_closed_set():
    assert reason_class("late video segment 3: arrived after the stream moved on") == "late"
    assert reason_class("RecordError: not an Arrow IPC stream (foreign bytes)") == "undecodable"
    assert reason_class("RecordError: key b'x' does not match the record's stream id 'y'") == "key_mismatch"
    assert reason_class("oversize record: 13000000 bytes > the job's limit of 12582912") == "oversize"
    assert reason_class("analysis failed on video segment 4: KeyError: 'x'") == "analysis_failed"
    assert reason_class("KeyError: 'luma'") == "error_keyerror"
    assert reason_class("something else entirely") == "other"


def test_job_and_converter_endpoints_scrape_and_parse(broker, tmp_path):
    from avwatch.samples import studio_feed

    video, audio, alerts = "metrics.video", "metrics.audio", "metrics.alerts"
    create_topics(broker.bootstrap, [video, audio, alerts], partitions=1)
    clip = studio_feed(tmp_path)
    job_port, pub_port = free_port_pair(), free_port_pair()
    before_publishing = time.time()
    env = {**os.environ, "AVWATCH_SPARK_MASTER": "local[1]"}
    job = subprocess.Popen(
        [sys.executable, "-m", "jobs.stream", "--bootstrap", broker.bootstrap, "--sink", str(tmp_path / "sink"),
         "--video-topic", video, "--audio-topic", audio, "--alerts-topic", alerts, "--trigger", "0.5",
         "--metrics-port", str(job_port), "--timeout", "300", "--stall-timeout", "60"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    publisher = None
    try:
        wait_for("the job's endpoint", lambda: scrape(job_port), job, 180)
        # a foreign record: one dead letter, counted by reason class
        prod = producer(broker.bootstrap)
        prod.send(video, key=b"junk", value=b"not an avwatch record").get(timeout=30)
        prod.close()
        # its batch is the job's first: once it is counted, the query is warm and the clip is analysed as it
        # arrives (in several micro-batches, so the stream's position is reported before its end)
        wait_for("the dead letter on the job's endpoint",
                 lambda: value(scrape(job_port), "avwatch_dead_letters", "avwatch_dead_letters_total",
                               reason="undecodable") == 1, job, 180)
        publisher = subprocess.Popen(
            [sys.executable, "-m", "cli", "publish", str(clip.path), "--stream-id", "m1", "--realtime",
             "--bootstrap", broker.bootstrap, "--video-topic", video, "--audio-topic", audio, "--no-progress",
             "--metrics-port", str(pub_port)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True)
        pub = wait_for("frames on the converter's endpoint",
                       lambda: (f := scrape(pub_port)) and (value(f, "avwatch_publish_frames", stream_id="m1") or 0)
                       > 25 and f, publisher, 60)
        assert value(pub, "avwatch_publish_sent_bytes", "avwatch_publish_sent_bytes_total", stream_id="m1") > 0
        assert value(pub, "avwatch_publish_decode_errors", stream_id="m1") == 0
        assert value(pub, "avwatch_publish_source_up", stream_id="m1") == 1
        assert value(pub, "avwatch_publish_frames_per_second", stream_id="m1") > 5   # --realtime: ~25
        assert -2 < value(pub, "avwatch_publish_lag_seconds", stream_id="m1") < 5
        out, _ = publisher.communicate(timeout=120)
        assert publisher.returncode == 0, out

        def processed():  # the whole clip: its end of stream reached the job
            f = scrape(job_port)
            return f if value(f, "avwatch_stream_ended", stream_id="m1") == 1 else None

        fams = wait_for("the clip's end on the job's endpoint", processed, job, 180)
        assert value(fams, "avwatch_dead_letters", "avwatch_dead_letters_total", reason="undecodable") == 1
        # the position of the last batch before the end of stream (the clip is 10 s long)
        assert 3 < (value(fams, "avwatch_stream_media_position_seconds", stream_id="m1") or 0) <= 10.5
        seen = value(fams, "avwatch_stream_last_record_timestamp_seconds", stream_id="m1")
        assert before_publishing < seen <= time.time()   # a record of this run, seen by the job
        # the clip was published in real time from its start: its newest media is about now
        assert -5 < value(fams, "avwatch_stream_media_lag_seconds", stream_id="m1") < 120
        detectors = {s.labels["detector"] for s in fams["avwatch_events"] if s.name == "avwatch_events_total"}
        assert {"black", "freeze", "solid_color", "colorbars", "silence", "clipping"} <= detectors
        assert all(s.value == 0 for s in fams.get("avwatch_open_events", []))   # every defect ended with the clip
        assert value(fams, "avwatch_alerts_sent", "avwatch_alerts_sent_total") >= 6
        assert value(fams, "avwatch_batch_duration_seconds", "avwatch_batch_duration_seconds_count") >= 1
        assert value(fams, "avwatch_input_rows", "avwatch_input_rows_total") > 12
        # Spark's own metrics, from its PrometheusServlet, through the same endpoint
        spark_families = [n for n in fams if not n.startswith("avwatch_")]
        assert any("driver" in n and "BlockManager" in n for n in spark_families), spark_families[:20]
        assert any("executor" in n for n in spark_families), spark_families[:20]
        assert any("driver_spark_streaming" in n for n in spark_families), spark_families[:20]
    finally:
        for proc in (publisher, job):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def test_grafana_dashboard_uses_the_exported_names():
    """The dashboard in deploy/ imports into Grafana (its JSON model) and queries only metrics we export."""
    import re

    import jobs.metrics as m

    board = json.loads((ROOT / "deploy" / "grafana" / "avwatch.json").read_text())
    assert board["title"] and board["panels"] and board["schemaVersion"] >= 36
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    names = set(re.findall(r"\b(avwatch_[a-z_]+)", " ".join(exprs)))
    source = Path(m.__file__).read_text()
    for name in names:
        base = re.sub(r"_(total|bucket|count|sum)$", "", name)
        assert f'"{base}"' in source, f"{name} is not exported by jobs/metrics.py"
    assert {"avwatch_stream_media_lag_seconds", "avwatch_open_events", "avwatch_dead_letters_total",
            "avwatch_publish_frames_total"} <= names


def test_the_converter_exports_its_transport_error_counts_per_check():
    """What the transport analyser counted for an MPEG-TS source, as a counter per stream and check."""
    from prometheus_client import CollectorRegistry, generate_latest

    from jobs.metrics import PublishCollector
    from jobs.publish import SourceStats

    ts = SourceStats("cam-ts", "udp://127.0.0.1:5000")
    ts.transport = {"continuity": 3, "tei": 0, "sync_loss": 1}
    plain = SourceStats("cam-mp4", "clip.mp4")
    registry = CollectorRegistry()
    registry.register(PublishCollector([ts, plain]))
    families = {f.name: f.samples for f in text_string_to_metric_families(generate_latest(registry).decode())}
    assert value(families, "avwatch_publish_transport_errors", stream_id="cam-ts", check="continuity") == 3
    assert value(families, "avwatch_publish_transport_errors", stream_id="cam-ts", check="sync_loss") == 1
    assert value(families, "avwatch_publish_transport_errors", stream_id="cam-mp4") is None
