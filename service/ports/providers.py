"""The payment provider port (after Medusa's payment provider interface).

Every call gets a :class:`~service.domain.calls.ProviderCall`, which carries the
idempotency key, and returns a typed :class:`~service.domain.outcomes.ProviderOutcome`.
Adapters do not raise for provider answers (a decline is an outcome, not an
exception); the only exception they raise by design is :class:`ProviderUnavailable`.
The service layer bounds each call with a timeout and treats an exception from an
adapter (that one, or a bug) as an unknown outcome.

An adapter subclasses :class:`PaymentProvider` and implements every method that
has no default here; the service asks the port, never the adapter, what it can do.
The handlers reach the adapters through :class:`InstalledProviders`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, TypeAlias, runtime_checkable

from service.domain.calls import CallOperation, ProviderCall
from service.domain.capabilities import LENIENT, Capabilities
from service.domain.model import Meaning, Notification
from service.domain.outcomes import ProviderOutcome

# What a webhook can mean is the domain's vocabulary; adapters map onto it.
WebhookMeaning: TypeAlias = Meaning
"""`refund_*` and `disputed` carry the provider's object in `WebhookAction.data`:
`refund_id`, `provider_key` (ours: the call's idempotency key), `failure_reason`,
`reason`; `dispute_id`, `status` (open/won/lost), `provider_status`, `reason`,
`evidence_due_by` (datetime)."""


@dataclass(frozen=True, slots=True)
class WebhookAction:
    """A provider fact: what one of its objects is now, as the adapter reads a webhook
    (or, for the audit, the object itself).

    `provider_reference` names the authorization object the fact is about (Stripe:
    the PaymentIntent), also for a refund or a dispute of it; the books match facts
    to what they hold by these ids only. `amount` is, by `meaning`: `authorized`, the
    amount held (capturable); `captured`, the amount captured so far in all
    (cumulative: Stripe's `amount_received`); a refund's or a dispute's own amount.
    `capturable` is what the provider still lets be captured (0 once a final partial
    capture released the rest), where it says. `event_id` is the provider's own id of
    the event (Stripe `evt_…`): a replay of the same signed event under another
    envelope id is recognised by it; None for facts the audit read.
    """

    meaning: WebhookMeaning
    session_id: str | None
    cart_id: str | None
    provider_reference: str
    """The provider's own id of the object (e.g. the PaymentIntent id)."""
    amount: int | None = None
    data: dict[str, Any] = field(default_factory=dict)
    action: dict[str, Any] | None = None
    message: str = ""
    event_id: str | None = None
    capturable: int | None = None

    def notification(self, provider_id: str) -> Notification:
        """What the aggregate is told (`PaymentCollection.notify`)."""
        return Notification(
            meaning=self.meaning,
            provider_id=provider_id,
            session_id=self.session_id,
            reference=self.provider_reference or None,
            event_id=self.event_id,
            amount=self.amount,
            capturable=self.capturable,
            data=dict(self.data),
            action=self.action,
            message=self.message,
        )


@dataclass(frozen=True, slots=True)
class SavedPaymentMethod:
    id: str
    type: str
    last4: str | None = None


class ProviderUnavailable(Exception):
    """The provider (or what the adapter keeps it in) could not be reached or failed
    to answer. From a call it is an unknown outcome (the provider may have acted); from
    anything else (looking up a webhook's cart) the work is retried."""


class WebhookVerificationError(Exception):
    """The webhook's signature does not verify; answer 400 and publish nothing."""


@runtime_checkable
class PaymentProvider(Protocol):
    """One payment provider. All calls are idempotent under `call.idempotency_key`.

    Adapters subclass it explicitly, which gives them the default implementations
    (:meth:`resolve_webhook`) and has mypy check that none of the rest is missing.
    """

    id: str
    capture_on_authorize: bool
    capabilities: Capabilities = LENIENT
    """What the provider allows (`service/domain/capabilities.py`); a payment keeps
    its provider's as they were when it was authorized."""

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
        """What became of `call` (by its idempotency key): asked after an unknown outcome.

        Three kinds of answer, never more: *found* (the operation's outcome:
        succeeded, declined, failed, pending…, with `reference` where the provider
        names the object), *not found* (:meth:`ProviderOutcome.not_found`: the provider
        positively has no trace of it, so it never took effect), or *could not tell*
        (:meth:`ProviderOutcome.unknown`): an error of the query itself (a timeout, an
        authentication or configuration error after a key rotation, an object the
        provider no longer shows) is never an outcome of the operation.
        """
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

    def verify_stored_webhook(
        self, headers: Mapping[str, str], body: bytes, received_at: datetime
    ) -> None:
        """Verify again a webhook the HTTP side stored on `payment.provider_webhook`.

        The consumer asks this where it applies the webhook (the topic is not
        proof), maybe long after it arrived. The default is :meth:`verify_webhook`
        at the stored receipt time; a provider whose signature alone proves the
        bytes are its own (Stripe) checks that without an age limit, so a
        redelivery or a dead letter sent back days later still verifies.
        """
        self.verify_webhook(headers, body, received_at)

    def interpret_webhook(self, headers: Mapping[str, str], payload: str) -> WebhookAction | None:
        """What a verified webhook means, or None when it means nothing to us."""
        ...

    async def resolve_webhook(
        self, headers: Mapping[str, str], payload: str
    ) -> WebhookAction | None:
        """:meth:`interpret_webhook`, completed by asking the provider where the event
        lacks what we need (Stripe: a dispute names only the PaymentIntent, whose
        metadata names the cart); what the consumer of the webhook topic applies.

        The default asks nothing: for providers whose events name the cart.
        Raising makes the consumer retry the webhook (and dead-letter it in the end).
        """
        return self.interpret_webhook(headers, payload)

    async def read_objects(self, call: ProviderCall) -> list[WebhookAction]:
        """The provider's objects behind a payment as they are now, as facts: its
        authorization (with what is captured and capturable), every refund, every
        dispute; `event_id` None. The audit sweep applies them like webhooks, so what
        a webhook never said (a dashboard refund, a dispute) still reaches the books.

        `call` names the payment (`data` holds what the provider answered for it).
        The default reads nothing: for providers whose books are ours (manual).
        Raises :class:`ProviderUnavailable` when the provider cannot be read.
        """
        return []

    async def close(self) -> None: ...


def operation_method(
    provider: PaymentProvider, operation: CallOperation
) -> Callable[[ProviderCall], Awaitable[ProviderOutcome]]:
    """The port method that makes a call of `operation` (`ProviderCall.operation`): each
    operation is the port method of the same name."""
    method: Callable[[ProviderCall], Awaitable[ProviderOutcome]] = getattr(provider, operation)
    return method


class InstalledProviders(Protocol):
    """The providers the service may call (the registry, see adapters.providers)."""

    def get(self, provider_id: str) -> PaymentProvider | None:
        """The installed provider with this id, or None."""
        ...

    def enabled_for_region(self, region_id: str) -> tuple[str, ...]:
        """The ids of the providers a region may use, in its order."""
        ...
