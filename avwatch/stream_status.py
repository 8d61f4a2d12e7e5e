"""<sink>/stream_status: one row per stream, where it stands (written by the stream job, read by `avwatch serve`).

The job's stage 2 reports each stream it saw in a micro-batch (jobs/stream_stages.py `status_row`); the
sink merges those into this small Delta table with delta-rs on the driver: at once when a stream appears or
ends, otherwise at most every `interval_s` (a commit per micro-batch would grow the log for nothing).
"""
from __future__ import annotations

import time
from datetime import datetime, timezone

import pyarrow as pa

STREAM_STATUS = "stream_status"
SCHEMA = pa.schema([
    pa.field("stream_id", pa.string(), nullable=False),
    pa.field("state", pa.string(), nullable=False),          # live | file | ended
    pa.field("media_s", pa.float64()),                       # media seconds analysed (kept when it ended)
    pa.field("epoch", pa.string()),                          # ISO wall-clock time of media time 0
    pa.field("last_record_at", pa.timestamp("us", tz="UTC")),  # when the job last received a record of it
    pa.field("updated_at", pa.timestamp("us", tz="UTC"), nullable=False),
])


def _path(sink: str) -> str:
    sink = str(sink).rstrip("/")
    if "://" not in sink:
        from pathlib import Path

        sink = str(Path(sink).expanduser().resolve())
    return f"{sink}/{STREAM_STATUS}"


def _ts(value):
    if value is None:
        return None
    if hasattr(value, "to_pydatetime"):
        value = value.to_pydatetime()
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def merge(sink: str, rows: list[dict]) -> None:
    """Upsert rows {stream_id, reason|state, t|media_s, epoch, detected_at|last_record_at} by stream_id."""
    from deltalake import DeltaTable, write_deltalake
    from deltalake.exceptions import CommitFailedError, TableNotFoundError

    now = datetime.now(timezone.utc)
    latest = {}
    for r in rows:
        latest[r["stream_id"]] = {"stream_id": r["stream_id"], "state": r.get("state") or r.get("reason") or "live",
                                  "media_s": r.get("media_s", r.get("t")), "epoch": r.get("epoch"),
                                  "last_record_at": _ts(r.get("last_record_at", r.get("detected_at"))),
                                  "updated_at": now}
    if not latest:
        return
    source = pa.Table.from_pylist(list(latest.values()), schema=SCHEMA)
    path = _path(sink)
    for attempt in range(1, 6):
        try:
            try:
                table = DeltaTable(path)
            except TableNotFoundError:
                write_deltalake(path, source, mode="append")  # the first write creates it
                return
            (table.merge(source, "t.stream_id = s.stream_id", source_alias="s", target_alias="t")
             .when_matched_update({"state": "s.state", "media_s": "coalesce(s.media_s, t.media_s)",
                                   "epoch": "coalesce(s.epoch, t.epoch)",
                                   "last_record_at": "coalesce(s.last_record_at, t.last_record_at)",
                                   "updated_at": "s.updated_at"})
             .when_not_matched_insert_all().execute())
            return
        except CommitFailedError:  # another job of the same sink merged first: retry on its version
            if attempt == 5:
                raise
            time.sleep(0.05 * 2 ** attempt)


def read(sink: str) -> list[dict]:
    """Every stream's row (empty when no job has written the table yet)."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        return DeltaTable(_path(sink)).to_pyarrow_table().to_pylist()
    except TableNotFoundError:
        return []


class StatusTable:
    """Throttled writer of the table: a new or ended stream is written at once, progress every interval_s."""

    def __init__(self, sink: str, interval_s: float = 5.0):
        self.sink = sink
        self.interval_s = interval_s
        self._known: dict[str, str] = {}   # stream id -> state written
        self._pending: dict[str, dict] = {}
        self._last = 0.0

    def update(self, rows: list[dict]) -> None:
        changed = False
        for r in rows:
            state = r.get("reason") or r.get("state") or "live"
            changed = changed or self._known.get(r["stream_id"]) != state
            self._pending[r["stream_id"]] = r
        if self._pending and (changed or time.monotonic() - self._last >= self.interval_s):
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        rows = list(self._pending.values())
        merge(self.sink, rows)
        for r in rows:
            self._known[r["stream_id"]] = r.get("reason") or r.get("state") or "live"
        self._pending.clear()
        self._last = time.monotonic()
