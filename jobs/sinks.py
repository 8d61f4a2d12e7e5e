"""foreachBatch sink of the streaming job: alerts topic, then the Delta tables, exactly once.

Per micro-batch, in this order:
1. alerts: one JSON message per event on the alerts topic, key = event_id (at-least-once: a replayed
   batch sends again; consumers deduplicate by key);
2. anomaly_events: MERGE on event_id (an event reported twice, e.g. a stall first while ongoing, then
   final, updates its row), recording (app id, batch id) in the same commit so a replayed batch is a
   no-op. The events are a handful of rows already on the driver, so by default the driver merges them
   with delta-rs (~35 ms of CPU) instead of planning a Spark MERGE (~3 CPU-s, measured: the largest
   fixed cost of a micro-batch); `--events-writer spark` keeps Spark's Delta MERGE for filesystems
   delta-rs does not reach (e.g. hdfs://);
3. dead_letter and frame_features: appends with the same txnAppId/txnVersion.
Events are few per batch, so they are gathered on the driver, deduplicated (last report of an event
wins) and sent from there; frame features stay distributed.
"""
from __future__ import annotations

import json
import logging
from datetime import datetime, timezone

import pyarrow as pa

from avwatch.sink import DEAD_LETTER as DEAD_LETTER_TABLE
from avwatch.sink import EVENTS, FRAME_FEATURES as FEATURES_TABLE
from schemas.records import ANOMALY_EVENT, DEAD_LETTER, FRAME_FEATURE_COLUMNS, FRAME_FEATURES

log = logging.getLogger("avwatch.sink")

EVENTS_WRITERS = ("driver", "spark")
COMMIT_ATTEMPTS = 5  # a concurrent writer (re-analysis) can win a commit race: reload and try again


def alert_json(row: dict) -> bytes:
    """The alerts-topic message of one event: every field but the evidence image, times in ISO 8601."""
    out = {}
    for key, value in row.items():
        if key == "evidence":
            continue
        out[key] = value.isoformat() if hasattr(value, "isoformat") else value
    out["details"] = json.loads(row["details"]) if row.get("details") else {}
    return json.dumps(out, ensure_ascii=False, sort_keys=True).encode("utf-8")


def dedupe_events(rows: list[dict]) -> list[dict]:
    """One row per event_id: the last report wins (a closed event replaces its ongoing report)."""
    latest: dict[str, dict] = {}
    for row in rows:
        prev = latest.get(row["event_id"])
        if prev is None or (row["end_s"], not json.loads(row["details"]).get("ongoing", False)) >= \
                (prev["end_s"], not json.loads(prev["details"]).get("ongoing", False)):
            latest[row["event_id"]] = row
    return sorted(latest.values(), key=lambda r: (r["stream_id"], r["start_s"], r["detector"]))


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
    from detectors.features import Features

    target = spark_arrow_schema(FRAME_FEATURES.schema)
    for batch in batches:
        columns = {name: [] for name in FRAME_FEATURES.schema.names}
        for row in batch.to_pylist():
            part = frame_feature_rows(Features.from_ipc(row["features"]), row["stream_id"], row["epoch"], run_id)
            for name, values in part.items():
                columns[name] += values
        yield pa.RecordBatch.from_pydict(columns, schema=FRAME_FEATURES.schema).cast(target)


class BatchSink:
    """Writes one micro-batch of stage-2 output rows to the alerts topic and the Delta tables."""

    def __init__(self, spark, sink: str, app_id: str, bootstrap: str, alerts_topic: str | None, run_id: str,
                 keep_features: bool = False, events_writer: str = "driver"):
        self.spark = spark
        self.sink = str(sink).rstrip("/")
        self.app_id = app_id
        self.bootstrap = bootstrap
        self.alerts_topic = alerts_topic or None
        self.run_id = run_id
        self.keep_features = keep_features
        if events_writer not in EVENTS_WRITERS:
            raise ValueError(f"events_writer must be one of {', '.join(EVENTS_WRITERS)}, not {events_writer!r}")
        self.events_writer = events_writer
        self._events_table_ready = False
        self.totals = {"events": 0, "dead_letters": 0, "feature_segments": 0, "alerts": 0}
        self._producer = None

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
        try:
            small = [r.asDict() for r in df.filter(F.col("row_type") != "features").collect()]
            events = [{k: r[k] for k in ANOMALY_EVENT.schema.names} for r in small if r["row_type"] == "event"]
            dead = [r for r in small if r["row_type"] == "dead_letter"]
            if events:
                events = dedupe_events(events)
                self._send_alerts(events)
                self._merge_events(events, batch_id)
            if dead:
                self._append_dead_letters(dead, batch_id)
            n_feat = self._append_features(df.filter(F.col("row_type") == "features"), batch_id) \
                if keep_features else 0
            self.totals["events"] += len(events)
            self.totals["dead_letters"] += len(dead)
            self.totals["feature_segments"] += n_feat
            if events or dead:
                log.info(json.dumps({"batch": batch_id, "events": len(events), "dead_letters": len(dead)}))
        finally:
            if keep_features:
                df.unpersist()

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=10)
            self._producer = None

    # -- alerts ----------------------------------------------------------------------------------

    def _send_alerts(self, events: list[dict]) -> None:
        if not self.alerts_topic:
            return
        from jobs.kafka_io import producer

        if self._producer is None:
            self._producer = producer(self.bootstrap, client_id="avwatch-alerts", linger_ms=0)
        for row in events:
            self._producer.send(self.alerts_topic, key=row["event_id"].encode(), value=alert_json(row))
        self._producer.flush(timeout=60)
        self.totals["alerts"] += len(events)

    # -- Delta -----------------------------------------------------------------------------------

    def _merge_events(self, events: list[dict], batch_id: int) -> None:
        now = datetime.now(timezone.utc)
        for row in events:
            row["detected_at"] = row.get("detected_at") or now
        source = pa.Table.from_pylist(events, schema=ANOMALY_EVENT.schema)
        if self.events_writer == "driver":
            self._merge_events_delta_rs(source, batch_id)
        else:
            self._merge_events_spark(source, batch_id)

    def _merge_events_delta_rs(self, source: pa.Table, batch_id: int) -> None:
        from deltalake import CommitProperties, DeltaTable, Transaction
        from deltalake.exceptions import CommitFailedError

        path = self.path(EVENTS)
        source = source.replace_schema_metadata(None)
        if not self._events_table_ready:
            DeltaTable.create(path, schema=source.schema, mode="ignore")
            self._events_table_ready = True
        app = self.app_id + "-events"
        for attempt in range(1, COMMIT_ATTEMPTS + 1):
            table = DeltaTable(path)
            done = table.transaction_version(app)
            if done is not None and done >= batch_id:
                return  # this batch was committed before a restart: replaying it changes nothing
            try:
                (table.merge(source, "t.event_id = s.event_id", source_alias="s", target_alias="t",
                             commit_properties=CommitProperties(app_transactions=[Transaction(app, batch_id)]))
                 .when_matched_update_all().when_not_matched_insert_all().execute())
                return
            except CommitFailedError:
                if attempt == COMMIT_ATTEMPTS:
                    raise
                log.warning("events commit of batch %d lost a race with another writer; retrying", batch_id)

    def _merge_events_spark(self, source: pa.Table, batch_id: int) -> None:
        from delta.tables import DeltaTable

        from jobs.spark_schemas import struct_type

        schema = struct_type(ANOMALY_EVENT)
        source = self.spark.createDataFrame(source.to_pandas(), schema=schema)
        path = self.path(EVENTS)
        if not self._events_table_ready:  # once per run: creating it reads the Delta log each time
            DeltaTable.createIfNotExists(self.spark).location(path).addColumns(schema).execute()
            self._events_table_ready = True
        conf = self.spark.conf
        conf.set("spark.databricks.delta.write.txnAppId", self.app_id + "-events")
        conf.set("spark.databricks.delta.write.txnVersion", str(batch_id))
        try:
            (DeltaTable.forPath(self.spark, path).alias("t")
             .merge(source.alias("s"), "t.event_id = s.event_id")
             .whenMatchedUpdateAll().whenNotMatchedInsertAll().execute())
        finally:
            conf.unset("spark.databricks.delta.write.txnAppId")
            conf.unset("spark.databricks.delta.write.txnVersion")

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
        (rows.write.format("delta").mode("append").partitionBy("stream_id", "date")
         .option("txnAppId", self.app_id + "-features").option("txnVersion", batch_id)
         .save(self.path(FEATURES_TABLE)))
        return segments
