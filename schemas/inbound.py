"""`data` models of the events the service consumes (contract section 3).

Inbound models are tolerant readers (`extra="ignore"`): a producer may add fields
before the service knows them without its messages being dead-lettered. Everything the
contract does specify is checked here, so the service code downstream can trust the
types and never re-validate.
"""

from __future__ import annotations

from typing import Annotated, Final

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from schemas.ids import CartId, IdempotencyKey, PaymentId, ProviderId, RegionId
from schemas.json_object import JsonObject, compact_json_size
from schemas.money import Amount, CurrencyCode
from schemas.timestamps import Rfc3339DateTime

MAX_CONTEXT_BYTES: Final[int] = 16 * 1024
"""Upper bound of `context`, measured as its compact JSON encoding."""

MAX_REFUND_REASON_CHARS: Final[int] = 255
"""Upper bound of a refund `reason`."""

MAX_CART_VERSION: Final[int] = 2**63 - 1
"""Upper bound of a cart `version`: it must fit MongoDB's 64-bit integer."""


def _limit_context_size(context: JsonObject) -> JsonObject:
    size = compact_json_size(context)
    if size > MAX_CONTEXT_BYTES:
        raise ValueError(
            f"context is {size} bytes as compact JSON, the limit is {MAX_CONTEXT_BYTES} bytes"
        )
    return context


ProviderContext = Annotated[
    JsonObject,
    AfterValidator(_limit_context_size),
    Field(description="JSON object handed to providers; at most 16 KiB as compact JSON."),
]
"""Context handed to providers: a JSON object of at most 16 KiB as compact JSON."""

RefundReason = Annotated[str, StringConstraints(max_length=MAX_REFUND_REASON_CHARS)]
"""Free-text reason of a refund, at most 255 characters."""

CartVersion = Annotated[int, Field(strict=True, ge=0, le=MAX_CART_VERSION)]
"""The cart's revision; a strict non-negative integer."""

RequestedBy = Annotated[str, StringConstraints(min_length=1)]
"""Who issued an admin command (user or tool name), for the audit trail."""


class InboundEventData(BaseModel):
    """Base of every inbound `data` model: immutable, unknown fields ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class Customer(InboundEventData):
    """The customer of a cart, as far as the storefront knows it."""

    id: str | None = None
    email: str | None = None
    metadata: JsonObject | None = None


class CartUpdated(InboundEventData):
    """`cart.updated`: the cart's total, currency or provider choice changed.

    The service creates or updates the cart's payment collection and keeps one payment
    session per provider enabled in the region. `version` orders updates: one older
    than the last applied is stale and ignored.
    """

    cart_id: CartId
    region_id: RegionId
    currency_code: CurrencyCode
    amount: Amount
    version: CartVersion | None = None
    email: str | None = None
    customer: Customer | None = None
    provider_id: ProviderId | None = None
    payment_data: JsonObject | None = None
    context: ProviderContext | None = None


class CheckoutCompleted(InboundEventData):
    """`checkout.completed`: the customer placed the order; authorize the chosen session.

    It may arrive before any `cart.updated` of the cart (the topics are not ordered
    against each other), so it carries everything needed to create the collection.
    """

    cart_id: CartId
    idempotency_key: IdempotencyKey
    region_id: RegionId
    currency_code: CurrencyCode
    amount: Amount
    provider_id: ProviderId
    payment_data: JsonObject | None = None
    context: ProviderContext | None = None


class AdminCommand(InboundEventData):
    """Base of the signed admin commands; the CloudEvent `id` is the idempotency key."""

    payment_id: PaymentId
    requested_by: RequestedBy
    note: str | None = None


class AdminCapture(AdminCommand):
    """`admin.payment.capture`: capture `amount`, by default all that is left."""

    amount: Amount | None = None


class AdminRefund(AdminCommand):
    """`admin.payment.refund`: refund `amount`, by default all that is captured and left."""

    amount: Amount | None = None
    reason: RefundReason | None = None


class AdminCancel(AdminCommand):
    """`admin.payment.cancel`: cancel a payment of which nothing is captured."""


class ProviderWebhook(InboundEventData):
    """`payment.provider_webhook`: a verified provider webhook, written by the HTTP side.

    `payload` is the raw request body as text, so the provider adapter can interpret
    it exactly as the provider sent it.
    """

    provider_id: ProviderId
    received_at: Rfc3339DateTime
    headers: dict[str, str]
    payload: str
