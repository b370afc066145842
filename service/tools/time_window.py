"""`--since` / `--until` values: RFC 3339 instants or durations back from now.

Operators type "the last 2 hours" far more often than a timestamp, so `2h`, `30m`,
`45s` and `1d` mean "that long ago"; anything else must be an ISO 8601 / RFC 3339
instant (a missing offset means UTC).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from service.tools.connection import ToolError

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_instant(text: str, *, now: datetime | None = None) -> datetime:
    """Parse `text` into a timezone-aware instant; raise `ToolError` if it is neither form."""
    value = text.strip()
    match = _DURATION.match(value)
    if match:
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
        return (now or datetime.now(UTC)) - timedelta(seconds=seconds)
    try:
        instant = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError as exc:
        raise ToolError(
            f"{text!r} is not a time: use RFC 3339 (2024-05-01T12:00:00Z) or a duration "
            "ago (30m, 2h, 1d)"
        ) from exc
    return instant if instant.tzinfo else instant.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """A half-open window `[since, until)`; either end may be open."""

    since: datetime | None = None
    until: datetime | None = None

    @classmethod
    def parse(cls, since: str | None, until: str | None) -> TimeWindow:
        now = datetime.now(UTC)
        window = cls(
            parse_instant(since, now=now) if since else None,
            parse_instant(until, now=now) if until else None,
        )
        if window.since and window.until and window.since >= window.until:
            raise ToolError("--since must be before --until")
        return window

    @property
    def is_open(self) -> bool:
        return self.since is None and self.until is None

    def contains(self, instant: datetime) -> bool:
        if self.since is not None and instant < self.since:
            return False
        return not (self.until is not None and instant >= self.until)
