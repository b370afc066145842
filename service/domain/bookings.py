"""Money the books record as moved: a capture, a refund or a cancel, and the event announcing it.

Every path that books money — a capture command, capture on authorization, a capture
or refund reported by the provider's webhook, a refund command, a cancel by command or
at the provider — goes through these functions, so the record, the statuses and the
outbound event can never disagree between paths.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from schemas.outbound import PaymentCanceled, PaymentCaptured, PaymentRefunded
from schemas.topics import PAYMENT_CANCELED, PAYMENT_CAPTURED, PAYMENT_REFUNDED
from service.domain import derived_ids as ids
from service.domain.events import new_event
from service.domain.model import Capture, Payment, PaymentCollection, Refund
from service.domain.statuses import (
    CollectionStatus,
    SessionStatus,
    collection_transition,
    session_transition,
)


def payment_reference(collection: PaymentCollection, payment: Payment) -> dict[str, Any]:
    """The fields every event about this payment carries."""
    return {
        "cart_id": collection.cart_id,
        "collection_id": collection.id,
        "provider_id": payment.provider_id,
        "currency_code": payment.currency_code,
        "payment_id": payment.id,
    }


def record_capture(
    collection: PaymentCollection,
    payment: Payment,
    *,
    command_id: str,
    amount: int,
    causation_id: str,
    now: datetime,
    source: Literal["admin", "auto", "webhook"] = "admin",
    releases_rest: bool = False,
) -> Capture:
    """Book a capture, move the collection to (partially) captured, announce it.

    `releases_rest`: the capture was final at a provider that releases what is left
    of the authorization (Stripe without multicapture): the rest is booked as
    released, nothing is left to capture, and `payment.captured` says how much.
    """
    capture = Capture(
        id=ids.capture_id(payment.id, command_id),
        amount=amount,
        command_id=command_id,
        source=source,
        created_at=now,
    )
    payment.captures.append(capture)
    released = 0
    if releases_rest:
        released = max(0, payment.amount - payment.captured_total - payment.released_amount)
        payment.released_amount += released
    fully = payment.captured_total + payment.released_amount >= payment.amount
    target = CollectionStatus.COMPLETED if fully else CollectionStatus.PARTIALLY_CAPTURED
    if collection.status != target:
        collection.status = collection_transition(collection.status, target)
    new_event(
        collection,
        PaymentCaptured.model_validate(
            {
                **payment_reference(collection, payment),
                "capture_id": capture.id,
                "amount": capture.amount,
                "captured_total": payment.captured_total,
                "fully_captured": fully,
                **({"released_amount": released} if released else {}),
            }
        ),
        PAYMENT_CAPTURED,
        causation_id,
        now,
    )
    return capture


def record_refund(
    collection: PaymentCollection,
    payment: Payment,
    *,
    command_id: str,
    amount: int,
    reason: str | None,
    causation_id: str,
    now: datetime,
    reference: str | None = None,
) -> Refund:
    """Book a refund (money back) and announce it; a refund object the provider named
    before (accepted as pending) becomes this one."""
    refund = payment.refund_object(reference) if reference else None
    if refund is None:
        refund = Refund(
            id=ids.refund_id(payment.id, command_id),
            amount=amount,
            command_id=command_id,
            reason=reason,
            reference=reference,
            created_at=now,
        )
        payment.refunds.append(refund)
    refund.status = "succeeded"
    new_event(
        collection,
        PaymentRefunded.model_validate(
            {
                **payment_reference(collection, payment),
                "refund_id": refund.id,
                "amount": refund.amount,
                "refunded_total": payment.refunded_total,
                "reason": refund.reason,
            }
        ),
        PAYMENT_REFUNDED,
        causation_id,
        now,
    )
    return refund


def record_cancel(
    collection: PaymentCollection, payment: Payment, *, causation_id: str, now: datetime
) -> None:
    """Book the authorization as released: payment, session and collection canceled, announced."""
    payment.canceled_at = now
    session = collection.session_by_id(payment.session_id)
    if session is not None:
        session.status = session_transition(session.status, SessionStatus.CANCELED)
    collection.status = collection_transition(collection.status, CollectionStatus.CANCELED)
    event = new_event(
        collection,
        PaymentCanceled.model_validate(
            {**payment_reference(collection, payment), "canceled_at": now}
        ),
        PAYMENT_CANCELED,
        causation_id,
        now,
    )
    payment.canceled_event_id = event.id
    payment.canceled_event = event
