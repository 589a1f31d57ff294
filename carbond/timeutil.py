"""Parsing of the time forms the CLI accepts: ISO 8601 and relative (``-7d``, ``-1h``)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from carbond.errors import UsageError

_RELATIVE = re.compile(r"^\s*([+-]?)(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_duration_s(text: str, *, name: str = "duration") -> float:
    """``"90"``, ``"90s"``, ``"15m"``, ``"6h"``, ``"2d"`` → seconds (must be > 0)."""
    text = str(text).strip()
    try:
        value = float(text)
    except ValueError:
        m = _RELATIVE.match(text)
        if not m or m.group(1) == "-":
            raise UsageError(
                f"{name}: {text!r} is not a duration; use seconds or a number with s, m, h, d or w "
                "(e.g. 30, 90s, 15m, 6h, 2d)"
            ) from None
        value = float(m.group(2)) * _UNIT_S[m.group(3)]
    if not value > 0 or value != value or value == float("inf"):
        raise UsageError(f"{name}: must be a positive, finite number of seconds, got {text!r}")
    return value


def parse_time(text: str, *, now: datetime | None = None, name: str = "time") -> datetime:
    """ISO 8601 (``2026-11-30``, ``2026-11-30T12:00:00Z``) or relative (``-7d``, ``-1h``, ``now``).

    Naive ISO times are taken as UTC. The result is always timezone-aware UTC.
    """
    now = now or datetime.now(UTC)
    text = str(text).strip()
    if text.lower() == "now":
        return now
    m = _RELATIVE.match(text)
    if m and m.group(1):
        delta = timedelta(seconds=float(m.group(2)) * _UNIT_S[m.group(3)])
        return now - delta if m.group(1) == "-" else now + delta
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"{name}: {text!r} is neither ISO 8601 (2026-11-30T12:00:00Z) nor relative (-7d, -1h, now)"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def to_ns(t: datetime) -> int:
    """A timezone-aware datetime → integer nanoseconds since the epoch."""
    return int(t.timestamp() * 1_000_000) * 1000


def from_ns(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC)


def iso(ns: int) -> str:
    """Nanoseconds → ``2026-11-30T12:00:00.123456Z`` (UTC, microseconds)."""
    return from_ns(ns).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
