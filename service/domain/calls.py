"""Provider calls a decision asks the service layer to make.

A call is data, not a coroutine: the domain says *what* to ask a provider and
under which idempotency key; the service layer makes the call (with timeout,
retries and the status query for unknown outcomes) and hands the typed outcome
back to the domain.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from service.domain.outcomes import ProviderOutcome

CallOperation = Literal[
    "initiate",
    "update",
    "update_data",
    "delete",
    "authorize",
    "capture",
    "refund",
    "cancel",
    "retrieve",
]


@dataclass(frozen=True, slots=True)
class ProviderCall:
    operation: CallOperation
    provider_id: str
    idempotency_key: str
    session_id: str
    amount: int
    currency_code: str
    cart_id: str
    payment_id: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    """The session's (or payment's) provider data, as the provider last returned it."""
    payment_data: dict[str, Any] = field(default_factory=dict)
    """Data from the customer for this call (payment method token, 3-D Secure result)."""
    context: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None
    final_capture: bool = True
    """A capture: whether it is the last on its authorization (with multicapture, a
    capture that leaves an amount to capture later is not). Decided when the capture
    is reserved and stored with it, so a retry sends exactly the same request."""
    ref: str | None = None
    """What in the aggregate the call is for (e.g. the command id of a reserved
    operation), so its answer is applied to the right thing."""

    @property
    def moves_money(self) -> bool:
        return self.operation in ("authorize", "capture", "refund", "cancel")


How = Literal["call", "status", "resume"]
"""How a call is put to the provider: made (`call`, with retries and the status query
after an unknown outcome), only asked about (`status`: what became of it?), or
`resume`d (a reservation an earlier delivery never settled: status first, and made
again only when the provider says it never happened)."""

Answered = list[tuple[ProviderCall, ProviderOutcome]]
"""Calls with the provider's answers, in the order they were put."""


@dataclass(frozen=True, slots=True)
class Ask:
    """One question for a provider: a call and how to put it."""

    call: ProviderCall
    how: How = "call"


class Answers:
    """The provider's answers obtained while handling one message, by question.

    A decision made again (after a lost race, or after asking for statuses) puts the
    same questions (keys are deterministic) and gets these answers instead of a
    second round trip, so whatever the provider did is applied to the state that
    won, and nothing is asked twice.
    """

    def __init__(self) -> None:
        self._answers: dict[tuple[How, str, str], tuple[ProviderCall, ProviderOutcome]] = {}

    @staticmethod
    def _key(ask: Ask) -> tuple[How, str, str]:
        return (ask.how, ask.call.operation, ask.call.idempotency_key)

    def get(self, ask: Ask) -> ProviderOutcome | None:
        found = self._answers.get(self._key(ask))
        return None if found is None else found[1]

    def put(self, ask: Ask, outcome: ProviderOutcome) -> None:
        self._answers[self._key(ask)] = (ask.call, outcome)

    def of(self, operation: str, how: How = "call") -> Answered:
        """The answers to one operation's calls (or status queries), in order."""
        return [
            answer
            for (asked, op, _), answer in self._answers.items()
            if asked == how and op == operation
        ]

    def to(self, asks: list[Ask]) -> Answered | None:
        """The answers to all of `asks`, in their order; None while one is missing."""
        answered: Answered = []
        for ask in asks:
            outcome = self.get(ask)
            if outcome is None:
                return None
            answered.append((ask.call, outcome))
        return answered
