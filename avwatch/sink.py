"""The sink folder: Delta tables written by the jobs and read by people, through delta-rs (no JVM).

  <sink>/anomaly_events   one row per detected defect (schemas.ANOMALY_EVENT)
  <sink>/dead_letter      Kafka records the stream job could not decode (schemas.DEAD_LETTER)
  <sink>/frame_features   optional per-frame stage-1 features (schemas.FRAME_FEATURES)
"""
from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pyarrow as pa

from avwatch.errors import AvwatchError, no_table
from avwatch.locations import join_uri, local_path
from schemas.records import RecordType

EVENTS = "anomaly_events"
DEAD_LETTER = "dead_letter"
FRAME_FEATURES = "frame_features"


def table_path(sink: str | Path, name: str) -> Path | str:
    """Where the sink's table `name` lives: a local Path (a folder or a file:// URI), else the URI joined
    as a URI (s3://bucket/x keeps its authority), which delta-rs opens as it is."""
    local = local_path(str(sink))
    if local is None:
        return join_uri(str(sink), name)
    return Path(local).expanduser().resolve() / name


def write_events_replacing(sink: str | Path, rows: list[dict], stream_ids: list[str],
                           read_version: int | None = None) -> dict:
    """Write the events of these streams, replacing what the table held for them, in one commit (through
    avwatch.events_table, the one writer of the table: rows merged by event_id, lost commit races retried;
    with read_version, rows another writer committed after it are kept)."""
    from avwatch import events_table

    return events_table.replace(str(table_path(sink, EVENTS)), rows, events_table.range_predicate(streams=stream_ids),
                                read_version=read_version)


def read_table(sink: str | Path, name: str = EVENTS, version: int | None = None) -> pa.Table:
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    path = table_path(sink, name)
    try:
        table = DeltaTable(str(path), version=version)
    except TableNotFoundError:
        raise no_table(sink, name, path) from None
    except Exception as exc:  # delta-rs raises plain exceptions for a bad version
        if version is not None:
            raise AvwatchError(f"cannot read version {version} of {path}: {exc}") from None
        raise
    return table.to_pyarrow_table()


def read_events(sink: str | Path, stream: str | None = None, detector: str | None = None,
                since: datetime | None = None, version: int | None = None):
    """The events table as a pandas DataFrame sorted by stream and time, optionally filtered."""
    df = read_table(sink, EVENTS, version).to_pandas()
    if stream:
        df = df[df["stream_id"] == stream]
    if detector:
        df = df[df["detector"] == detector]
    if since is not None:
        df = df[df["start_time"] >= since]
    return df.sort_values(["stream_id", "start_s", "detector"]).reset_index(drop=True)


def history(sink: str | Path, name: str = EVENTS) -> list[dict]:
    from deltalake import DeltaTable

    return DeltaTable(str(table_path(sink, name))).history()


def empty(record_type: RecordType) -> pa.Table:
    return record_type.schema.empty_table()
