"""The pure-Python bodies of the streaming job's two stages, kept free of the Spark session so that the
same functions serve the streaming job (jobs/stream.py) and the batch re-analysis (jobs/reanalyze.py).

stage1_batches  Kafka rows (Arrow batches) -> one row per segment: its stage-1 features as Arrow IPC,
                or a dead-letter row with the reason the record could not be decoded
stage2_group    one stream's stage-1 rows of a micro-batch + its pickled state -> event rows, dead-letter
                rows (late segments) and frame-feature blobs; the state goes back to Spark
"""
from __future__ import annotations

import json
import pickle
import time
from datetime import datetime, timezone

import pyarrow as pa

from avwatch.native_threads import use_one_native_thread
from detectors.analyzer import StreamAnalyzer
from detectors.config import DetectorConfig
from detectors.events import event_row
from detectors.features import Features, SegmentInput, stage1
from schemas import MAX_DEAD_LETTER_BYTES, RecordError, decode
from schemas.records import ANOMALY_EVENT

# One stage-1 output row. `reason` set means a dead letter (and the raw record travels with it).
STAGE1_SCHEMA = pa.schema([
    ("stream_id", pa.string()),
    ("kind", pa.string()),            # video | audio
    ("sequence", pa.int64()),
    ("t", pa.float64()),              # media seconds at the segment's start
    ("control", pa.string()),         # eos | heartbeat for control records
    ("source", pa.string()),          # the converter's source JSON
    ("features", pa.binary()),        # detectors.features.Features as an Arrow IPC stream (lz4)
    ("event_time", pa.timestamp("us", tz="UTC")),
    ("reason", pa.string()),
    ("topic", pa.string()),
    ("partition", pa.int32()),
    ("offset", pa.int64()),
    ("key", pa.binary()),
    ("value", pa.binary()),
    ("value_size", pa.int64()),
])

# One stage-2 output row: an event, a dead letter, or a frame-features blob (`row_type` says which).
_EVENT_FIELDS = [f for f in ANOMALY_EVENT.schema]
STAGE2_SCHEMA = pa.schema(
    [pa.field("row_type", pa.string())]
    + [pa.field(f.name, f.type) for f in _EVENT_FIELDS if f.name != "stream_id"]
    + [pa.field("stream_id", pa.string()), pa.field("reason", pa.string()), pa.field("topic", pa.string()),
       pa.field("partition", pa.int32()), pa.field("offset", pa.int64()), pa.field("key", pa.binary()),
       pa.field("value", pa.binary()), pa.field("value_size", pa.int64()), pa.field("features", pa.binary()),
       pa.field("t", pa.float64()), pa.field("epoch", pa.string())])

EVENT_COLUMNS = [f.name for f in ANOMALY_EVENT.schema]


def _dead(row: dict, reason: str) -> dict:
    value = row.get("value")
    return {"reason": reason, "topic": row.get("topic"), "partition": row.get("partition"),
            "offset": row.get("offset"), "key": row.get("key"),
            "value": None if value is None else bytes(value[:MAX_DEAD_LETTER_BYTES]),
            "value_size": None if value is None else len(value), "event_time": row.get("timestamp")}


def stage1_rows(rows: list[dict], config: DetectorConfig, kinds_by_topic: dict[str, str],
                max_record_bytes: int) -> list[dict]:
    """Decode each Kafka row and compute its stage-1 features; never raises for bad input."""
    out = []
    for row in rows:
        value, key = row.get("value"), row.get("key")
        if key is None or len(key) == 0:
            out.append(_dead(row, "record has no key: the key must be the stream id"))
            continue
        if value is not None and len(value) > max_record_bytes:
            out.append(_dead(row, f"oversize record: {len(value)} bytes > the job's limit of {max_record_bytes}"))
            continue
        try:
            record_type, table = decode(value)
            if table.num_rows == 0:
                raise RecordError(f"empty {record_type.name} record")
            stream_id = table.column("stream_id")[0].as_py()
            if stream_id.encode("utf-8") != bytes(key):
                raise RecordError(f"key {bytes(key)[:80]!r} does not match the record's stream id {stream_id!r}")
            item: SegmentInput = stage1(record_type.name, table, config, kind=kinds_by_topic.get(row["topic"]))
        except (RecordError, ValueError, KeyError, json.JSONDecodeError) as exc:
            out.append(_dead(row, f"{type(exc).__name__}: {exc}"))
            continue
        if record_type.name == "feature_segment":  # computed at the edge: pass the blob on as it came
            blob = table.column("features")[0].as_py()
        else:
            blob = item.features.to_ipc() if item.features is not None else None
        out.append({"stream_id": item.stream_id, "kind": item.kind, "sequence": item.sequence, "t": item.t,
                    "control": item.control, "source": json.dumps(item.source, sort_keys=True),
                    "features": blob,
                    "event_time": row.get("timestamp"), "topic": row.get("topic"),
                    "partition": row.get("partition"), "offset": row.get("offset"), "key": bytes(key)})
    return out


def stage1_batches(batches, config: DetectorConfig, kinds_by_topic: dict[str, str], max_record_bytes: int):
    """mapInArrow body: Kafka rows -> STAGE1_SCHEMA batches."""
    use_one_native_thread()  # parallelism is across tasks
    for batch in batches:
        rows = batch.to_pylist()
        yield pa.RecordBatch.from_pylist(stage1_rows(rows, config, kinds_by_topic, max_record_bytes),
                                         schema=STAGE1_SCHEMA)


class Stage2:
    """The stateful per-stream step, shared by the streaming job and re-analysis."""

    def __init__(self, config: DetectorConfig, run_id: str, lateness_s: float, keep_features: bool):
        self.config = config
        self.analyzer = StreamAnalyzer(config, lateness_s=lateness_s)
        self.run_id = run_id
        self.keep_features = keep_features

    def new_state(self) -> dict:
        return {"analyzer": self.analyzer.initial_state(), "publish_id": None, "last_arrival": None}

    def process(self, stream_id: str | None, rows: list[dict], state: dict | None) -> tuple[list[dict], dict | None]:
        """Feed one stream's stage-1 rows (any order); returns (output rows, new state or None when done)."""
        out: list[dict] = []
        if stream_id is None:  # records without a usable key never reach a stream's state
            return [{"row_type": "dead_letter", **self._dead_fields(r)} for r in rows], state
        state = state or self.new_state()
        now = datetime.now(timezone.utc)
        for row in sorted(rows, key=lambda r: (r.get("reason") is None, r.get("kind") or "", r.get("sequence") or 0)):
            if row.get("reason") is not None:
                out.append({"row_type": "dead_letter", "stream_id": stream_id, **self._dead_fields(row)})
                continue
            source = json.loads(row["source"])
            publish_id = source.get("publish_id")
            if publish_id and state["publish_id"] and publish_id != state["publish_id"]:
                if publish_id < state["publish_id"]:
                    out.append({"row_type": "dead_letter", "stream_id": stream_id,
                                **self._dead_fields(row, "segment of an earlier publication of this stream")})
                    continue
                out += self._events(stream_id, self.analyzer.close(state["analyzer"]).events, state)
                state = self.new_state()
            if publish_id:
                state["publish_id"] = publish_id
            state["live"] = bool(source.get("live"))
            feats = Features.from_ipc(row["features"]) if row.get("features") is not None else None
            item = SegmentInput(stream_id, row["kind"], int(row["sequence"]), float(row["t"]), source,
                                features=feats, control=row.get("control"))
            outcome = self.analyzer.add(state["analyzer"], item)
            out += self._events(stream_id, outcome.events, state)
            for kind, seq in outcome.late:
                out.append({"row_type": "dead_letter", "stream_id": stream_id,
                            **self._dead_fields(row, f"late {kind} segment {seq}: arrived after the stream moved "
                                                     f"on (allowed lateness {self.analyzer.lateness_s:g} s)")})
            if self.keep_features and feats is not None and row["kind"] == "video" and len(feats):
                out.append({"row_type": "features", "stream_id": stream_id, "features": row["features"],
                            "t": float(row["t"]), "epoch": state["analyzer"].get("epoch")})
        state["last_arrival"] = time.time()
        del now
        return out, state

    def on_idle(self, stream_id: str, state: dict, idle_s: float) -> list[dict]:
        """No records for this stream for idle_s of processing time: advance its clock (stall detection).

        Only for live sources: a file is published as fast as it decodes, so the time between its records
        says nothing about the media (and a finite run never waits on the wall clock)."""
        st = state["analyzer"]
        if st.get("finished") or not state.get("live"):
            return []
        media_now = st["media_end"] + idle_s
        return self._events(stream_id, self.analyzer.clock(st, media_now).events, state)

    def _events(self, stream_id: str, events, state: dict) -> list[dict]:
        epoch = state["analyzer"].get("epoch")
        return [{"row_type": "event", **event_row(stream_id, version, ev, epoch, self.run_id)} for version, ev in events]

    @staticmethod
    def _dead_fields(row: dict, reason: str | None = None) -> dict:
        return {"reason": reason or row.get("reason"), "topic": row.get("topic"), "partition": row.get("partition"),
                "offset": row.get("offset"), "key": row.get("key"),
                "value": row.get("value"), "value_size": row.get("value_size"),
                "run_id": None, "detected_at": datetime.now(timezone.utc)}


def dump_state(state: dict) -> bytes:
    return pickle.dumps(state, protocol=5)


def load_state(blob: bytes) -> dict:
    return pickle.loads(blob)
