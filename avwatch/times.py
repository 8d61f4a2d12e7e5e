"""Times given as text: ISO 8601, read the same way everywhere (a time without a zone is UTC)."""
from __future__ import annotations

from datetime import datetime, timezone


def parse_iso_time(text: str) -> datetime:
    """'2026-11-26T08:00:00Z', '2026-11-26 08:00+01:00', '2026-11-26' -> an aware datetime (UTC when the text
    names no zone). ValueError when the text is not an ISO time."""
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
