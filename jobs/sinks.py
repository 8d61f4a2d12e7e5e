"""foreachBatch sink of the streaming job: the alerts once per batch, then the Delta tables exactly once.

Per micro-batch, in this order:
1. alerts first, so that an alarm does not wait for the table commits: unless `<sink>/_alerts_sent`
   records this batch for this app id, one JSON message per event state change (open, ongoing updates,
   closed; `state` in the message) on the alerts topic (key = event_id), except those stage 2 marked not
   to alert (suppressed by a root cause, or replayed history), flushed, retried with backoff for up to
   --alert-retry-s (the producer is idempotent, so its own retries never duplicate), then the batch is
   recorded there as an app transaction (an empty commit; the job remembers its last record, so the
   ledger is read once per run). A replayed batch sends nothing again; an outage longer than the budget
   fails the batch (the query stops with the error, a restart replays it and sends its alerts). Narrow
   window: a crash after the alerts were acknowledged and before the record is committed sends that
   batch's alerts once more at the replay (same keys: consumers can deduplicate by event_id). An alert
   can reach a consumer a moment before its row is in anomaly_events;
2. anomaly_events: through avwatch.events_table (the one writer of that table): MERGE on event_id (an
   event reported twice, e.g. a stall first while ongoing, then final, updates its row), recording
   (app id, batch id) in the same commit so a replayed batch is a no-op; the table keeps each event's
   latest state (open -> ongoing -> closed); lost commit races (a re-analysis replacing a range) are
   retried with backoff. The events are a handful of rows already on the driver, so the driver merges
   them with delta-rs (~35 ms of CPU; a Spark MERGE costs ~3 CPU-s);
3. dead_letter and frame_features: appends with txnAppId/txnVersion; then webhooks (their own ledger).
Events are few per batch, so they are gathered on the driver, deduplicated (last report of an event
wins) and sent from there; frame features stay distributed.
"""
from __future__ import annotations

import json
import logging
import time
from datetime import datetime, timezone

import pyarrow as pa

from avwatch.errors import AvwatchError
from avwatch.events_table import dedupe_events, merge_batch
from avwatch.sink import DEAD_LETTER as DEAD_LETTER_TABLE
from avwatch.sink import EVENTS, FRAME_FEATURES as FEATURES_TABLE
from detectors.events import STATE_RANK
from detectors.records import FRAME_FEATURE_COLUMNS, FRAME_FEATURES
from schemas.records import ANOMALY_EVENT, DEAD_LETTER

log = logging.getLogger("avwatch.sink")

ALERTS_SENT = "_alerts_sent"     # Delta table whose app transactions record the batches whose alerts were sent
ALERTS_SENT_SCHEMA = pa.schema([("batch_id", pa.int64())])  # never holds rows: only app transactions
DEFAULT_ALERT_RETRY_S = 300.0    # how long a batch's alerts are retried before the batch fails
_UNKNOWN = object()              # the alerts ledger has not been read yet
__all__ = ["BatchSink", "alert_json", "dedupe_events", "explode_features", "frame_feature_rows"]


class AlertsNotDelivered(AvwatchError):
    """A batch's alerts could not be delivered within the retry budget: the batch fails."""


def alert_json(row: dict) -> bytes:
    """The alerts-topic message of one event: every field but the evidence image, times in ISO 8601."""
    out = {}
    for key, value in row.items():
        if key == "evidence":
            continue
        out[key] = value.isoformat() if hasattr(value, "isoformat") else value
    out["details"] = json.loads(row["details"]) if row.get("details") else {}
    return json.dumps(out, ensure_ascii=False, sort_keys=True).encode("utf-8")


def alert_reports(reports: list[dict]) -> list[dict]:
    """The alerts of one batch's event reports: each state change of each event once (open, every
    update, closed), in media-time order, leaving out the reports stage 2 marked not to alert (a
    consequence of a root cause that is alerted, or an event older than the replay limit)."""
    seen, out = set(), []
    for row in sorted(reports, key=lambda r: (r["stream_id"], r["start_s"], STATE_RANK.get(r.get("state"), 2),
                                              r["end_s"])):
        key = (row["event_id"], row.get("state"), row["end_s"])
        if row.get("alert") is False or key in seen:
            continue
        seen.add(key)
        out.append({k: row[k] for k in ANOMALY_EVENT.schema.names})
    return out


def frame_feature_rows(feats, stream_id: str, epoch, run_id: str) -> dict[str, list]:
    """One stream segment's stage-1 video Features -> FRAME_FEATURES columns (lists of values)."""
    from datetime import timedelta

    from detectors.events import parse_epoch

    base = parse_epoch(epoch)
    n = len(feats)
    times = [base + timedelta(seconds=float(t)) for t in feats["t"]]
    out = {"stream_id": [stream_id] * n, "date": [t.strftime("%Y-%m-%d") for t in times],
           "t": feats["t"].tolist(), "event_time": times, "frame_index": feats["frame_index"].tolist(),
           "run_id": [run_id] * n}
    for name in FRAME_FEATURE_COLUMNS:
        values = feats.get(name)
        out[name] = [None] * n if values is None else list(values) if values.dtype == object else values.tolist()
    return out


def explode_features(batches, run_id: str):
    """mapInArrow body: frame-feature blobs (one per video segment) -> one FRAME_FEATURES row per frame."""
    from jobs.spark_schemas import spark_arrow_schema
    from detectors.wire import from_ipc

    target = spark_arrow_schema(FRAME_FEATURES.schema)
    for batch in batches:
        columns = {name: [] for name in FRAME_FEATURES.schema.names}
        for row in batch.to_pylist():
            part = frame_feature_rows(from_ipc(row["features"]), row["stream_id"], row["epoch"], run_id)
            for name, values in part.items():
                columns[name] += values
        yield pa.RecordBatch.from_pydict(columns, schema=FRAME_FEATURES.schema).cast(target)


class _PhaseClock:
    """Milliseconds spent in each named phase since the previous mark."""

    def __init__(self):
        self.parts: dict[str, float] = {}
        self._t = time.perf_counter()

    def mark(self, phase: str) -> None:
        now = time.perf_counter()
        self.parts[phase] = round(self.parts.get(phase, 0.0) + (now - self._t) * 1000, 1)
        self._t = now


class BatchSink:
    """Writes one micro-batch of stage-2 output rows to the alerts topic and the Delta tables."""

    def __init__(self, spark, sink: str, app_id: str, bootstrap: str, alerts_topic: str | None, run_id: str,
                 keep_features: bool = False, alert_retry_s: float = DEFAULT_ALERT_RETRY_S,
                 client_config: dict | None = None, webhooks: list | None = None, metrics=None):
        self.spark = spark
        self.sink = str(sink).rstrip("/")
        self.app_id = app_id
        self.bootstrap = bootstrap
        self.client_config = client_config  # the --kafka-config properties, for the alerts producer
        self.alerts_topic = alerts_topic or None
        self.run_id = run_id
        self.keep_features = keep_features
        if not alert_retry_s > 0:
            raise ValueError(f"alert_retry_s must be > 0, not {alert_retry_s!r}")
        self.alert_retry_s = float(alert_retry_s)
        self._alerts_table_ready = False
        self._alerts_done = _UNKNOWN
        self.totals = {"events": 0, "dead_letters": 0, "feature_segments": 0, "alerts": 0}
        self._producer = None
        self.metrics = metrics  # jobs.metrics.StreamMetrics (--metrics-port) or None
        self.webhooks = None    # jobs.webhooks.WebhookSender: --alert-webhook targets, after the alerts topic
        if webhooks:
            from jobs.webhooks import WebhookSender

            self.webhooks = WebhookSender(webhooks, self.sink, app_id, retry_s=self.alert_retry_s,
                                          on_delivery=metrics.on_webhook if metrics is not None else None)
        from avwatch.stream_status import StatusTable

        self.status = StatusTable(self.sink)  # <sink>/stream_status, for `avwatch serve`

    def path(self, name: str) -> str:
        return f"{self.sink}/{name}"

    def write_batch(self, df, batch_id: int) -> None:
        """One Spark job brings the batch's events and dead letters (few) to the driver; frame features,
        when kept, are written by a second job over the cached batch. Every Spark job a micro-batch runs
        is ~0.1-0.3 s of fixed cost, which dominates small batches (docs/performance.md)."""
        from pyspark.sql import functions as F

        keep_features = self.keep_features
        if keep_features:
            df.persist()
        clock = _PhaseClock()  # where the sink's part of a micro-batch goes, logged per batch
        try:
            small = [r.asDict() for r in df.filter(F.col("row_type") != "features").collect()]
            clock.mark("collect")
            reports = [r for r in small if r["row_type"] == "event"]
            events = [{k: r[k] for k in ANOMALY_EVENT.schema.names} for r in reports]
            alerts = alert_reports(reports)
            dead = [r for r in small if r["row_type"] == "dead_letter"]
            alerts_before = self.totals["alerts"]
            undelivered = None
            if alerts and self.alerts_topic:  # first: an alarm should not wait for the table's commits; the
                try:                          # ledger keeps a replayed batch from sending twice
                    self._alert_once(alerts, batch_id)
                except AlertsNotDelivered as exc:
                    undelivered = exc         # the tables are still written; then the batch fails
                clock.mark("alerts")
            if events:
                events = dedupe_events(events)  # the table holds each event's latest state
                now = datetime.now(timezone.utc)
                for row in events:
                    row["detected_at"] = row.get("detected_at") or now
                merge_batch(self.path(EVENTS), events, self.app_id + "-events", batch_id)
                clock.mark("events_merge")
            if dead:
                self._append_dead_letters(dead, batch_id)
                clock.mark("dead_letters")
            if undelivered is not None:
                raise undelivered
            n_feat = self._append_features(df.filter(F.col("row_type") == "features"), batch_id) \
                if keep_features else 0
            clock.mark("features")
            if alerts and self.webhooks is not None:  # its own ledger: <sink>/_webhooks_sent (jobs/webhooks.py)
                self.webhooks.deliver([json.loads(alert_json(r)) for r in alerts], batch_id)
                clock.mark("webhooks")
            status = [r for r in small if r["row_type"] == "status"]
            self.status.update(status)
            clock.mark("status")
            if self.metrics is not None:
                self.metrics.on_batch(events, dead, status, self.totals["alerts"] - alerts_before)
            self.totals["events"] += len(events)
            self.totals["dead_letters"] += len(dead)
            self.totals["feature_segments"] += n_feat
            sizes = sorted(r["state_bytes"] for r in status if r.get("state_bytes") is not None)
            log.info(json.dumps({"sink_batch": batch_id, "events": len(events), "dead_letters": len(dead),
                                 "alerts": self.totals["alerts"] - alerts_before, "sink_ms": clock.parts,
                                 "state_bytes_median": sizes[len(sizes) // 2] if sizes else None}))
        finally:
            if keep_features:
                df.unpersist()

    def close(self) -> None:
        self.status.flush()
        if self._producer is not None:
            self._producer.close(timeout=10)
            self._producer = None

    # -- alerts ----------------------------------------------------------------------------------

    def _alerts_table(self):
        from deltalake import DeltaTable

        path = self.path(ALERTS_SENT)
        if not self._alerts_table_ready:
            if "://" not in path:
                from pathlib import Path

                Path(path).mkdir(parents=True, exist_ok=True)
            DeltaTable.create(path, schema=ALERTS_SENT_SCHEMA, mode="ignore")
            self._alerts_table_ready = True
        return DeltaTable(path)

    def alerts_sent_upto(self) -> int | None:
        """The last batch id whose alerts this job (app id) recorded as sent, None if none. Read from the
        ledger once; then this job, the only writer of its app id's record, knows it."""
        if self._alerts_done is _UNKNOWN:
            self._alerts_done = self._alerts_table().transaction_version(self.app_id + "-alerts")
        return self._alerts_done

    def _record_alerts_sent(self, batch_id: int) -> None:
        """An empty commit to <sink>/_alerts_sent carrying the app transaction (app id-alerts, batch id)."""
        from deltalake import CommitProperties, Transaction, write_deltalake
        from deltalake.exceptions import CommitFailedError

        for attempt in range(1, 6):
            table = self._alerts_table()
            try:
                write_deltalake(table, ALERTS_SENT_SCHEMA.empty_table(), mode="append",
                                commit_properties=CommitProperties(
                                    app_transactions=[Transaction(self.app_id + "-alerts", batch_id)]))
                self._alerts_done = batch_id
                return
            except CommitFailedError:  # another job's record won the race: ours is independent, retry
                if attempt == 5:
                    raise
                time.sleep(0.05 * 2 ** attempt)

    def _alert_once(self, events: list[dict], batch_id: int) -> None:
        done = self.alerts_sent_upto()
        if done is not None and done >= batch_id:
            log.info("alerts of batch %d were sent before (a replayed batch): not sent again", batch_id)
            return
        self._send_alerts(events, batch_id)
        self._record_alerts_sent(batch_id)

    def _alerts_producer(self):
        from jobs.kafka_io import producer

        if self._producer is None:
            budget_ms = int(self.alert_retry_s * 1000)
            # The producer retries a record itself (idempotent: no duplicates) until delivery_timeout_ms;
            # reconnecting every <= 2 s notices a broker that is back quickly.
            budget_ms = max(budget_ms, 1000)
            extra = dict(delivery_timeout_ms=budget_ms, max_block_ms=min(budget_ms, 60000),
                         request_timeout_ms=min(30000, budget_ms - 1), bootstrap_timeout_ms=min(15000, budget_ms))
            if "reconnect.backoff.max.ms" not in (self.client_config or {}):
                extra["reconnect_backoff_max_ms"] = 2000
            self._producer = producer(self.bootstrap, self.client_config, client_id="avwatch-alerts", linger_ms=0,
                                      **extra)
        return self._producer

    def _drop_producer(self) -> None:
        if self._producer is not None:
            try:
                self._producer.close(timeout=0)
            except Exception:  # noqa: BLE001 - it is being discarded
                pass
            self._producer = None

    def _send_alerts(self, events: list[dict], batch_id: int) -> None:
        """Send and flush one message per event; retry what failed with backoff for up to alert_retry_s,
        then raise AlertsNotDelivered (the batch fails, nothing vanishes)."""
        from kafka.errors import KafkaError, KafkaTimeoutError

        deadline = time.monotonic() + self.alert_retry_s
        pending, attempt, delay, last = list(events), 0, 0.5, None
        while True:
            attempt += 1
            retriable = True
            try:
                prod = self._alerts_producer()
                futures = [(row, prod.send(self.alerts_topic, key=row["event_id"].encode(), value=alert_json(row)))
                           for row in pending]
                prod.flush(timeout=max(1.0, deadline - time.monotonic()))
                failed = []
                for row, fut in futures:
                    exc = fut.exception if fut.is_done else KafkaTimeoutError("not acknowledged in time")
                    if exc is not None:
                        failed.append(row)
                        last = exc
                        retriable = retriable and getattr(exc, "retriable", True) is not False
                if not failed:
                    break
                pending = failed
            except (KafkaError, AvwatchError, OSError) as exc:  # no broker at all, metadata or flush timeout
                last = exc
                retriable = getattr(exc, "retriable", True) is not False or isinstance(exc, KafkaTimeoutError)
                self._drop_producer()  # its unacknowledged records are resent by the next attempt
            left = deadline - time.monotonic()
            if not retriable or left <= 0:
                self._drop_producer()  # abort what it still holds: the replay of the batch sends it, once
                raise AlertsNotDelivered(
                    f"{len(pending)} of {len(events)} alert(s) of batch {batch_id} not delivered to topic "
                    f"{self.alerts_topic!r} at {self.bootstrap} after {attempt} attempt(s) in "
                    f"{self.alert_retry_s:g} s (--alert-retry-s): {type(last).__name__}: {last}. The events go to "
                    f"anomaly_events; the batch fails and a restart of the job replays it and sends them")
            wait = min(delay, left)
            log.warning("alerts of batch %d: %d of %d not delivered (%s: %s); retrying in %.1f s (%.0f s of "
                        "--alert-retry-s left)", batch_id, len(pending), len(events), type(last).__name__, last,
                        wait, left)
            time.sleep(wait)
            delay = min(delay * 2, 15.0)
        self.totals["alerts"] += len(events)

    # -- Delta -----------------------------------------------------------------------------------

    def _append_dead_letters(self, dead: list[dict], batch_id: int) -> None:
        from jobs.spark_schemas import struct_type

        now = datetime.now(timezone.utc)
        rows = [{**{k: r.get(k) for k in DEAD_LETTER.schema.names}, "run_id": self.run_id, "seen_at": now}
                for r in dead]
        for r in rows[:20]:
            log.warning("dead letter %s[%s]@%s: %s", r["topic"], r["partition"], r["offset"], r["reason"])
        table = pa.Table.from_pylist(rows, schema=DEAD_LETTER.schema)
        (self.spark.createDataFrame(table.to_pandas(), schema=struct_type(DEAD_LETTER))
         .write.format("delta").mode("append")
         .option("txnAppId", self.app_id + "-dead").option("txnVersion", batch_id)
         .save(self.path(DEAD_LETTER_TABLE)))

    def _append_features(self, blobs, batch_id: int) -> int:
        """Explode the batch's frame-feature blobs into FRAME_FEATURES rows and append them; returns the
        number of segments written."""
        from jobs.spark_schemas import struct_type

        segments = blobs.count()
        if not segments:
            return 0
        run_id = self.run_id
        rows = blobs.select("stream_id", "features", "epoch").mapInArrow(
            lambda batches: explode_features(batches, run_id), struct_type(FRAME_FEATURES))
        # mergeSchema: a table written by an earlier build gains the stage-1 columns added since (its older rows
        # read null there) instead of refusing the append and stopping the job
        (rows.write.format("delta").mode("append").partitionBy("stream_id", "date").option("mergeSchema", "true")
         .option("txnAppId", self.app_id + "-features").option("txnVersion", batch_id)
         .save(self.path(FEATURES_TABLE)))
        return segments
