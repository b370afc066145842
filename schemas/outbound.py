"""`data` models of the `payment.*` events the service publishes (contract section 4).

Outbound models forbid unknown fields: what the service publishes is exactly the
contract, and a typo in service code fails loudly when the event is built instead of
reaching consumers. Every payment event names the cart, collection, provider and
currency, so consumers can route on them without looking anything up.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Final, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, StrictBool, StringConstraints, model_validator

from schemas.ids import (
    CaptureId,
    CartId,
    CollectionId,
    PaymentId,
    ProviderId,
    RefundId,
    SessionId,
)
from schemas.inbound import RefundReason
from schemas.json_object import JsonObject
from schemas.money import Amount, CurrencyCode
from schemas.timestamps import Rfc3339DateTime

PaymentOperation: TypeAlias = Literal["authorize", "capture", "refund", "cancel"]
"""The operation a `payment.failed` event reports on."""


class FailureReason(StrEnum):
    """Every `reason` code of `payment.failed`; the values are fixed by the contract."""

    DECLINED = "declined"
    """The provider refused the card or the payment method."""
    PROVIDER_ERROR = "provider_error"
    """The provider failed or refused the operation for a reason other than a decline."""
    PROVIDER_UNAVAILABLE = "provider_unavailable"
    """Transient provider failure, retries exhausted."""
    AMOUNT_MISMATCH = "amount_mismatch"
    """The checkout's amount differs from the payment collection's."""
    CURRENCY_MISMATCH = "currency_mismatch"
    """The checkout's currency differs from the payment collection's."""
    PROVIDER_NOT_AVAILABLE = "provider_not_available"
    """Provider unknown or not enabled in the cart's region."""
    INVALID_PAYMENT_DATA = "invalid_payment_data"
    """The provider refused `payment_data` (an unknown payment method, a bad token)."""
    COLLECTION_CANCELED = "collection_canceled"
    """The cart's payment collection was canceled before this checkout."""
    PAYMENT_NOT_FOUND = "payment_not_found"
    """No payment has the command's `payment_id`."""
    NOT_AUTHORIZED = "not_authorized"
    """The payment is not (or no longer) authorized, so nothing can be captured."""
    AMOUNT_EXCEEDS_AUTHORIZED = "amount_exceeds_authorized"
    """The capture asks for more than is authorized and not yet captured."""
    PAYMENT_CANCELED = "payment_canceled"
    """The payment was canceled."""
    NOTHING_CAPTURED = "nothing_captured"
    """A refund of a payment of which nothing is captured."""
    AMOUNT_EXCEEDS_CAPTURED = "amount_exceeds_captured"
    """The refund asks for more than is captured and not yet refunded."""
    ALREADY_CAPTURED = "already_captured"
    """A cancel of a payment of which something is captured (refund it instead)."""
    IDEMPOTENCY_CONFLICT = "idempotency_conflict"
    """A command id or idempotency key seen before with different amount, provider or payment."""
    NEEDS_ATTENTION = "needs_attention"
    """The outcome cannot be known without a person (promise 9): the provider cannot
    tell, and the window in which a repeat is safe has passed. Never retryable."""
    OPERATION_IN_FLIGHT = "operation_in_flight"
    """Another operation on the payment is still in flight and its outcome decides
    the answer. Always retryable: send the same command again later."""


_R = FailureReason

REASONS_BY_OPERATION: Final[Mapping[PaymentOperation, frozenset[FailureReason]]] = {
    "authorize": frozenset(
        {
            _R.DECLINED,
            _R.PROVIDER_ERROR,
            _R.PROVIDER_UNAVAILABLE,
            _R.AMOUNT_MISMATCH,
            _R.CURRENCY_MISMATCH,
            _R.PROVIDER_NOT_AVAILABLE,
            _R.INVALID_PAYMENT_DATA,
            _R.COLLECTION_CANCELED,
            _R.IDEMPOTENCY_CONFLICT,
            _R.NEEDS_ATTENTION,
        }
    ),
    "capture": frozenset(
        {
            _R.PAYMENT_NOT_FOUND,
            _R.NOT_AUTHORIZED,
            _R.AMOUNT_EXCEEDS_AUTHORIZED,
            _R.PAYMENT_CANCELED,
            _R.PROVIDER_ERROR,
            _R.PROVIDER_UNAVAILABLE,
            _R.IDEMPOTENCY_CONFLICT,
            _R.NEEDS_ATTENTION,
            _R.OPERATION_IN_FLIGHT,
        }
    ),
    "refund": frozenset(
        {
            _R.PAYMENT_NOT_FOUND,
            _R.NOTHING_CAPTURED,
            _R.AMOUNT_EXCEEDS_CAPTURED,
            _R.PROVIDER_ERROR,
            _R.PROVIDER_UNAVAILABLE,
            _R.IDEMPOTENCY_CONFLICT,
            _R.NEEDS_ATTENTION,
            _R.OPERATION_IN_FLIGHT,
        }
    ),
    "cancel": frozenset(
        {
            _R.PAYMENT_NOT_FOUND,
            _R.ALREADY_CAPTURED,
            _R.PROVIDER_ERROR,
            _R.PROVIDER_UNAVAILABLE,
            _R.IDEMPOTENCY_CONFLICT,
            _R.NEEDS_ATTENTION,
            _R.OPERATION_IN_FLIGHT,
        }
    ),
}
"""Which reasons the contract allows for each operation; `PaymentFailed` enforces it."""

RETRYABLE_BY_REASON: Final[Mapping[FailureReason, bool]] = {
    _R.NEEDS_ATTENTION: False,
    _R.OPERATION_IN_FLIGHT: True,
}
"""Reasons whose `retryable` the contract fixes; `PaymentFailed` enforces it. For the
others the service says case by case whether the same request may succeed later."""


class OutboundEventData(BaseModel):
    """Base of every outbound `data` model: immutable, unknown fields forbidden."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class PaymentEventData(OutboundEventData):
    """The fields every `payment.*` event carries."""

    cart_id: CartId
    collection_id: CollectionId
    provider_id: ProviderId
    currency_code: CurrencyCode


class PaymentAuthorized(PaymentEventData):
    """`payment.authorized`: the session is authorized and a payment was created."""

    payment_id: PaymentId
    session_id: SessionId
    amount: Amount
    authorized_at: Rfc3339DateTime


class PaymentRequiresAction(PaymentEventData):
    """`payment.requires_action`: the customer must act (e.g. 3-D Secure) before authorizing.

    `action` is the provider's description of what to do, passed through unchanged.
    """

    session_id: SessionId
    amount: Amount
    action: JsonObject


class PaymentFailed(PaymentEventData):
    """`payment.failed`: an authorize, capture, refund or cancel did not happen.

    `retryable` tells the consumer whether sending the same request again may succeed.

    A command naming a payment that does not exist (`payment_not_found`) belongs to
    no cart, so only then are `cart_id`, `collection_id`, `provider_id` and
    `currency_code` null; the event's Kafka key and subject are the payment id.
    """

    cart_id: CartId | None  # type: ignore[assignment]
    collection_id: CollectionId | None  # type: ignore[assignment]
    provider_id: ProviderId | None  # type: ignore[assignment]
    currency_code: CurrencyCode | None  # type: ignore[assignment]
    operation: PaymentOperation
    reason: FailureReason
    message: str
    retryable: StrictBool
    amount: Amount | None = None
    payment_id: PaymentId | None = None
    session_id: SessionId | None = None

    @model_validator(mode="after")
    def _reason_fits_operation(self) -> PaymentFailed:
        if self.reason not in REASONS_BY_OPERATION[self.operation]:
            raise ValueError(
                f"reason {self.reason.value!r} is not a reason of operation {self.operation!r}"
            )
        unknown_cart = self.cart_id is None or self.collection_id is None
        if unknown_cart and self.reason not in (
            FailureReason.PAYMENT_NOT_FOUND,
            FailureReason.IDEMPOTENCY_CONFLICT,
        ):
            raise ValueError("cart_id and collection_id are required unless the payment is unknown")
        fixed = RETRYABLE_BY_REASON.get(self.reason)
        if fixed is not None and self.retryable is not fixed:
            raise ValueError(f"reason {self.reason.value!r} is always retryable={fixed}")
        return self


class PaymentCaptured(PaymentEventData):
    """`payment.captured`: `amount` was captured; `captured_total` is the running sum.

    `released_amount` is present when this capture released the rest of the
    authorization, at a provider that allows one capture only: that part of the
    authorization can no longer be captured.
    """

    payment_id: PaymentId
    capture_id: CaptureId
    amount: Amount
    captured_total: Amount
    fully_captured: StrictBool
    released_amount: Amount | None = None


class PaymentRefunded(PaymentEventData):
    """`payment.refunded`: `amount` was refunded; `refunded_total` is the running sum."""

    payment_id: PaymentId
    refund_id: RefundId
    amount: Amount
    refunded_total: Amount
    reason: RefundReason | None = None


class PaymentCanceled(PaymentEventData):
    """`payment.canceled`: the payment was canceled before anything was captured."""

    payment_id: PaymentId
    canceled_at: Rfc3339DateTime


DisputeStatus: TypeAlias = Literal["open", "won", "lost"]
"""Where a dispute (chargeback) stands: `open` until the card network decides."""


class PaymentDisputed(PaymentEventData):
    """`payment.disputed`: the customer disputed the payment with their bank.

    Published when a dispute opens and on each change of `status`. `reason` is the
    provider's own code (Stripe: `fraudulent`, `product_not_received`, …);
    `evidence_due_by` is when the merchant's evidence must be in, where the
    provider says.
    """

    payment_id: PaymentId
    dispute_id: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    amount: Amount
    status: DisputeStatus
    reason: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    evidence_due_by: Rfc3339DateTime | None = None
