"""What a decision returns to the service layer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from service.domain.calls import ProviderCall
from service.domain.model import PaymentCollection


@dataclass(slots=True)
class Decision:
    """The outcome of one decision step.

    - `duplicate`: the event already took effect; store nothing (stored events
      that are still unsent may be republished with their ids).
    - `ignored`: the event changes nothing (stale or frozen); store nothing.
    - `settled`: store `collection` (new state, inbox entry and outbox events).
    - `call`: make `calls` through the providers, then hand the outcomes to the
      matching `finish_*` function. When `reserve` is true, `collection` holds a
      recovery point that must be stored *before* the calls are made.
    """

    kind: Literal["duplicate", "ignored", "settled", "call"]
    collection: PaymentCollection
    calls: list[ProviderCall] = field(default_factory=list)
    reserve: bool = False
    note: str = ""
    rejected: bool = False
    """`settled` with a refusal (`payment.failed`), not an effect."""
