"""The one writer of the anomaly_events table (delta-rs, no JVM, no Kafka).

Every writer of events goes through here: the stream job's foreachBatch (jobs/sinks.py), `avwatch
analyze --local` (avwatch/sink.py) and re-analysis (jobs/reanalyze.py). One semantics:

- rows are merged by event_id: within one write the last report of an event wins (`dedupe_events`: a
  closed event replaces its ongoing report), and a later write of an event_id updates its row;
- `merge_batch(location, rows, app_id, version)`: MERGE on event_id, recording (app_id, version) as a
  Delta app transaction in the same commit; a batch whose version is already recorded for the app id is
  skipped, so a replayed batch is a no-op;
- `replace(location, rows, predicate)`: in ONE commit, the rows matching the predicate (e.g. streams,
  detectors, a start_time range) are deleted and the new rows (which must all match it) inserted.
  With `read_version` (the table version the caller's input was read at), rows that another writer
  committed after that version are kept and win over the new rows of the same event_id: a re-analysis
  never deletes what the stream job wrote while it ran;
- Delta's optimistic concurrency makes a writer lose a race against a concurrent commit
  (CommitFailedError, delta-rs checks serializable isolation); both operations then reload the table and
  run again, with exponential backoff, up to `attempts` times, then raise `EventsCommitError`.
"""
from __future__ import annotations

import json
import logging
import random
import time
from datetime import datetime, timezone

import pyarrow as pa

from avwatch.errors import AvwatchError
from avwatch.sql import quote_list, time_literal
from detectors.events import latest_reports
from schemas.records import ANOMALY_EVENT

log = logging.getLogger("avwatch.events_table")

COMMIT_ATTEMPTS = 10         # attempts of one write before EventsCommitError
BACKOFF_FIRST_S = 0.05       # first wait after a lost race; doubles, with jitter, up to BACKOFF_MAX_S
BACKOFF_MAX_S = 5.0
SCHEMA = ANOMALY_EVENT.schema.remove_metadata()


class EventsCommitError(AvwatchError):
    """A write to anomaly_events lost every commit race it was allowed to retry."""


def dedupe_events(rows: list[dict]) -> list[dict]:
    """One row per event_id: its latest report (detectors.events.latest_reports: a closed event replaces
    its open and ongoing reports), sorted by stream, start and detector."""
    return sorted(latest_reports(rows), key=lambda r: (r["stream_id"], r["start_s"], r["detector"]))


sql_list = quote_list    # the SQL helpers of avwatch/sql.py, under the names this module's callers use
sql_time = time_literal


def range_predicate(streams=None, detectors=None, start: datetime | None = None, end: datetime | None = None) -> str:
    """The SQL predicate of a replaced range: these streams, these detectors, start_time in [start, end)."""
    parts = []
    if streams is not None:
        parts.append(f"stream_id IN ({sql_list(streams)})" if streams else "FALSE")
    if detectors is not None:
        parts.append(f"detector IN ({sql_list(detectors)})" if detectors else "FALSE")
    if start is not None:
        parts.append(f"start_time >= {sql_time(start)}")
    if end is not None:
        parts.append(f"start_time < {sql_time(end)}")
    return " AND ".join(parts) or "TRUE"


def to_arrow(rows: list[dict]) -> pa.Table:
    now = datetime.now(timezone.utc)
    rows = [{**r, "detected_at": r.get("detected_at") or now} for r in rows]
    return pa.Table.from_pylist([{k: r.get(k) for k in SCHEMA.names} for r in rows], schema=SCHEMA)


def _open(location: str, storage_options=None):
    """The table, created (empty, with the event schema) when it does not exist yet."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        return _evolved(DeltaTable(location, storage_options=storage_options))
    except TableNotFoundError:
        pass
    if "://" not in location:
        from pathlib import Path

        Path(location).mkdir(parents=True, exist_ok=True)
    try:
        DeltaTable.create(location, schema=SCHEMA, mode="ignore", storage_options=storage_options)
    except Exception:  # two writers creating it at once: the other one won, which is as good
        log.debug("creating %s raced with another writer", location, exc_info=True)
    return DeltaTable(location, storage_options=storage_options)


def _evolved(table):
    """Add the columns a newer event schema has (e.g. `state`, v2) to a table written before it."""
    from deltalake.schema import Field

    have = {f.name for f in table.schema().fields}
    missing = [f for f in SCHEMA if f.name not in have]
    if missing:
        table.alter.add_columns([Field.from_arrow(f.with_nullable(True)) for f in missing])
        log.info("added column(s) %s to the events table", ", ".join(f.name for f in missing))
    return table


def table_version(location: str, storage_options=None) -> int:
    """The table's current version, -1 when it does not exist (a `read_version` for `replace`)."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        return DeltaTable(location, storage_options=storage_options).version()
    except TableNotFoundError:
        return -1


def select(location: str, predicate: str, version: int | None = None, storage_options=None) -> list[dict]:
    """The rows matching an SQL predicate (the same text `replace` takes), at a version or the latest."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    if version is not None and version < 0:
        return []
    try:
        table = DeltaTable(location, version=version, storage_options=storage_options)
    except TableNotFoundError:
        return []
    return _query(table, predicate)


def _query(table, predicate: str) -> list[dict]:
    from deltalake import QueryBuilder

    return pa.table(QueryBuilder().register("t", table).execute(f"SELECT * FROM t WHERE {predicate}")
                    .read_all()).to_pylist()


def _backoff(attempt: int) -> float:
    delay = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * (2 ** (attempt - 1)))
    return delay * (0.5 + random.random() / 2)


def _row_key(row: dict) -> str:
    return json.dumps([row.get(k) for k in SCHEMA.names if k != "evidence"], default=str)


def merge_batch(location: str, rows: list[dict], app_id: str, version: int, *, attempts: int = COMMIT_ATTEMPTS,
                storage_options=None) -> int | None:
    """MERGE one batch of events on event_id, idempotent through the app transaction (app_id, version).

    Returns the table version this call committed, None when the batch was already there (or had no
    rows)."""
    from deltalake import CommitProperties, Transaction
    from deltalake.exceptions import CommitFailedError

    rows = dedupe_events(rows)
    if not rows:
        return None
    source = to_arrow(rows)
    for attempt in range(1, attempts + 1):
        table = _open(location, storage_options)
        done = table.transaction_version(app_id)
        if done is not None and done >= version:
            return None  # committed before (a replayed batch): nothing changes
        try:
            (table.merge(source, "t.event_id = s.event_id", source_alias="s", target_alias="t",
                         commit_properties=CommitProperties(app_transactions=[Transaction(app_id, version)]))
             .when_matched_update_all().when_not_matched_insert_all().execute())
            return table.version()
        except CommitFailedError as exc:
            if attempt == attempts:
                raise EventsCommitError(f"could not commit batch {version} of {app_id} to {location}: lost "
                                        f"{attempts} commit races with other writers ({exc})") from exc
            delay = _backoff(attempt)
            log.warning("events batch %d of %s lost a commit race (attempt %d/%d); retrying in %.2f s",
                        version, app_id, attempt, attempts, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def replace(location: str, rows: list[dict], predicate: str, *, read_version: int | None = None,
            metadata: dict | None = None, attempts: int = COMMIT_ATTEMPTS, storage_options=None) -> dict:
    """Replace the rows matching `predicate` with `rows` in one commit (see the module doc).

    Returns {"version": the commit's table version, "deleted": rows removed, "inserted": rows added,
    "kept": event ids another writer committed after read_version, left as they are}."""
    from deltalake import CommitProperties, write_deltalake
    from deltalake.exceptions import CommitFailedError

    rows = dedupe_events(rows)
    props = CommitProperties(custom_metadata={"userMetadata": json.dumps(metadata, sort_keys=True)}) \
        if metadata else None
    then: set[str] | None = None  # the rows the caller read (at read_version), loaded once
    for attempt in range(1, attempts + 1):
        # one load and one query per attempt: a writer that commits every second must not starve this
        table = _open(location, storage_options)
        current = table.version()
        matching = _query(table, predicate)
        kept: set[str] = set()
        if read_version is not None and read_version < current:
            if then is None:
                then = {_row_key(r) for r in select(location, predicate, read_version, storage_options)}
            kept = {r["event_id"] for r in matching if _row_key(r) not in then}
        new = [r for r in rows if r["event_id"] not in kept]
        where = f"({predicate})" + (f" AND event_id NOT IN ({sql_list(kept)})" if kept else "")
        try:
            write_deltalake(table, to_arrow(new), mode="overwrite", predicate=where, commit_properties=props)
        except CommitFailedError as exc:
            if attempt == attempts:
                raise EventsCommitError(f"could not replace {predicate!r} in {location}: lost {attempts} commit "
                                        f"races with other writers ({exc})") from exc
            delay = _backoff(attempt)
            log.warning("replacing events lost a commit race (attempt %d/%d); retrying in %.2f s",
                        attempt, attempts, delay)
            time.sleep(delay)
            continue
        if kept:
            log.info("kept %d event(s) written by another writer during this run: %s", len(kept),
                     ", ".join(sorted(kept)[:10]))
        return {"version": table.version(), "deleted": sum(1 for r in matching if r["event_id"] not in kept),
                "inserted": len(new), "kept": sorted(kept)}
    raise AssertionError("unreachable")
