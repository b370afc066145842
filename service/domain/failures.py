"""Building `payment.failed` events, the one outbound event every operation shares."""

from __future__ import annotations

from datetime import datetime

from schemas.outbound import PaymentFailed
from schemas.topics import PAYMENT_FAILED
from service.domain.events import new_event
from service.domain.model import Operation, OutboxEvent, PaymentCollection


def fail(
    collection: PaymentCollection,
    *,
    operation: Operation,
    reason: str,
    message: str,
    retryable: bool,
    causation_id: str,
    now: datetime,
    provider_id: str | None = None,
    amount: int | None = None,
    payment_id: str | None = None,
    session_id: str | None = None,
    discriminator: str = "",
) -> OutboxEvent:
    """Record a `payment.failed` event in the collection's outbox.

    `discriminator` separates two failures with the same cause (the conflict
    answer to a reused command id must not take the id of the first answer).
    """
    data = PaymentFailed.model_validate(
        {
            "cart_id": collection.cart_id,
            "collection_id": collection.id,
            "provider_id": provider_id or collection.selected_provider_id or "system",
            "currency_code": collection.currency_code,
            "operation": operation,
            "reason": reason,
            "message": message,
            "retryable": retryable,
            "amount": amount,
            "payment_id": payment_id,
            "session_id": session_id,
        }
    )
    return new_event(
        collection,
        data,
        PAYMENT_FAILED,
        causation_id,
        now,
        discriminator=discriminator,
    )
