"""Typed answers of a payment provider, as the domain sees them.

A provider call ends in exactly one of these kinds. The distinction that matters
most for money is between a *failure* (the provider said no, or broke) and an
*unknown* outcome (timeout, lost connection): an unknown outcome may have moved
money, so it is never treated as a failure (contract promise 7).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class OutcomeKind(StrEnum):
    SUCCEEDED = "succeeded"
    """The operation took effect (authorized, captured, refunded, canceled...)."""
    REQUIRES_MORE = "requires_more"
    """The customer must act (e.g. 3-D Secure); `action` says what."""
    PENDING = "pending"
    """Accepted but not settled yet (e.g. Stripe `processing`)."""
    DECLINED = "declined"
    """The provider refused (card declined). Final for this attempt."""
    INVALID_DATA = "invalid_data"
    """The payment data given was not acceptable to the provider."""
    FAILED = "failed"
    """A non-transient provider error (bad request, misconfiguration)."""
    TRANSIENT = "transient"
    """A temporary error (rate limit, 5xx, connection refused): safe to retry."""
    UNKNOWN = "unknown"
    """No answer (timeout, lost response): the provider may have acted."""
    CANCELED = "canceled"
    """The provider reports the payment canceled."""


NOT_FOUND = "not_found"


@dataclass(frozen=True, slots=True)
class ProviderOutcome:
    """One answer from a provider call.

    `data` is the provider's public session/payment data to keep (never secrets);
    `captured` is set when the provider also captured (e.g. Stripe `succeeded`,
    or a provider configured to capture on authorization). `reference` is the
    provider's own id of the object the outcome is about (an authorization's
    PaymentIntent or hold, a refund's id): the books name provider objects by it and
    match them by it only, never by amount or recency.
    """

    kind: OutcomeKind
    data: dict[str, Any] = field(default_factory=dict)
    action: dict[str, Any] | None = None
    message: str = ""
    code: str | None = None
    captured: bool = False
    amount: int | None = None
    reference: str | None = None

    @property
    def is_final(self) -> bool:
        """True when retrying the same call cannot change the answer."""
        return self.kind not in (OutcomeKind.TRANSIENT, OutcomeKind.UNKNOWN)

    @classmethod
    def succeeded(
        cls,
        data: dict[str, Any] | None = None,
        *,
        captured: bool = False,
        amount: int | None = None,
        reference: str | None = None,
    ) -> ProviderOutcome:
        return cls(
            OutcomeKind.SUCCEEDED, data or {}, captured=captured, amount=amount, reference=reference
        )

    @classmethod
    def requires_more(
        cls, action: dict[str, Any], data: dict[str, Any] | None = None
    ) -> ProviderOutcome:
        return cls(OutcomeKind.REQUIRES_MORE, data or {}, action=action)

    @classmethod
    def pending(
        cls, data: dict[str, Any] | None = None, *, reference: str | None = None
    ) -> ProviderOutcome:
        return cls(OutcomeKind.PENDING, data or {}, reference=reference)

    @classmethod
    def declined(cls, message: str, code: str | None = None) -> ProviderOutcome:
        return cls(OutcomeKind.DECLINED, message=message, code=code)

    @classmethod
    def invalid_data(cls, message: str) -> ProviderOutcome:
        return cls(OutcomeKind.INVALID_DATA, message=message)

    @classmethod
    def failed(cls, message: str, code: str | None = None) -> ProviderOutcome:
        return cls(OutcomeKind.FAILED, message=message, code=code)

    @classmethod
    def transient(cls, message: str) -> ProviderOutcome:
        return cls(OutcomeKind.TRANSIENT, message=message)

    @classmethod
    def not_found(cls, message: str) -> ProviderOutcome:
        """A status answer: the provider has no trace of the operation, so it never
        took effect and is safe to make again. Transient, with code `not_found`,
        which tells it apart from a status query that merely failed."""
        return cls(OutcomeKind.TRANSIENT, message=message, code=NOT_FOUND)

    @property
    def is_not_found(self) -> bool:
        return self.kind == OutcomeKind.TRANSIENT and self.code == NOT_FOUND

    @classmethod
    def unknown(cls, message: str) -> ProviderOutcome:
        """No answer (a timeout, a lost connection); from a status query: the provider
        *could not tell* (an error, a key it no longer remembers) — never an outcome."""
        return cls(OutcomeKind.UNKNOWN, message=message)

    @classmethod
    def canceled(cls, data: dict[str, Any] | None = None) -> ProviderOutcome:
        return cls(OutcomeKind.CANCELED, data or {})
