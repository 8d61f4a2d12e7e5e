"""Detector events -> rows of the anomaly_event record (schemas/records.py), with deterministic ids.

The event id depends only on what was detected (publication, stream, detector, check, start to the
millisecond), so a replayed micro-batch or a re-run over the same publication produces the same ids:
the table sink can then be idempotent and the alerts topic deduplicated by key. The publication (the
converter's publish_id) is part of it because a stream id is reused when a converter restarts: the
second publication's events must not overwrite the first's.
"""
from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta, timezone

from detectors.base import Event

DEFAULT_EPOCH = datetime(2000, 1, 1, tzinfo=timezone.utc)


def event_id(stream_id: str, detector: str, check: str, start_s: float, publication: str | None = None) -> str:
    key = f"{stream_id}\x1f{detector}\x1f{check}\x1f{int(round(start_s * 1000))}"
    if publication:
        key += f"\x1f{publication}"
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]


STATE_RANK = {"open": 0, "ongoing": 1, "closed": 2, None: 2}


def event_state(row: dict) -> str:
    """open | ongoing | closed of an event row or alert: its `state`; rows written before v2 have none (a
    stall's provisional report then said details.ongoing)."""
    state = row.get("state")
    if state in STATE_RANK and state is not None:
        return state
    details = row.get("details")
    if isinstance(details, str):
        try:
            details = json.loads(details)
        except ValueError:
            details = {}
    return "ongoing" if isinstance(details, dict) and details.get("ongoing") else "closed"


def latest_reports(rows: list[dict]) -> list[dict]:
    """One row per event_id, its latest report: a closed event replaces its open and ongoing reports,
    a later update an earlier one (rows: anomaly_event dicts)."""
    latest: dict[str, dict] = {}
    for row in rows:
        prev = latest.get(row["event_id"])
        if prev is None or (STATE_RANK.get(row.get("state"), 2), row["end_s"]) >= \
                (STATE_RANK.get(prev.get("state"), 2), prev["end_s"]):
            latest[row["event_id"]] = row
    return list(latest.values())


def parse_epoch(epoch: str | datetime | None) -> datetime:
    if epoch is None:
        return DEFAULT_EPOCH
    if isinstance(epoch, datetime):
        return epoch if epoch.tzinfo else epoch.replace(tzinfo=timezone.utc)
    value = datetime.fromisoformat(epoch)
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def event_row(stream_id: str, version: str, event: Event, epoch: str | datetime | None, run_id: str,
              detected_at: datetime | None = None, publication: str | None = None) -> dict:
    """One anomaly_event row (a dict with the schema's fields)."""
    base = parse_epoch(epoch)
    return {
        "event_id": event_id(stream_id, event.detector, event.check, event.start_s, publication),
        "stream_id": stream_id,
        "detector": event.detector,
        "detector_version": version,
        "start_s": round(float(event.start_s), 6),
        "end_s": round(float(event.end_s), 6),
        "start_time": base + timedelta(seconds=float(event.start_s)),
        "end_time": base + timedelta(seconds=float(event.end_s)),
        "score": float(event.score),
        "threshold": float(event.threshold),
        "severity": event.severity,
        "details": event.details_json() if not event.check else
        _with_check(event),
        "evidence": event.evidence or None,
        "run_id": run_id,
        "detected_at": detected_at or datetime.now(timezone.utc),
        "state": event.state,
    }


def _with_check(event: Event) -> str:
    return json.dumps({"check": event.check, **event.details}, sort_keys=True,
                      default=lambda v: v.item() if hasattr(v, "item") else str(v))
