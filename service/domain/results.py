"""What a decision returns to the unit of work."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from service.domain.calls import Answered, Ask, How, ProviderCall
from service.domain.model import OutboxEvent, PaymentCollection

DecisionKind = Literal["duplicate", "ignored", "settled", "call", "ask", "orphan", "wait"]

Chain = Callable[["Decision", Answered], Ask | None]
"""The next question of a decision given the answers so far (None: done)."""


@dataclass(slots=True)
class Decision:
    """The outcome of one decision step; the aggregate was changed in place.

    - `duplicate`: the event already took effect; store nothing (stored events
      that are still unsent are handed on again with their ids).
    - `ignored`: the event changes nothing (stale or frozen); store nothing.
    - `settled`: store `collection` (new state, inbox entry and recorded events).
    - `call`: put `calls` to the providers (:meth:`next_ask`), then settle with the
      answers. When `reserve` is true, `collection` holds a recovery point that
      must be stored *before* the calls are made; the answers are then applied to
      what is stored when they arrive.
    - `ask`: the decision needs the answers to `calls` (status queries) first; it
      changed nothing: ask, load again and decide again with the answers.
    - `orphan`: the event names no aggregate; `events` are its stored answer.
    - `wait`: the answer depends on an operation another handler is still making;
      nothing is stored: decide again in a moment.
    """

    kind: DecisionKind
    collection: PaymentCollection | None = None
    calls: list[ProviderCall] = field(default_factory=list)
    reserve: bool = False
    note: str = ""
    rejected: bool = False
    """`settled` with a refusal (`payment.failed`), not an effect."""
    changed: bool = True
    """False for a `settled` decision that only recorded having seen the event."""
    settle_fresh: bool = False
    """`call`: the answers are applied to what is stored when they arrive (as after a
    reservation), not decided again after a lost race: they may be about something
    a concurrent writer has settled meanwhile, and must still count."""
    how: How = "call"
    """How every call of this decision is put (see :class:`~service.domain.calls.Ask`)."""
    chain: Chain | None = None
    """Chooses each next question from the answers so far; None: `calls` in order."""
    events: list[OutboxEvent] = field(default_factory=list)
    corrections: list[str] = field(default_factory=list)
    """The audit: the kind of each difference from the provider applied as a fact."""

    def next_ask(self, answered: Answered) -> Ask | None:
        """The next question to put, given the answers to the ones before (None: done)."""
        if self.chain is not None:
            return self.chain(self, answered)
        if len(answered) >= len(self.calls):
            return None
        return Ask(self.calls[len(answered)], self.how)

    @property
    def stored(self) -> PaymentCollection:
        """The collection this decision stores (a `settled`, `call` or `ask` decision)."""
        assert self.collection is not None, f"a {self.kind} decision stores no collection"
        return self.collection
