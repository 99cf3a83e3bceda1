"""The start of a monitoring window: ``--since 90m | 36h | 2d | 1w`` or an ISO 8601 date/time.

A duration counts back from now; a date or time without a zone is taken as UTC (the collected
events' clock), so ``2026-11-01`` means midnight UTC.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from pipeline.errors import MlopsError

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d|w)$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str, now: datetime) -> datetime:
    """The UTC moment ``text`` names: ``now`` minus a duration, or an absolute ISO 8601 date/time."""
    text = text.strip()
    match = _DURATION.match(text)
    if match:
        return now - timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise MlopsError(f"--since '{text}' is neither a duration (90m, 36h, 2d, 1w) nor an ISO 8601 "
                         "date or time (2026-11-01, 2026-11-01T12:00)") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
