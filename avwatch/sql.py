"""SQL text built from values (Delta predicates): each value quoted one way, everywhere."""
from __future__ import annotations

from datetime import datetime, timezone


def quote_literal(value) -> str:
    """A string literal for SQL: 'it''s' (single quotes, an inner quote doubled)."""
    return "'" + str(value).replace("'", "''") + "'"


def quote_list(values) -> str:
    """'a', 'b' for an IN list: each distinct value once, sorted, quoted."""
    return ", ".join(quote_literal(v) for v in sorted(set(values)))


def timestamp_text(value: datetime) -> str:
    """An aware time as SQL timestamp text in UTC, microseconds kept: 2026-11-26 08:00:00.000000."""
    return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")


def time_literal(value: datetime) -> str:
    """The same, as a quoted literal: '2026-11-26 08:00:00.000000'."""
    return quote_literal(timestamp_text(value))
