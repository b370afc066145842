"""Provider notifications (webhooks) applied with the same rules as any event.

A webhook reports something that already happened at the provider. It is
applied through the same transitions as the command that caused it, so a late
or repeated webhook never moves a status backwards, and a webhook that races an
admin capture settles that capture's reservation instead of adding a second one.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, cast

from schemas.topics import PAYMENT_PROVIDER_WEBHOOK
from service.domain.authorization import finish_authorization
from service.domain.bookings import record_capture
from service.domain.model import (
    Notification,
    Payment,
    PaymentCollection,
    PaymentSession,
    ProcessedEvent,
)
from service.domain.outcomes import ProviderOutcome
from service.domain.payment_operations import settle_pending
from service.domain.provider_events import apply_provider_money_event
from service.domain.results import Decision
from service.domain.statuses import SessionStatus

Meaning = Literal[
    "authorized",
    "captured",
    "failed",
    "requires_more",
    "canceled",
    # Issue 13: money moved at the provider outside our commands (provider_events).
    "refund_succeeded",
    "refund_pending",
    "refund_failed",
    "disputed",
]


def decide_notification(
    collection: PaymentCollection | None,
    event_id: str,
    notification: Notification,
    now: datetime,
) -> Decision:
    """A provider webhook for a cart (the unit of work's `decide`): applied, and its
    id recorded as consumed even when it changed nothing."""
    if collection is None:
        return Decision("ignored", note="no collection for the webhook's cart")
    if collection.has_processed(event_id):
        return Decision("duplicate", collection)
    changed = apply_notification(
        collection,
        event_id=event_id,
        meaning=cast(Meaning, notification.meaning),
        session_id=notification.session_id,
        provider_id=notification.provider_id,
        now=now,
        amount=notification.amount,
        data=notification.data,
        action=notification.action,
        message=notification.message,
    )
    note = "" if changed else "already recorded"
    return Decision("settled", collection, note=note, changed=changed)


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
        outcome = _authorization_outcome(
            meaning, session, amount=amount, data=data, action=action, message=message
        )
        if outcome is not None:
            finish_authorization(collection, session.id, outcome, event_id, now)
    elif payment.session_id == session.id:
        if meaning == "captured":
            _captured(collection, payment, event_id=event_id, amount=amount, now=now)
        elif meaning == "canceled":
            pending = next((p for p in payment.pending if p.operation == "cancel"), None)
            if pending is not None:
                settle_pending(collection, pending, ProviderOutcome.succeeded(), now)
    if collection.payment is not None and collection.payment.session_id == session.id:
        # What the provider did on its own (expiry, dashboard, refunds, disputes).
        apply_provider_money_event(
            collection, event_id=event_id, meaning=meaning, amount=amount, data=data, now=now
        )
    changed = collection.model_dump(mode="json", exclude={"updated_at"}) != before
    collection.processed.append(ProcessedEvent(id=event_id, type=PAYMENT_PROVIDER_WEBHOOK, at=now))
    collection.updated_at = now
    return changed


def _authorization_outcome(
    meaning: Meaning,
    session: PaymentSession,
    *,
    amount: int | None,
    data: dict[str, Any],
    action: dict[str, Any] | None,
    message: str,
) -> ProviderOutcome | None:
    """What a notification says about a session's authorization (None: nothing it may change)."""
    if meaning in ("authorized", "captured"):
        # The amount the provider reports holding, not the session's (the
        # cart may have changed since the authorization was asked for).
        return ProviderOutcome.succeeded(data, captured=meaning == "captured", amount=amount)
    if meaning == "requires_more" and session.status == SessionStatus.PENDING:
        return ProviderOutcome.requires_more(action or {}, data)
    if meaning == "failed" and session.status in (
        SessionStatus.PENDING,
        SessionStatus.REQUIRES_MORE,
    ):
        return ProviderOutcome.declined(message or "payment failed")
    return None


def _captured(
    collection: PaymentCollection,
    payment: Payment,
    *,
    event_id: str,
    amount: int | None,
    now: datetime,
) -> None:
    """The provider captured: the answer to a capture of ours, or one made elsewhere."""
    captures = [p for p in payment.pending if p.operation == "capture"]
    # Providers report the cumulative amount captured: settle the
    # reservation that brings the total to it, not just the first one.
    pending = next(
        (p for p in captures if amount is not None and payment.captured_total + p.amount == amount),
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
            record_capture(
                collection,
                payment,
                command_id=event_id,
                amount=extra,
                source="webhook",
                causation_id=event_id,
                now=now,
            )
