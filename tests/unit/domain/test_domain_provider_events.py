"""Issue 13: money moved at the provider without our command, applied through the aggregate.

Cancels the provider made (authorization expiry, dashboard), refunds made outside
the service, refunds of ours that were pending and then succeed or fail, and
disputes. Each: the right event once, repeats and other events about the same
provider object change nothing, invariants kept.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from domain_testkit import (
    LATER,
    authorized_collection,
    capture,
    data_of,
    payment_id_of,
    refund,
    run_command,
    types_of,
    validate_outbox,
)

from service.domain import derived_ids as ids
from service.domain.model import Meaning, PaymentCollection
from service.domain.outcomes import ProviderOutcome
from service.domain.payment_operations import finish_payment_command
from service.domain.statuses import CollectionStatus
from tests.unit.domain.domain_testkit import apply_notification, begin_payment_command


def _notify(
    collection: PaymentCollection,
    meaning: Meaning,
    event_id: str,
    *,
    amount: int | None = None,
    **data: Any,
) -> bool:
    # Every fact names its object: here the payment's (its session), as a provider's does.
    session_id = collection.payment.session_id if collection.payment else None
    return apply_notification(
        collection,
        event_id=event_id,
        meaning=meaning,
        session_id=session_id,
        provider_id="sandbox",
        now=LATER,
        amount=amount,
        data=data,
    )


def _captured(amount: int = 5000) -> PaymentCollection:
    collection = authorized_collection()
    _, collection = run_command(collection, capture("cmd_capture", payment_id_of(collection)))
    assert collection.payment is not None and collection.payment.captured_total == amount
    return collection


def _new_types(collection: PaymentCollection, before: int) -> list[str]:
    return types_of(collection.events[before:])


# -- cancel ---------------------------------------------------------------------------------


def test_cancel_at_the_provider_is_applied_once_and_not_after_a_capture() -> None:
    collection = authorized_collection()
    before = len(collection.events)
    assert _notify(collection, "canceled", "evt_expired")
    assert _new_types(collection, before) == ["payment.canceled"]
    assert not _notify(collection, "canceled", "evt_expired_again")  # already canceled
    assert _new_types(collection, before) == ["payment.canceled"]
    validate_outbox(collection)

    captured = _captured()
    assert not _notify(captured, "canceled", "evt_late_cancel")
    assert captured.status == CollectionStatus.COMPLETED


# -- refunds ----------------------------------------------------------------------------------


def test_refund_made_in_the_dashboard_is_booked_once_across_its_events() -> None:
    collection = _captured()
    before = len(collection.events)
    # Pending is not money back: kept as the refund object it is, and announced when
    # it succeeds.
    assert _notify(collection, "refund_pending", "evt_1", amount=1500, refund_id="re_1")
    assert _new_types(collection, before) == []
    assert _notify(collection, "refund_succeeded", "evt_2", amount=1500, refund_id="re_1")
    # charge.refunded and refund.updated about the same refund: booked once.
    assert not _notify(collection, "refund_succeeded", "evt_3", amount=1500, refund_id="re_1")
    assert collection.payment is not None
    assert collection.payment.refunded_total == 1500
    (refunded,) = [e for e in collection.events[before:]]
    assert refunded.type == "payment.refunded"
    assert data_of(refunded)["refunded_total"] == 1500
    validate_outbox(collection)


def test_refund_beyond_what_is_refundable_is_kept_not_booked() -> None:
    """A refund the books cannot hold yet (its capture is not booked: Stripe does not
    order its webhooks) is kept, never dropped, and booked when it fits."""
    collection = _captured()
    _notify(collection, "refund_succeeded", "evt_1", amount=4000, refund_id="re_1")
    before = len(collection.events)
    assert _notify(collection, "refund_succeeded", "evt_2", amount=4000, refund_id="re_2")
    assert collection.payment is not None
    assert collection.payment.refunded_total == 4000  # refunded ≤ captured
    assert _new_types(collection, before) == []
    [parked] = collection.parked
    assert parked.notification.data["refund_id"] == "re_2"


def _pending_refund(collection: PaymentCollection, amount: int) -> tuple[PaymentCollection, str]:
    """An admin refund whose provider answer was `pending` (reserved, not booked)."""
    cmd = refund("cmd_refund", payment_id_of(collection), amount)
    decision = begin_payment_command(collection, cmd)
    (call,) = decision.calls
    collection = finish_payment_command(
        decision.collection, cmd, ProviderOutcome.pending({"id": "re_ours"})
    )
    assert collection.payment is not None
    assert collection.payment.refunded_total == 0
    assert collection.payment.pending_refund == amount
    return collection, call.idempotency_key


def test_pending_refund_of_ours_is_booked_when_it_succeeds() -> None:
    collection, key = _pending_refund(_captured(), 2000)
    before = len(collection.events)
    assert _notify(
        collection, "refund_succeeded", "evt_ok", amount=2000, refund_id="re_ours", provider_key=key
    )
    assert collection.payment is not None
    assert (collection.payment.refunded_total, collection.payment.pending_refund) == (2000, 0)
    assert _new_types(collection, before) == ["payment.refunded"]
    assert not _notify(
        collection,
        "refund_succeeded",
        "evt_ok2",
        amount=2000,
        refund_id="re_ours",
        provider_key=key,
    )
    assert collection.payment.refunded_total == 2000


def test_failed_refund_of_ours_gives_the_amount_back_and_publishes_failed() -> None:
    collection, key = _pending_refund(_captured(), 2000)
    before = len(collection.events)
    assert _notify(
        collection,
        "refund_failed",
        "evt_failed",
        amount=2000,
        refund_id="re_ours",
        provider_key=key,
        failure_reason="expired_or_canceled_card",
    )
    assert collection.payment is not None
    assert (collection.payment.refunded_total, collection.payment.pending_refund) == (0, 0)
    (failed,) = collection.events[before:]
    assert failed.type == "payment.failed"
    assert data_of(failed)["operation"] == "refund"
    assert data_of(failed)["reason"] == "provider_error"
    assert "expired_or_canceled_card" in data_of(failed)["message"]
    # The amount is refundable again.
    _, collection = run_command(collection, refund("cmd_refund_2", payment_id_of(collection), 5000))
    assert collection.payment is not None and collection.payment.refunded_total == 5000


def test_refund_that_failed_after_it_was_booked_is_reversed_once() -> None:
    collection = _captured()
    _notify(collection, "refund_succeeded", "evt_1", amount=1500, refund_id="re_1")
    before = len(collection.events)
    assert _notify(collection, "refund_failed", "evt_2", amount=1500, refund_id="re_1")
    assert collection.payment is not None and collection.payment.refunded_total == 0
    assert _new_types(collection, before) == ["payment.failed"]
    # A late success event about the same refund does not book it again.
    assert not _notify(collection, "refund_succeeded", "evt_3", amount=1500, refund_id="re_1")
    assert not _notify(collection, "refund_failed", "evt_4", amount=1500, refund_id="re_1")
    assert collection.payment.refunded_total == 0
    assert _new_types(collection, before) == ["payment.failed"]
    validate_outbox(collection)


def test_booked_admin_refund_that_fails_later_is_reversed() -> None:
    collection = _captured()
    pid = payment_id_of(collection)
    _, collection = run_command(collection, refund("cmd_r", pid, 1000))
    assert collection.payment is not None and collection.payment.refunded_total == 1000
    key = ids.provider_key(collection.id, "refund", "cmd_r")
    assert _notify(
        collection, "refund_failed", "evt_f", amount=1000, refund_id="re_x", provider_key=key
    )
    assert collection.payment.refunded_total == 0


# -- disputes ---------------------------------------------------------------------------------


def _dispute(status: str, provider_status: str, **more: Any) -> dict[str, Any]:
    return {
        "dispute_id": "dp_1",
        "status": status,
        "provider_status": provider_status,
        "reason": "fraudulent",
        **more,
    }


def test_dispute_is_recorded_and_published_on_open_and_each_status_change() -> None:
    collection = _captured()
    before = len(collection.events)
    due = LATER + timedelta(days=7)
    assert _notify(
        collection,
        "disputed",
        "evt_d1",
        amount=5000,
        **_dispute("open", "needs_response", evidence_due_by=due),
    )
    assert _notify(
        collection, "disputed", "evt_d2", amount=5000, **_dispute("open", "under_review")
    )
    assert _notify(collection, "disputed", "evt_d3", amount=5000, **_dispute("lost", "lost"))
    # Stale: an update sent before the close, delivered after it.
    assert (
        _notify(collection, "disputed", "evt_d4", amount=5000, **_dispute("open", "under_review"))
        is False
    )
    events = collection.events[before:]
    assert types_of(events) == ["payment.disputed", "payment.disputed"]
    assert [data_of(e)["status"] for e in events] == ["open", "lost"]
    assert data_of(events[0])["evidence_due_by"] is not None
    assert data_of(events[0])["reason"] == "fraudulent"
    assert collection.payment is not None
    (dispute,) = collection.payment.disputes
    assert (dispute.status, dispute.provider_status, dispute.evidence_due_by) == (
        "lost",
        "lost",
        due,
    )
    validate_outbox(collection)
