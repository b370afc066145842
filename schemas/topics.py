"""The event-type registry: every event type, its topic and its `data` model.

Topic names equal event types, plus an optional deployment prefix (`prod.` →
`prod.cart.updated`). The one exception is the dead-letter topic `payments.dlq`,
whose events have type `payments.dead_letter`. Service code, the JSON Schema export
and the tests all read this table instead of spelling names out, so a topic cannot
be subscribed under one name and published under another.
"""

from __future__ import annotations

from typing import Any, Final

from pydantic import BaseModel

from schemas.dead_letter import DeadLetter
from schemas.envelope import CloudEvent
from schemas.inbound import (
    AdminCancel,
    AdminCapture,
    AdminRefund,
    CartUpdated,
    CheckoutCompleted,
    ProviderWebhook,
)
from schemas.outbound import (
    PaymentAuthorized,
    PaymentCanceled,
    PaymentCaptured,
    PaymentDisputed,
    PaymentFailed,
    PaymentRefunded,
    PaymentRequiresAction,
)

# Inbound event types (section 3).
CART_UPDATED: Final = "cart.updated"
CHECKOUT_COMPLETED: Final = "checkout.completed"
ADMIN_PAYMENT_CAPTURE: Final = "admin.payment.capture"
ADMIN_PAYMENT_REFUND: Final = "admin.payment.refund"
ADMIN_PAYMENT_CANCEL: Final = "admin.payment.cancel"
PAYMENT_PROVIDER_WEBHOOK: Final = "payment.provider_webhook"

# Outbound event types (section 4).
PAYMENT_AUTHORIZED: Final = "payment.authorized"
PAYMENT_REQUIRES_ACTION: Final = "payment.requires_action"
PAYMENT_FAILED: Final = "payment.failed"
PAYMENT_CAPTURED: Final = "payment.captured"
PAYMENT_REFUNDED: Final = "payment.refunded"
PAYMENT_CANCELED: Final = "payment.canceled"
PAYMENT_DISPUTED: Final = "payment.disputed"

# Dead letters (section 5): the topic name differs from the event type.
PAYMENTS_DEAD_LETTER: Final = "payments.dead_letter"
DLQ_TOPIC: Final = "payments.dlq"

ADMIN_COMMAND_TYPES: Final[frozenset[str]] = frozenset(
    {ADMIN_PAYMENT_CAPTURE, ADMIN_PAYMENT_REFUND, ADMIN_PAYMENT_CANCEL}
)
"""Event types that move money on command and must carry a `payments-signature` header."""

INBOUND_DATA_MODELS: Final[dict[str, type[BaseModel]]] = {
    CART_UPDATED: CartUpdated,
    CHECKOUT_COMPLETED: CheckoutCompleted,
    ADMIN_PAYMENT_CAPTURE: AdminCapture,
    ADMIN_PAYMENT_REFUND: AdminRefund,
    ADMIN_PAYMENT_CANCEL: AdminCancel,
    PAYMENT_PROVIDER_WEBHOOK: ProviderWebhook,
}
"""`data` model of every event type the service consumes (`parse_event` accepts these)."""

OUTBOUND_DATA_MODELS: Final[dict[str, type[BaseModel]]] = {
    PAYMENT_AUTHORIZED: PaymentAuthorized,
    PAYMENT_REQUIRES_ACTION: PaymentRequiresAction,
    PAYMENT_FAILED: PaymentFailed,
    PAYMENT_CAPTURED: PaymentCaptured,
    PAYMENT_REFUNDED: PaymentRefunded,
    PAYMENT_CANCELED: PaymentCanceled,
    PAYMENT_DISPUTED: PaymentDisputed,
}
"""`data` model of every `payment.*` event the service publishes (section 4)."""

ALL_DATA_MODELS: Final[dict[str, type[BaseModel]]] = {
    **INBOUND_DATA_MODELS,
    **OUTBOUND_DATA_MODELS,
    PAYMENTS_DEAD_LETTER: DeadLetter,
}
"""`data` model of every event type on any of the service's topics, dead letters included."""

EVENT_MODELS: Final[dict[str, type[CloudEvent[Any]]]] = {
    event_type: CloudEvent[data_model]  # type: ignore[valid-type]
    for event_type, data_model in ALL_DATA_MODELS.items()
}
"""The full envelope model of every event type, e.g. `CloudEvent[CartUpdated]`.

Parametrized once at import so validation never builds a model class on the hot path.
"""

EVENT_TYPE_BY_DATA_MODEL: Final[dict[type[BaseModel], str]] = {
    data_model: event_type for event_type, data_model in ALL_DATA_MODELS.items()
}
"""Inverse of `ALL_DATA_MODELS`: which event type a `data` model is published as."""

INBOUND_TOPICS: Final[tuple[str, ...]] = tuple(INBOUND_DATA_MODELS)
"""Unprefixed names of the topics the service consumes (equal to their event types)."""

OUTBOUND_TOPICS: Final[tuple[str, ...]] = tuple(OUTBOUND_DATA_MODELS)
"""Unprefixed names of the `payment.*` topics the service publishes to."""

ALL_TOPICS: Final[tuple[str, ...]] = (*INBOUND_TOPICS, *OUTBOUND_TOPICS, DLQ_TOPIC)
"""Unprefixed names of every topic the service uses, the DLQ included."""


def topic_for(event_type: str, prefix: str = "") -> str:
    """Return the topic that events of `event_type` are published on / consumed from.

    Raises `ValueError` for an event type that is not in the registry, so a typo
    fails at startup rather than creating a stray topic.
    """
    if event_type in (PAYMENTS_DEAD_LETTER, DLQ_TOPIC):
        return prefix + DLQ_TOPIC
    if event_type not in ALL_DATA_MODELS:
        raise ValueError(f"unknown event type {event_type!r}")
    return prefix + event_type


def event_type_for_topic(topic: str, prefix: str = "") -> str | None:
    """Return the event type carried on `topic`, or `None` if it is not one of ours."""
    if not topic.startswith(prefix):
        return None
    name = topic[len(prefix) :]
    if name == DLQ_TOPIC:
        return PAYMENTS_DEAD_LETTER
    if name == PAYMENTS_DEAD_LETTER or name not in ALL_DATA_MODELS:
        return None
    return name
