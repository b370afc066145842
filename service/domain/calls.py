"""Provider calls a decision asks the service layer to make.

A call is data, not a coroutine: the domain says *what* to ask a provider and
under which idempotency key; the service layer makes the call (with timeout,
retries and the status query for unknown outcomes) and hands the typed outcome
back to the domain.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

CallOperation = Literal[
    "initiate",
    "update",
    "update_data",
    "delete",
    "authorize",
    "capture",
    "refund",
    "cancel",
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
    ref: str | None = None
    """What in the aggregate the call is for (e.g. the command id of a reserved
    operation), so its answer is applied to the right thing."""

    @property
    def moves_money(self) -> bool:
        return self.operation in ("authorize", "capture", "refund", "cancel")
