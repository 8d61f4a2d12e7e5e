"""`avwatch events`: print the events table as an aligned table, CSV or JSON lines."""
from __future__ import annotations

import json
import re
import sys
from datetime import datetime, timedelta, timezone

from avwatch.errors import OptionError
from avwatch.sink import read_events
from avwatch.times import parse_iso_time

COLUMNS = ["stream_id", "detector", "start_s", "end_s", "state", "score", "threshold", "severity", "details"]


def parse_since(text: str | None, now: datetime | None = None) -> datetime | None:
    """'24h', '30m', '2d', '90s' (ago) or an ISO time -> an aware UTC datetime."""
    if not text:
        return None
    now = now or datetime.now(timezone.utc)
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*(ago)?\s*", text)
    if match:
        amount, unit = float(match.group(1)), match.group(2)
        return now - timedelta(**{{"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[unit]: amount})
    try:
        return parse_iso_time(text)
    except ValueError:
        raise OptionError("since", f"takes a duration such as 24h, 30m, 2d, or an ISO time; got {text!r}") from None


def print_events(args, out=None) -> int:
    out = out or sys.stdout
    df = read_events(args.sink, stream=args.stream, detector=args.detector, since=parse_since(args.since),
                     version=args.version)
    # open: the defect is going on (its end is the time known so far); tables written before v2 lack state
    df["state"] = df["state"].fillna("closed") if "state" in df else "closed"
    if args.format == "jsonl":
        for row in df.drop(columns=["evidence"]).to_dict(orient="records"):
            row = {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items()}
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
        return 0
    view = df[COLUMNS + ["event_id", "start_time", "detector_version"]] if args.format == "csv" else df[COLUMNS]
    if args.format == "csv":
        view.to_csv(out, index=False)
        return 0
    if view.empty:
        out.write("no events\n")
        return 0
    view = view.copy()
    view["start_s"] = view["start_s"].map(lambda v: f"{v:.3f}")
    view["end_s"] = view["end_s"].map(lambda v: f"{v:.3f}")
    view["score"] = view["score"].map(lambda v: f"{v:.4g}")
    view["threshold"] = view["threshold"].map(lambda v: f"{v:.4g}")
    out.write(view.to_string(index=False, max_colwidth=80) + "\n")
    out.write(f"{len(view)} event(s)\n")
    return 0
