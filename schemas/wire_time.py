"""How the service writes a datetime as text: RFC 3339, UTC spelled `Z`.

One function for every timestamp the service writes (event envelopes, CLI output,
JSON reports), so they all read the same and match what pydantic writes for the
datetimes inside event `data` (`2024-05-01T12:00:00.123456Z`, the fraction only
when there is one, other offsets kept as `+02:00`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal, TypeAlias

TimeSpec: TypeAlias = Literal["auto", "seconds", "milliseconds", "microseconds"]
"""How much of the fraction of a second to write (`datetime.isoformat`'s `timespec`)."""


def wire_time(moment: datetime, timespec: TimeSpec = "auto") -> str:
    """`moment` as RFC 3339 text, with `Z` for UTC (`2024-05-01T12:00:00Z`).

    `timespec="seconds"` drops the fraction (for tables meant for people). A naive
    `moment` is written without an offset: callers that put it on the wire must
    pass an aware one (the envelope builder checks).
    """
    return moment.isoformat(timespec=timespec).replace("+00:00", "Z")
