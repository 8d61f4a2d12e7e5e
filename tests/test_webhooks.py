"""Webhook alerts (jobs/webhooks.py through jobs/sinks.py BatchSink): a real HTTP receiver on 127.0.0.1 that
checks the HMAC signature as a receiver would; the batches go through the real sink (Spark, Delta, the
session broker's alerts topic)."""
from __future__ import annotations

import json
import threading
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pandas as pd
import pytest

from jobs.kafka_io import create_topics, read_all
from jobs.sinks import BatchSink
from jobs.spark_schemas import arrow_to_spark
from jobs.stream_stages import STAGE2_SCHEMA
from jobs.webhooks import (SIGNATURE_HEADER, WebhookTarget, event_state, payload, sign, target_id, verify)
from tests.conftest import free_port_pair, write_in_background

pytestmark = [pytest.mark.spark, pytest.mark.kafka]

T0 = datetime(2026, 11, 26, 8, 0, tzinfo=timezone.utc)
SECRET = "s3cret-for-tests"


class Receiver:
    """An HTTP receiver on 127.0.0.1 that can be stopped and started again on the same port; it keeps every
    POST (path, headers, raw body) and whether its signature verified with `secret`."""

    def __init__(self, secret: str | None = SECRET, port: int | None = None):
        self.secret = secret
        self.port = port or free_port_pair()
        self.received: list[dict] = []
        self.server: ThreadingHTTPServer | None = None

    def start(self) -> "Receiver":
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                ok = receiver.secret is None or verify(body, self.headers.get(SIGNATURE_HEADER), receiver.secret)
                receiver.received.append({"path": self.path, "headers": dict(self.headers), "body": body,
                                          "verified": ok})
                self.send_response(204 if ok else 401)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def deliveries(self) -> Counter:
        return Counter(r["headers"]["X-Avwatch-Delivery"] for r in self.received if r["verified"])


@pytest.fixture
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


def reports(spark, stream: str, states: list[tuple[float, str]]):
    """A stage-2 output DataFrame with one event report per (start, state), as the job's foreachBatch gets."""
    rows = []
    for s, state in states:
        rows.append({"row_type": "event", "event_id": f"{stream}-{s}", "stream_id": stream, "detector": "black",
                     "detector_version": "1", "start_s": s, "end_s": s + (1 if state == "closed" else 0.5),
                     "start_time": T0 + timedelta(seconds=s), "end_time": T0 + timedelta(seconds=s + 1),
                     "score": 1.0, "threshold": 0.5, "severity": "major", "state": state,
                     "details": json.dumps({"check": "picture", **({"ongoing": True} if state != "closed" else {})}),
                     "run_id": "test", "detected_at": datetime.now(timezone.utc)})
    pdf = pd.DataFrame([{c: r.get(c) for c in STAGE2_SCHEMA.names} for r in rows], columns=STAGE2_SCHEMA.names)
    return spark.createDataFrame(pdf, schema=arrow_to_spark(STAGE2_SCHEMA))


def test_signature_and_state_fallbacks():
    body = payload({"event_id": "e1", "stream_id": "cam", "detector": "black", "severity": "major",
                    "start_s": 1.0, "end_s": 2.0, "score": 1.0, "threshold": 0.5}, "closed")
    assert sign(body, "k") == "sha256=" + __import__("hmac").new(b"k", body, "sha256").hexdigest()
    assert verify(body, sign(body, "k"), "k") and not verify(body, sign(body, "other"), "k")
    assert not verify(body + b" ", sign(body, "k"), "k") and not verify(body, None, "k")
    doc = json.loads(body)
    assert doc["state"] == "closed" and doc["status"] == "resolved" and doc["delivery"] == "e1:closed"
    # no `state` field: details.ongoing says ongoing, otherwise the report is final
    assert event_state({"details": {"ongoing": True}}) == "ongoing"
    assert event_state({"details": json.dumps({"ongoing": True})}) == "ongoing"
    assert event_state({"details": {}}) == "closed"
    assert event_state({"state": "open", "details": {}}) == "open"
    slack = json.loads(payload({"event_id": "e1", "stream_id": "cam", "detector": "freeze", "severity": "minor",
                                "start_s": 3.0, "end_s": 3.5}, "open", "slack"))
    assert list(slack) == ["text"] and "OPEN: freeze on cam" in slack["text"]


def test_receiver_down_for_a_while_gets_every_state_once(spark, broker, receiver, tmp_path):
    topic = "webhooks.alerts"
    create_topics(broker.bootstrap, [topic], partitions=1)
    sink_dir = str(tmp_path / "sink")
    slack = Receiver(secret=None).start()
    targets = [WebhookTarget(receiver.url, secret=SECRET), WebhookTarget(slack.url, format="slack")]

    def new_sink() -> BatchSink:  # a fresh object: what a restarted driver builds
        return BatchSink(spark, sink_dir, "app-w", broker.bootstrap, topic, "run", alert_retry_s=60,
                         webhooks=targets)

    try:
        sink = new_sink()
        sink.write_batch(reports(spark, "a", [(1.0, "open"), (5.0, "open")]), 0)
        assert receiver.deliveries() == Counter({"a-1.0:open": 1, "a-5.0:open": 1})
        first = receiver.received[0]
        assert first["headers"]["Content-Type"] == "application/json"
        assert first["headers"]["X-Avwatch-Event-State"] == "open"
        assert json.loads(first["body"])["event"]["stream_id"] == "a"
        assert [json.loads(r["body"]) for r in slack.received][0].keys() == {"text"}

        # the receiver goes down; a batch closes one event and opens another; it waits, then delivers
        receiver.stop()
        second = reports(spark, "a", [(1.0, "closed"), (9.0, "open")])
        writer, errors = write_in_background(sink, second, 1)
        time.sleep(4)
        assert writer.is_alive() and not errors          # still retrying, the batch neither failed nor gave up
        receiver.start()
        writer.join(timeout=60)
        assert not writer.is_alive() and not errors, errors
        assert receiver.deliveries() == Counter({"a-1.0:open": 1, "a-5.0:open": 1, "a-1.0:closed": 1,
                                                 "a-9.0:open": 1})
        assert sink.webhooks.totals["retried"] >= 1 and sink.webhooks.totals["rejected"] == 0

        # replays (same driver, then a restarted one) send nothing; a state already delivered in an earlier
        # batch is not sent again, a new one is
        sink.write_batch(second, 1)
        restarted = new_sink()
        restarted.write_batch(second, 1)
        restarted.write_batch(reports(spark, "a", [(5.0, "open"), (5.0, "closed")]), 2)
        restarted.close()
        sink.close()
        assert receiver.deliveries() == Counter({"a-1.0:open": 1, "a-5.0:open": 1, "a-1.0:closed": 1,
                                                 "a-9.0:open": 1, "a-5.0:closed": 1})
        assert all(r["verified"] for r in receiver.received)
        assert Counter(json.loads(r["body"])["text"].split(":")[0] for r in slack.received) == \
            Counter({"[avwatch] OPEN": 3, "[avwatch] ended": 2})
        # the alerts topic got its messages before the webhooks, once per batch
        assert len(read_all(broker.bootstrap, [topic])) == 6
    finally:
        slack.stop()


def test_a_wrong_secret_is_detected_by_the_receiver(spark, receiver, tmp_path):
    sink = BatchSink(spark, str(tmp_path / "sink"), "app-s", "", None, "run", alert_retry_s=10,
                     webhooks=[WebhookTarget(receiver.url, secret="not-the-receivers-secret")])
    sink.write_batch(reports(spark, "b", [(2.0, "closed")]), 0)
    sink.close()
    assert len(receiver.received) == 1 and not receiver.received[0]["verified"]   # 401 from the receiver
    assert receiver.received[0]["headers"][SIGNATURE_HEADER].startswith("sha256=")
    assert sink.webhooks.totals == {"delivered": 0, "rejected": 1, "retried": 0}  # a final "no": not retried
    assert target_id(receiver.url) not in receiver.url
