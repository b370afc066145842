"""Money moved at the provider without a command of ours, applied through the aggregate.

A merchant works in the provider's dashboard too, and the provider acts on its
own: Stripe cancels an authorization it held for seven days, a refund made in the
dashboard or one of ours that was `pending` settles (or fails) days later. Each
of these reaches us only as a webhook, and each is applied here with the same
rules as a command: one outbound event per change, nothing twice (the provider's
own object id names what was booked, so the several events Stripe sends about one
refund book it once), and the amount invariants kept (refunded ≤ captured;
statuses never move backwards).

Called from :func:`service.domain.notifications.apply_notification` for a payment the
webhook's session belongs to.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from service.domain import derived_ids as ids
from service.domain.bookings import record_cancel, record_refund
from service.domain.disputes import apply_dispute
from service.domain.failures import fail
from service.domain.model import HistoryEntry, Payment, PaymentCollection, PendingOperation, Refund
from service.domain.outcomes import ProviderOutcome
from service.domain.payment_operations import settle_pending
from service.domain.statuses import CollectionStatus

ProviderMoneyMeaning = Literal["refund_succeeded", "refund_pending", "refund_failed", "disputed"]
"""What a webhook can report beyond a session's authorization (see the port)."""

PROVIDER_COMMAND_PREFIX = "provider:"
"""`command_id` of what the provider did on its own: ``provider:<its object id>``."""

REFUND_FAILED_ACTION = "refund_failed"


def apply_provider_money_event(
    collection: PaymentCollection,
    *,
    event_id: str,
    meaning: str,
    amount: int | None,
    data: dict[str, Any],
    now: datetime,
) -> None:
    """Apply what the provider did to `collection.payment` in place (may do nothing)."""
    payment = collection.payment
    if payment is None:
        return
    if meaning == "canceled":
        _canceled_at_provider(collection, payment, event_id, now)
    elif meaning in ("refund_succeeded", "refund_pending", "refund_failed"):
        _refund_at_provider(collection, payment, event_id, meaning, amount, data, now)
    elif meaning == "disputed":
        apply_dispute(collection, event_id=event_id, amount=amount, data=data, now=now)


# -- cancel ---------------------------------------------------------------------------------


def _canceled_at_provider(
    collection: PaymentCollection, payment: Payment, event_id: str, now: datetime
) -> None:
    """The authorization was canceled at the provider (expiry, dashboard).

    A cancel of ours in flight is settled by the caller (the webhook is its
    answer); a payment with a capture cannot be canceled (the provider would not
    have either: a captured intent cannot be canceled at Stripe).
    """
    if payment.is_canceled or payment.captured_total > 0:
        return
    if any(p.operation in ("cancel", "capture") for p in payment.pending):
        # A cancel of ours: the caller settles it. A capture in flight: its own
        # outcome decides (a capture that succeeded first makes this cancel stale).
        return
    if collection.status not in (
        CollectionStatus.AUTHORIZED,
        CollectionStatus.PARTIALLY_AUTHORIZED,
    ):
        return
    record_cancel(collection, payment, causation_id=event_id, now=now)
    payment.history.append(
        HistoryEntry(
            at=now,
            action="cancel",
            command_id=event_id,
            outcome="canceled at the provider (authorization expired or canceled there)",
        )
    )


# -- refunds ----------------------------------------------------------------------------------


def _refund_at_provider(
    collection: PaymentCollection,
    payment: Payment,
    event_id: str,
    meaning: str,
    amount: int | None,
    data: dict[str, Any],
    now: datetime,
) -> None:
    refund_ref = data.get("refund_id")
    if not isinstance(refund_ref, str) or not refund_ref:
        return
    command_id = PROVIDER_COMMAND_PREFIX + refund_ref
    provider_key = data.get("provider_key")
    ours = _pending_refund(payment, provider_key)
    if meaning == "refund_pending":
        return  # not money yet: a pending refund of ours stays reserved, others wait
    if meaning == "refund_succeeded":
        if ours is not None:
            settle_pending(collection, ours, ProviderOutcome.succeeded(), now)
        elif isinstance(provider_key, str) and provider_key:
            return  # one of ours, booked when its call answered
        elif not _known(payment, command_id):
            _book_refund(collection, payment, event_id, command_id, amount, data, now)
        return
    # refund_failed
    message = _refund_failure(refund_ref, data)
    if ours is not None:
        # The amount goes back to refundable with the reservation; payment.failed.
        settle_pending(collection, ours, ProviderOutcome.failed(message, code="refund_failed"), now)
        return
    if _reversed(payment, command_id):
        return
    booked = _booked_refund(collection, payment, command_id, provider_key, amount)
    if booked is not None:
        _reverse_refund(collection, payment, booked, command_id, event_id, message, now)


def _refund_failure(refund_ref: str, data: dict[str, Any]) -> str:
    message = f"refund {refund_ref} failed at the provider"
    reason = data.get("failure_reason")
    if isinstance(reason, str) and reason:
        message += f": {reason}"
    return message


def _reverse_refund(
    collection: PaymentCollection,
    payment: Payment,
    booked: Refund,
    command_id: str,
    event_id: str,
    message: str,
    now: datetime,
) -> None:
    """A booked refund failed at the provider: the money is back, so unbook it; payment.failed."""
    payment.refunds.remove(booked)
    payment.history.append(
        HistoryEntry(
            at=now,
            action=REFUND_FAILED_ACTION,
            command_id=command_id,
            amount=booked.amount,
            outcome=f"refund {booked.id} reversed: {message}",
        )
    )
    fail(
        collection,
        operation="refund",
        reason="provider_error",
        message=message,
        retryable=False,
        causation_id=event_id,
        now=now,
        provider_id=payment.provider_id,
        amount=booked.amount,
        payment_id=payment.id,
        session_id=payment.session_id,
    )


def _pending_refund(payment: Payment, provider_key: Any) -> PendingOperation | None:
    if not isinstance(provider_key, str) or not provider_key:
        return None
    return next(
        (p for p in payment.pending if p.operation == "refund" and p.provider_key == provider_key),
        None,
    )


def _known(payment: Payment, command_id: str) -> bool:
    """Booked already, or booked and reversed: a later event about it changes nothing."""
    return any(r.command_id == command_id for r in payment.refunds) or _reversed(
        payment, command_id
    )


def _reversed(payment: Payment, command_id: str) -> bool:
    return any(
        h.action == REFUND_FAILED_ACTION and h.command_id == command_id for h in payment.history
    )


def _booked_refund(
    collection: PaymentCollection,
    payment: Payment,
    command_id: str,
    provider_key: Any,
    amount: int | None,
) -> Refund | None:
    """The booked refund a failure is about: by the provider's id, by our key, by amount."""
    for refund in payment.refunds:
        if refund.command_id == command_id:
            return refund
    if not isinstance(provider_key, str) or not provider_key:
        return None
    for refund in reversed(payment.refunds):
        if ids.provider_key(collection.id, "refund", refund.command_id) == provider_key:
            return refund
    # A refund of ours booked under a key scheme we cannot recompute: the latest
    # one of that amount (amounts are what the invariants are about).
    return next(
        (
            r
            for r in reversed(payment.refunds)
            if r.amount == amount and not r.command_id.startswith(PROVIDER_COMMAND_PREFIX)
        ),
        None,
    )


def _book_refund(
    collection: PaymentCollection,
    payment: Payment,
    event_id: str,
    command_id: str,
    amount: int | None,
    data: dict[str, Any],
    now: datetime,
) -> None:
    """A refund made outside the service (the dashboard), if it fits what is refundable."""
    if amount is None or amount <= 0:
        return
    refundable = payment.captured_total - payment.refunded_total - payment.pending_refund
    if amount > refundable:
        # More than was captured and not refunded: not money the customer paid us
        # (e.g. the uncaptured rest of a partial capture, which some Stripe
        # versions show as a refund), or a refund whose capture we have not heard
        # of yet. Booking any of it would break refunded ≤ captured.
        payment.history.append(
            HistoryEntry(
                at=now,
                action="refund",
                command_id=command_id,
                amount=amount,
                outcome=f"not booked: refund of {amount} at the provider exceeds the "
                f"{refundable} refundable",
            )
        )
        return
    booked = amount
    reason = data.get("reason")
    record_refund(
        collection,
        payment,
        command_id=command_id,
        amount=booked,
        reason=reason[:255] if isinstance(reason, str) and reason else None,
        causation_id=event_id,
        now=now,
    )
    payment.history.append(
        HistoryEntry(
            at=now,
            action="refund",
            command_id=command_id,
            amount=booked,
            outcome="refunded at the provider",
        )
    )
