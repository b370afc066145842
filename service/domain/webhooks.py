"""Provider notifications (webhooks) applied with the same rules as any event.

A webhook reports something that already happened at the provider. It is
applied through the same transitions as the command that caused it, so a late
or repeated webhook never moves a status backwards, and a webhook that races an
admin capture settles that capture's reservation instead of adding a second one.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from schemas.outbound import PaymentCaptured
from service.domain import ids
from service.domain.checkout import finish_authorization
from service.domain.events import new_event
from service.domain.model import Capture, PaymentCollection, ProcessedEvent
from service.domain.outcomes import ProviderOutcome
from service.domain.payment_commands import settle_pending
from service.domain.statuses import CollectionStatus, SessionStatus, collection_transition

PROVIDER_WEBHOOK = "payment.provider_webhook"
Meaning = Literal["authorized", "captured", "failed", "requires_more", "canceled"]


def apply_notification(
    collection: PaymentCollection,
    *,
    event_id: str,
    meaning: Meaning,
    session_id: str | None,
    provider_id: str,
    now: datetime,
    amount: int | None = None,
    data: dict[str, Any] | None = None,
    action: dict[str, Any] | None = None,
    message: str = "",
) -> bool:
    """Apply one notification in place; return whether anything changed."""
    if collection.has_processed(event_id):
        return False
    session = (
        collection.session_by_id(session_id) if session_id else None
    ) or collection.session_for(provider_id)
    if session is None:
        return False
    before = collection.model_dump(mode="json", exclude={"updated_at"})
    payment = collection.payment
    data = data or {}

    if payment is None:
        if meaning in ("authorized", "captured"):
            finish_authorization(
                collection,
                session.id,
                ProviderOutcome.succeeded(data, captured=meaning == "captured"),
                event_id,
                now,
            )
        elif meaning == "requires_more" and session.status == SessionStatus.PENDING:
            finish_authorization(
                collection,
                session.id,
                ProviderOutcome.requires_more(action or {}, data),
                event_id,
                now,
            )
        elif meaning == "failed" and session.status in (
            SessionStatus.PENDING,
            SessionStatus.REQUIRES_MORE,
        ):
            finish_authorization(
                collection,
                session.id,
                ProviderOutcome.declined(message or "payment failed"),
                event_id,
                now,
            )
    elif payment.session_id == session.id:
        if meaning == "captured":
            captures = [p for p in payment.pending if p.operation == "capture"]
            # Providers report the cumulative amount captured: settle the
            # reservation that brings the total to it, not just the first one.
            pending = next(
                (
                    p
                    for p in captures
                    if amount is not None and payment.captured_total + p.amount == amount
                ),
                captures[0] if captures and amount is None else None,
            )
            if pending is not None:
                # Our own capture in flight: the webhook is its answer.
                settle_pending(collection, pending, ProviderOutcome.succeeded(), now)
            elif (
                not captures  # a capture of ours is in flight: its own answer settles it
                and amount is not None
                and amount > payment.captured_total
                and not payment.is_canceled
            ):
                extra = min(amount, payment.amount) - payment.captured_total
                if extra > 0:
                    capture = Capture(
                        id=ids.capture_id(payment.id, event_id),
                        amount=extra,
                        command_id=event_id,
                        source="webhook",
                        created_at=now,
                    )
                    payment.captures.append(capture)
                    fully = payment.captured_total >= payment.amount
                    target = (
                        CollectionStatus.COMPLETED if fully else CollectionStatus.PARTIALLY_CAPTURED
                    )
                    if collection.status != target:
                        collection.status = collection_transition(collection.status, target)
                    new_event(
                        collection,
                        PaymentCaptured.model_validate(
                            {
                                "cart_id": collection.cart_id,
                                "collection_id": collection.id,
                                "provider_id": payment.provider_id,
                                "currency_code": payment.currency_code,
                                "payment_id": payment.id,
                                "capture_id": capture.id,
                                "amount": extra,
                                "captured_total": payment.captured_total,
                                "fully_captured": fully,
                            }
                        ),
                        "payment.captured",
                        event_id,
                        now,
                    )
        elif meaning == "canceled":
            pending = next((p for p in payment.pending if p.operation == "cancel"), None)
            if pending is not None:
                settle_pending(collection, pending, ProviderOutcome.succeeded(), now)
    changed = collection.model_dump(mode="json", exclude={"updated_at"}) != before
    collection.processed.append(ProcessedEvent(id=event_id, type=PROVIDER_WEBHOOK, at=now))
    collection.updated_at = now
    return changed
