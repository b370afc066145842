"""RFC 3339 timestamps.

Pydantic's lax datetime parsing also accepts Unix timestamps (as numbers or numeric
strings) and dates without a time; the contract says RFC 3339, so anything else is a
producer bug and is rejected before pydantic gets to be lenient. Naive datetimes are
rejected too (inbound and when the service builds an outbound event), so every
timestamp on the wire carries its offset.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Final

from pydantic import AwareDatetime, BeforeValidator

_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?"
    r"(?:[Zz]|[+-][0-9]{2}:[0-9]{2})"
)

RFC3339_EXAMPLE: Final[str] = "2024-05-01T12:00:00Z"


def _require_rfc3339(value: object) -> object:
    """Let `datetime` objects and RFC 3339 strings through; reject everything else."""
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        if _RFC3339.fullmatch(value) is None:
            raise ValueError(f"expected an RFC 3339 date-time such as {RFC3339_EXAMPLE!r}")
        return value
    raise ValueError("expected an RFC 3339 date-time string")


Rfc3339DateTime = Annotated[AwareDatetime, BeforeValidator(_require_rfc3339)]
"""A timezone-aware datetime, given as an RFC 3339 string on the wire."""
