"""The message bus: one registry entry per inbound event type, after cosmicpython's.

Each :class:`Route` declares, in one place, everything the consumer and the service
layer need to know about one event type:

- `order`: the key whose events are handled one after another, in partition order
  (a cart's, a payment's); different keys are handled concurrently;
- `prefetch_cart` / `prefetch_payment`: what the batch loads for it in one query up
  front, and `claim`, the idempotency claim of an admin command taken up front;
- `command`: how the validated event becomes a domain command;
- `handle`: the handler (`service/handlers.py`).

Adding an inbound event type is a schema (`schemas/topics.py`), an entry here, a
handler and the aggregate's decision; `tests/unit/service/test_bus.py` fails when a
topic has no entry.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from schemas.inbound import (
    AdminCancel,
    AdminCapture,
    AdminRefund,
    CartUpdated,
    CheckoutCompleted,
    ProviderWebhook,
)
from schemas.topics import (
    ADMIN_PAYMENT_CANCEL,
    ADMIN_PAYMENT_CAPTURE,
    ADMIN_PAYMENT_REFUND,
    CART_UPDATED,
    CHECKOUT_COMPLETED,
    PAYMENT_PROVIDER_WEBHOOK,
)
from service.domain import commands
from service.domain.capabilities import LENIENT, Capabilities
from service.handlers import HandleResult, PaymentService
from service.ports.providers import InstalledProviders

D = TypeVar("D", bound=BaseModel)
C = TypeVar("C")


@dataclass(frozen=True, slots=True)
class Inbound(Generic[D]):
    """A validated inbound event: its id, its data, and the key that signed it."""

    event_id: str
    data: D
    key_id: str | None = None
    """The admin key id whose signature verified (admin commands)."""


@dataclass(frozen=True, slots=True)
class Context:
    """What turning an event into a command may read: the time and the providers."""

    now: datetime
    providers: InstalledProviders


class Guard(Enum):
    """What must verify before an event of a type is handled (else `unauthorized`)."""

    NONE = "none"
    ADMIN_SIGNATURE = "admin_signature"
    """The `payments-signature` header: HMAC of the value with an admin key."""
    PROVIDER_SIGNATURE = "provider_signature"
    """The provider's own signature over the stored webhook (the topic is not proof)."""


@dataclass(frozen=True, slots=True)
class Route(Generic[D, C]):
    """How one inbound event type is ordered, prefetched, commanded and handled."""

    event_type: str
    data: type[D]
    order: Callable[[D], str]
    command: Callable[[Inbound[D], Context], C]
    handle: Callable[[PaymentService, C], Awaitable[HandleResult]]
    guard: Guard = Guard.NONE
    prefetch_cart: Callable[[D], str] | None = None
    prefetch_payment: Callable[[D], str] | None = None
    claim: Callable[[Inbound[D]], tuple[str, str]] | None = None
    """(command id, fingerprint) claimed up front for the batch (admin commands)."""

    def ordering_key(self, inbound: Inbound[Any]) -> str:
        return self.order(inbound.data)


# -- commands from events -------------------------------------------------------------


def _update_cart(event: Inbound[CartUpdated], ctx: Context) -> commands.UpdateCart:
    data = event.data
    return commands.UpdateCart(
        event_id=event.event_id,
        cart_id=data.cart_id,
        region_id=data.region_id,
        currency_code=data.currency_code,
        amount=data.amount,
        enabled_providers=ctx.providers.enabled_for_region(data.region_id),
        now=ctx.now,
        version=data.version,
        email=data.email,
        customer=data.customer.model_dump(exclude_none=True) if data.customer else None,
        provider_id=data.provider_id,
        payment_data=data.payment_data,
        context=dict(data.context or {}),
    )


def _complete_checkout(
    event: Inbound[CheckoutCompleted], ctx: Context
) -> commands.CompleteCheckout:
    data = event.data
    return commands.CompleteCheckout(
        event_id=event.event_id,
        cart_id=data.cart_id,
        idempotency_key=data.idempotency_key,
        region_id=data.region_id,
        currency_code=data.currency_code,
        amount=data.amount,
        provider_id=data.provider_id,
        enabled_providers=ctx.providers.enabled_for_region(data.region_id),
        now=ctx.now,
        payment_data=dict(data.payment_data or {}),
        context=dict(data.context or {}),
        capabilities=_capabilities(ctx.providers, data.provider_id),
    )


def _capabilities(providers: InstalledProviders, provider_id: str) -> Capabilities:
    provider = providers.get(provider_id)
    return provider.capabilities if provider is not None else LENIENT


def _capture(event: Inbound[AdminCapture], ctx: Context) -> commands.CapturePayment:
    data = event.data
    return commands.CapturePayment(
        command_id=event.event_id,
        payment_id=data.payment_id,
        requested_by=data.requested_by,
        now=ctx.now,
        amount=data.amount,
        note=data.note,
        key_id=event.key_id,
    )


def _refund(event: Inbound[AdminRefund], ctx: Context) -> commands.RefundPayment:
    data = event.data
    return commands.RefundPayment(
        command_id=event.event_id,
        payment_id=data.payment_id,
        requested_by=data.requested_by,
        now=ctx.now,
        amount=data.amount,
        reason=data.reason,
        note=data.note,
        key_id=event.key_id,
    )


def _cancel(event: Inbound[AdminCancel], ctx: Context) -> commands.CancelPayment:
    data = event.data
    return commands.CancelPayment(
        command_id=event.event_id,
        payment_id=data.payment_id,
        requested_by=data.requested_by,
        now=ctx.now,
        note=data.note,
        key_id=event.key_id,
    )


def _apply_webhook(event: Inbound[ProviderWebhook], ctx: Context) -> commands.ApplyWebhook:
    data = event.data
    return commands.ApplyWebhook(
        event_id=event.event_id,
        provider_id=data.provider_id,
        headers=dict(data.headers),
        payload=data.payload,
        now=ctx.now,
    )


def _claim(operation: str) -> Callable[[Inbound[Any]], tuple[str, str]]:
    """An admin command's idempotency claim: its id and what it means (no clock needed)."""

    def claim(event: Inbound[Any]) -> tuple[str, str]:
        data = event.data
        amount = getattr(data, "amount", None)
        return event.event_id, commands.operation_fingerprint(operation, data.payment_id, amount)

    return claim


def _by_cart(data: CartUpdated | CheckoutCompleted) -> str:
    return f"cart:{data.cart_id}"


def _by_payment(data: AdminCapture | AdminRefund | AdminCancel) -> str:
    return f"payment:{data.payment_id}"


def _by_provider(data: ProviderWebhook) -> str:
    # Which cart a webhook is about is known only once its provider read it: the
    # webhooks of one provider are applied in their partition's order.
    return f"webhook:{data.provider_id}"


def _cart_id(data: CartUpdated | CheckoutCompleted) -> str:
    return data.cart_id


def _payment_id(data: AdminCapture | AdminRefund | AdminCancel) -> str:
    return data.payment_id


# -- the registry -----------------------------------------------------------------------

ROUTES: Mapping[str, Route[Any, Any]] = {
    route.event_type: route
    for route in (
        Route(
            CART_UPDATED,
            CartUpdated,
            order=_by_cart,
            command=_update_cart,
            handle=lambda service, command: service.cart_updated(command),
            prefetch_cart=_cart_id,
        ),
        Route(
            CHECKOUT_COMPLETED,
            CheckoutCompleted,
            order=_by_cart,
            command=_complete_checkout,
            handle=lambda service, command: service.checkout_completed(command),
            prefetch_cart=_cart_id,
        ),
        Route(
            ADMIN_PAYMENT_CAPTURE,
            AdminCapture,
            order=_by_payment,
            command=_capture,
            handle=lambda service, command: service.payment_command(command),
            prefetch_payment=_payment_id,
            claim=_claim("capture"),
            guard=Guard.ADMIN_SIGNATURE,
        ),
        Route(
            ADMIN_PAYMENT_REFUND,
            AdminRefund,
            order=_by_payment,
            command=_refund,
            handle=lambda service, command: service.payment_command(command),
            prefetch_payment=_payment_id,
            claim=_claim("refund"),
            guard=Guard.ADMIN_SIGNATURE,
        ),
        Route(
            ADMIN_PAYMENT_CANCEL,
            AdminCancel,
            order=_by_payment,
            command=_cancel,
            handle=lambda service, command: service.payment_command(command),
            prefetch_payment=_payment_id,
            claim=_claim("cancel"),
            guard=Guard.ADMIN_SIGNATURE,
        ),
        Route(
            PAYMENT_PROVIDER_WEBHOOK,
            ProviderWebhook,
            order=_by_provider,
            command=_apply_webhook,
            handle=lambda service, command: service.provider_webhook(command),
            guard=Guard.PROVIDER_SIGNATURE,
        ),
    )
}
"""Every inbound event type, by its type name (`schemas/topics.py`)."""


def route_for(event_type: str) -> Route[Any, Any]:
    """The registry entry of an inbound event type (KeyError: not an inbound type)."""
    return ROUTES[event_type]


async def dispatch(service: PaymentService, event_type: str, event: Inbound[Any]) -> HandleResult:
    """Handle one validated event: its command, then its handler."""
    route = route_for(event_type)
    command = route.command(event, Context(service.clock(), service.providers))
    return await route.handle(service, command)
