"""The payment provider port (after Medusa's payment provider interface).

Every call gets a :class:`~service.domain.calls.ProviderCall`, which carries the
idempotency key, and returns a typed :class:`~service.domain.outcomes.ProviderOutcome`.
Adapters do not raise for provider answers (a decline is an outcome, not an
exception); the service layer bounds each call with a timeout and treats an
exception from an adapter as an unknown outcome.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from service.domain.calls import ProviderCall
from service.domain.outcomes import ProviderOutcome
from service.domain.webhooks import Meaning

# What a webhook can mean is the domain's vocabulary; adapters map onto it.
WebhookMeaning = Meaning
"""`refund_*` and `disputed` carry the provider's object in `WebhookAction.data`:
`refund_id`, `provider_key` (ours: the call's idempotency key), `failure_reason`,
`reason`; `dispute_id`, `status` (open/won/lost), `provider_status`, `reason`,
`evidence_due_by` (datetime)."""


@dataclass(frozen=True, slots=True)
class WebhookAction:
    """What a provider webhook means for one session, as the adapter reads it."""

    meaning: WebhookMeaning
    session_id: str | None
    cart_id: str | None
    provider_reference: str
    """The provider's own id of the object (e.g. the PaymentIntent id)."""
    amount: int | None = None
    data: dict[str, Any] = field(default_factory=dict)
    action: dict[str, Any] | None = None
    message: str = ""


@dataclass(frozen=True, slots=True)
class SavedPaymentMethod:
    id: str
    type: str
    last4: str | None = None


class WebhookVerificationError(Exception):
    """The webhook's signature does not verify; answer 400 and publish nothing."""


@runtime_checkable
class WebhookSignatureCheck(Protocol):
    """Optional for providers that take webhooks: the signature alone, no age limit.

    The consumer of `payment.provider_webhook` re-verifies what the HTTP side
    wrote (the topic is not proof), long after it arrived; a provider without this
    method is checked there with ``verify_webhook`` at the stored receipt time.
    """

    def verify_webhook_signature(self, headers: Mapping[str, str], body: bytes) -> None:
        """Raise :class:`WebhookVerificationError` unless the signature verifies."""
        ...


@runtime_checkable
class PaymentProvider(Protocol):
    """One payment provider. All calls are idempotent under `call.idempotency_key`."""

    id: str
    capture_on_authorize: bool

    async def initiate(self, call: ProviderCall) -> ProviderOutcome:
        """Create the provider-side session (Medusa's initiatePayment)."""
        ...

    async def update(self, call: ProviderCall) -> ProviderOutcome:
        """Amount, currency or context changed (updatePayment)."""
        ...

    async def update_data(self, call: ProviderCall) -> ProviderOutcome:
        """New customer data for the session (updatePaymentData)."""
        ...

    async def delete(self, call: ProviderCall) -> ProviderOutcome:
        """The session is no longer wanted (deletePayment)."""
        ...

    async def authorize(self, call: ProviderCall) -> ProviderOutcome:
        """Authorize the session (authorizePayment); may also capture."""
        ...

    async def get_status(self, call: ProviderCall) -> ProviderOutcome:
        """What became of `call` (by its idempotency key): asked after an unknown outcome."""
        ...

    async def retrieve(self, call: ProviderCall) -> ProviderOutcome:
        """The provider's current data for the session or payment (retrievePayment)."""
        ...

    async def payment_data(self, call: ProviderCall) -> dict[str, Any]:
        """The data to keep on a new payment (getPaymentData)."""
        ...

    async def capture(self, call: ProviderCall) -> ProviderOutcome: ...

    async def refund(self, call: ProviderCall) -> ProviderOutcome: ...

    async def cancel(self, call: ProviderCall) -> ProviderOutcome: ...

    async def list_payment_methods(self, customer_id: str) -> list[SavedPaymentMethod]:
        """Saved payment methods (optional: providers without them return [])."""
        ...

    def verify_webhook(self, headers: Mapping[str, str], body: bytes, now: datetime) -> None:
        """Raise :class:`WebhookVerificationError` unless the signature verifies."""
        ...

    def interpret_webhook(self, headers: Mapping[str, str], payload: str) -> WebhookAction | None:
        """What a verified webhook means, or None when it means nothing to us."""
        ...

    async def close(self) -> None: ...
