"""Admin capture, refund and cancel: reservations, money rules and idempotency."""

from __future__ import annotations

import pytest
from domain_testkit import (
    LATER,
    OK,
    authorized_collection,
    cancel,
    capture,
    data_of,
    new_events,
    only_event,
    payment_id_of,
    refund,
    run_command,
    types_of,
    validate_outbox,
)

from service.domain import derived_ids as ids
from service.domain.commands import PaymentCommand, command_fingerprint
from service.domain.model import PaymentCollection
from service.domain.outcomes import ProviderOutcome
from service.domain.payment_operations import (
    finish_payment_command,
    reject_payment_command,
    settle_pending,
)
from service.domain.statuses import CollectionStatus, SessionStatus
from tests.unit.domain.domain_testkit import begin_payment_command


@pytest.fixture
def authorized() -> PaymentCollection:
    return authorized_collection()


def _pid(collection: PaymentCollection) -> str:
    return payment_id_of(collection)


def _failed(before: PaymentCollection, after: PaymentCollection) -> dict[str, object]:
    return data_of(only_event(new_events(before, after), "payment.failed"))


def _rejected(
    collection: PaymentCollection,
    cmd: PaymentCommand,
    reason: str,
    *,
    recorded: bool = True,
    retryable: bool = False,
) -> dict[str, object]:
    decision = begin_payment_command(collection, cmd)
    assert decision.kind == "settled"
    assert decision.note == reason
    assert decision.calls == []
    after = decision.collection
    data = _failed(collection, after)
    assert data["reason"] == reason
    assert data["retryable"] is retryable
    assert after.has_processed(cmd.command_id) is recorded
    assert after.payment is not None and collection.payment is not None
    assert after.payment.captures == collection.payment.captures
    assert after.payment.refunds == collection.payment.refunds
    assert after.payment.pending == collection.payment.pending
    validate_outbox(after)
    return data


# -- capture --------------------------------------------------------------------------------


def test_capture_default_amount_reserves_then_captures_everything(
    authorized: PaymentCollection,
) -> None:
    pid = _pid(authorized)
    cmd = capture("cmd_cap_1", pid)
    decision = begin_payment_command(authorized, cmd)
    assert decision.kind == "call"
    assert decision.reserve
    [call] = decision.calls
    key = ids.provider_key(authorized.id, "capture", "cmd_cap_1")
    assert (call.operation, call.amount, call.idempotency_key) == ("capture", 5000, key)
    assert call.payment_id == pid
    assert call.provider_id == "sandbox"
    reserved = decision.collection.payment
    assert reserved is not None
    [pending] = reserved.pending
    assert (pending.operation, pending.amount, pending.provider_key) == ("capture", 5000, key)
    assert pending.fingerprint == command_fingerprint(cmd)
    assert decision.collection.needs_reconcile
    assert not decision.collection.has_processed("cmd_cap_1")
    assert authorized.payment is not None and authorized.payment.pending == []  # input kept

    after = finish_payment_command(decision.collection, cmd, OK)
    payment = after.payment
    assert payment is not None
    assert payment.pending == []
    [cap] = payment.captures
    assert cap.id == ids.capture_id(pid, "cmd_cap_1")
    assert (cap.amount, cap.command_id, cap.source) == (5000, "cmd_cap_1", "admin")
    assert after.status == CollectionStatus.COMPLETED
    event = only_event(new_events(authorized, after), "payment.captured")
    assert event.causation_id == "cmd_cap_1"
    assert data_of(event) == {
        "cart_id": "cart_01",
        "collection_id": after.id,
        "provider_id": "sandbox",
        "currency_code": "usd",
        "payment_id": pid,
        "capture_id": cap.id,
        "amount": 5000,
        "captured_total": 5000,
        "fully_captured": True,
    }
    seen = after.processed_event("cmd_cap_1")
    assert seen is not None
    assert seen.type == "admin.payment.capture"
    assert seen.fingerprint == command_fingerprint(cmd)
    assert [h.outcome for h in payment.history] == ["started", "succeeded"]
    assert payment.history[0].requested_by == "ops@example.com"
    assert payment.history[0].key_id == "k1"
    assert not after.needs_reconcile
    validate_outbox(after)


def test_partial_captures_up_to_the_authorized_amount(authorized: PaymentCollection) -> None:
    pid = _pid(authorized)
    _, after = run_command(authorized, capture("cmd_cap_1", pid, 2000))
    assert after.status == CollectionStatus.PARTIALLY_CAPTURED
    assert data_of(after.events[-1])["fully_captured"] is False
    _, after = run_command(after, capture("cmd_cap_2", pid, 1000))
    assert after.status == CollectionStatus.PARTIALLY_CAPTURED
    assert data_of(after.events[-1])["captured_total"] == 3000
    _, after = run_command(after, capture("cmd_cap_3", pid))  # default: the rest
    assert after.payment is not None
    assert [c.amount for c in after.payment.captures] == [2000, 1000, 2000]
    assert after.status == CollectionStatus.COMPLETED
    last = data_of(after.events[-1])
    assert (last["amount"], last["captured_total"], last["fully_captured"]) == (2000, 5000, True)
    validate_outbox(after)


def test_capture_exceeding_the_authorized_amount(authorized: PaymentCollection) -> None:
    data = _rejected(
        authorized, capture("cmd_cap_1", _pid(authorized), 5001), "amount_exceeds_authorized"
    )
    assert data["operation"] == "capture"
    assert data["amount"] == 5001
    assert data["payment_id"] == _pid(authorized)


def test_capture_of_zero(authorized: PaymentCollection) -> None:
    data = _rejected(
        authorized, capture("cmd_cap_1", _pid(authorized), 0), "amount_exceeds_authorized"
    )
    assert data["message"] == "amount must be positive"


def test_capture_when_everything_is_captured(authorized: PaymentCollection) -> None:
    pid = _pid(authorized)
    _, after = run_command(authorized, capture("cmd_cap_1", pid))
    data = _rejected(after, capture("cmd_cap_2", pid), "amount_exceeds_authorized")
    assert data["message"] == "nothing left to capture"


def _in_flight(collection: PaymentCollection, cmd: PaymentCommand) -> dict[str, object]:
    """`operation_in_flight`: retryable, and the command id stays free (decided again
    when it is sent again)."""
    return _rejected(collection, cmd, "operation_in_flight", recorded=False, retryable=True)


def test_reserved_capture_counts_as_taken(authorized: PaymentCollection) -> None:
    pid = _pid(authorized)
    first = begin_payment_command(authorized, capture("cmd_cap_1", pid, 3000))
    # 3000 more fits only if the capture in flight fails: its outcome decides.
    _in_flight(first.collection, capture("cmd_cap_2", pid, 3000))
    # More than the whole authorization: refused whatever happens to the first.
    _rejected(first.collection, capture("cmd_cap_3", pid, 5001), "amount_exceeds_authorized")
    second = begin_payment_command(first.collection, capture("cmd_cap_2", pid))
    assert second.calls[0].amount == 2000


def test_capture_on_a_canceled_payment(authorized: PaymentCollection) -> None:
    pid = _pid(authorized)
    _, canceled = run_command(authorized, cancel("cmd_cancel", pid))
    _rejected(canceled, capture("cmd_cap_1", pid, 100), "payment_canceled")


def test_capture_while_a_cancel_is_in_flight(authorized: PaymentCollection) -> None:
    pid = _pid(authorized)
    reserved = begin_payment_command(authorized, cancel("cmd_cancel", pid)).collection
    # Not `payment_canceled`: the cancel may still fail.
    _in_flight(reserved, capture("cmd_cap_1", pid, 100))


def test_payment_not_found(authorized: PaymentCollection) -> None:
    data = _rejected(authorized, capture("cmd_cap_1", "pay_other", 100), "payment_not_found")
    assert data["payment_id"] == "pay_other"


# -- refund ---------------------------------------------------------------------------------


@pytest.fixture
def captured() -> PaymentCollection:
    collection = authorized_collection()
    _, collection = run_command(collection, capture("cmd_cap_1", _pid(collection), 3000))
    return collection


def test_partial_refunds_up_to_the_captured_amount(captured: PaymentCollection) -> None:
    pid = _pid(captured)
    decision = begin_payment_command(captured, refund("cmd_ref_1", pid, 1000, reason="damaged"))
    assert decision.reserve
    [call] = decision.calls
    assert (call.operation, call.amount, call.reason) == ("refund", 1000, "damaged")
    after = finish_payment_command(
        decision.collection, refund("cmd_ref_1", pid, 1000, reason="damaged"), OK
    )
    assert after.payment is not None
    [ref] = after.payment.refunds
    assert ref.id == ids.refund_id(pid, "cmd_ref_1")
    event = only_event(new_events(captured, after), "payment.refunded")
    assert data_of(event) | {} == {
        "cart_id": "cart_01",
        "collection_id": after.id,
        "provider_id": "sandbox",
        "currency_code": "usd",
        "payment_id": pid,
        "refund_id": ref.id,
        "amount": 1000,
        "refunded_total": 1000,
        "reason": "damaged",
    }
    # The status does not move on refunds.
    assert after.status == CollectionStatus.PARTIALLY_CAPTURED
    _, after = run_command(after, refund("cmd_ref_2", pid))  # default: the rest
    assert after.payment is not None
    assert after.payment.refunded_total == 3000
    assert data_of(after.events[-1])["refunded_total"] == 3000
    assert "reason" not in data_of(after.events[-1])
    validate_outbox(after)


def test_refund_exceeding_the_captured_amount(captured: PaymentCollection) -> None:
    data = _rejected(captured, refund("cmd_ref_1", _pid(captured), 3001), "amount_exceeds_captured")
    assert data["operation"] == "refund"


def test_refund_when_everything_is_refunded(captured: PaymentCollection) -> None:
    pid = _pid(captured)
    _, after = run_command(captured, refund("cmd_ref_1", pid))
    data = _rejected(after, refund("cmd_ref_2", pid), "amount_exceeds_captured")
    assert data["message"] == "nothing left to refund"


def test_reserved_refund_counts_as_taken(captured: PaymentCollection) -> None:
    pid = _pid(captured)
    reserved = begin_payment_command(captured, refund("cmd_ref_1", pid, 2000)).collection
    _in_flight(reserved, refund("cmd_ref_2", pid, 2500))  # fits if the first fails
    _rejected(reserved, refund("cmd_ref_3", pid, 3001), "amount_exceeds_captured")


def test_refund_with_nothing_captured(authorized: PaymentCollection) -> None:
    _rejected(authorized, refund("cmd_ref_1", _pid(authorized), 100), "nothing_captured")


# -- cancel ---------------------------------------------------------------------------------


def test_cancel(authorized: PaymentCollection) -> None:
    pid = _pid(authorized)
    decision = begin_payment_command(authorized, cancel("cmd_cancel", pid))
    assert decision.reserve
    assert decision.calls[0].operation == "cancel"
    after = finish_payment_command(decision.collection, cancel("cmd_cancel", pid), OK)
    payment = after.payment
    assert payment is not None
    assert payment.is_canceled
    assert payment.canceled_at == LATER
    assert after.status == CollectionStatus.CANCELED
    session = after.session_by_id(payment.session_id)
    assert session is not None and session.status == SessionStatus.CANCELED
    event = only_event(new_events(authorized, after), "payment.canceled")
    assert payment.canceled_event_id == event.id
    assert data_of(event)["canceled_at"] == "2025-01-02T03:09:05Z"
    validate_outbox(after)


def test_repeated_cancel_republishes_the_stored_event(authorized: PaymentCollection) -> None:
    pid = _pid(authorized)
    _, canceled = run_command(authorized, cancel("cmd_cancel", pid))
    for event in canceled.events:
        event.sent = True
    decision = begin_payment_command(canceled, cancel("cmd_cancel_2", pid))
    assert decision.kind == "settled"
    assert decision.note == "already canceled: republished"
    after = decision.collection
    assert [e.id for e in after.events] == [e.id for e in canceled.events]
    assert after.payment is not None
    assert [e.id for e in after.unsent_events] == [after.payment.canceled_event_id]
    assert after.has_processed("cmd_cancel_2")
    # The very same command again is a duplicate.
    assert begin_payment_command(canceled, cancel("cmd_cancel", pid)).kind == "duplicate"


def test_cancel_after_a_capture(captured: PaymentCollection) -> None:
    data = _rejected(captured, cancel("cmd_cancel", _pid(captured)), "already_captured")
    assert data["operation"] == "cancel"


def test_cancel_while_a_capture_is_in_flight(authorized: PaymentCollection) -> None:
    pid = _pid(authorized)
    reserved = begin_payment_command(authorized, capture("cmd_cap_1", pid, 100)).collection
    # Not `already_captured`: the capture may still fail.
    _in_flight(reserved, cancel("cmd_cancel", pid))


# -- provider outcomes of a reserved command ------------------------------------------------


@pytest.mark.parametrize(
    "outcome",
    [ProviderOutcome.unknown("timeout"), ProviderOutcome.pending()],
    ids=["unknown", "pending"],
)
def test_unknown_outcome_keeps_the_reservation_and_resumes(
    authorized: PaymentCollection, outcome: ProviderOutcome
) -> None:
    pid = _pid(authorized)
    cmd = capture("cmd_cap_1", pid, 2000)
    first = begin_payment_command(authorized, cmd)
    kept = finish_payment_command(first.collection, cmd, outcome)
    assert kept.payment is not None
    assert [p.command_id for p in kept.payment.pending] == ["cmd_cap_1"]
    assert kept.payment.captures == []
    assert not kept.has_processed("cmd_cap_1")
    assert kept.needs_reconcile
    assert new_events(authorized, kept) == []

    resumed = begin_payment_command(kept, cmd)
    assert resumed.kind == "call"
    assert not resumed.reserve  # the reservation is stored already
    assert resumed.calls == first.calls  # same provider key, same amount
    after = finish_payment_command(resumed.collection, cmd, OK)
    assert after.payment is not None
    assert [c.amount for c in after.payment.captures] == [2000]
    assert after.payment.pending == []
    assert types_of(new_events(authorized, after)) == ["payment.captured"]
    assert begin_payment_command(after, cmd).kind == "duplicate"


def test_resume_of_a_crashed_command_with_default_amount(authorized: PaymentCollection) -> None:
    pid = _pid(authorized)
    reserved = begin_payment_command(authorized, capture("cmd_cap_1", pid)).collection
    # The process died after storing the reservation; the command is redelivered.
    resumed = begin_payment_command(reserved, capture("cmd_cap_1", pid))
    assert resumed.kind == "call"
    assert resumed.calls[0].amount == 5000
    assert resumed.calls[0].idempotency_key == ids.provider_key(
        authorized.id, "capture", "cmd_cap_1"
    )


@pytest.mark.parametrize(
    ("outcome", "reason", "retryable"),
    [
        (ProviderOutcome.transient("503"), "provider_unavailable", True),
        (ProviderOutcome.failed("400"), "provider_error", False),
        (ProviderOutcome.declined("no"), "provider_error", False),
    ],
    ids=["transient", "failed", "declined"],
)
@pytest.mark.parametrize("operation", ["capture", "refund", "cancel"])
def test_failed_outcome_releases_the_reservation(
    captured: PaymentCollection,
    authorized: PaymentCollection,
    outcome: ProviderOutcome,
    reason: str,
    retryable: bool,
    operation: str,
) -> None:
    base = authorized if operation == "cancel" else captured
    pid = _pid(base)
    commands: dict[str, PaymentCommand] = {
        "capture": capture("cmd_x", pid, 1000),
        "refund": refund("cmd_x", pid, 1000),
        "cancel": cancel("cmd_x", pid),
    }
    cmd = commands[operation]
    _, after = run_command(base, cmd, outcome)
    assert after.payment is not None and base.payment is not None
    assert after.payment.pending == []
    assert after.payment.captures == base.payment.captures
    assert after.payment.refunds == base.payment.refunds
    assert not after.payment.is_canceled
    assert after.status == base.status
    data = _failed(base, after)
    assert (data["operation"], data["reason"], data["retryable"]) == (operation, reason, retryable)
    assert after.has_processed("cmd_x")
    assert after.payment.history[-1].outcome == reason
    validate_outbox(after)


# -- idempotency ----------------------------------------------------------------------------


def test_duplicate_command(captured: PaymentCollection) -> None:
    decision = begin_payment_command(captured, capture("cmd_cap_1", _pid(captured), 3000))
    assert decision.kind == "duplicate"


def test_reused_command_id_with_other_amount_is_a_conflict_and_not_recorded(
    captured: PaymentCollection,
) -> None:
    pid = _pid(captured)
    data = _rejected(
        captured, capture("cmd_cap_1", pid, 1000), "idempotency_conflict", recorded=True
    )
    assert data["operation"] == "capture"
    decision = begin_payment_command(captured, capture("cmd_cap_1", pid, 1000))
    after = decision.collection
    # Not recorded: the processed entry is still the first command's.
    assert [p.id for p in after.processed].count("cmd_cap_1") == 1
    seen = after.processed_event("cmd_cap_1")
    assert seen is not None
    assert seen.fingerprint == command_fingerprint(capture("cmd_cap_1", pid, 3000))
    # The answer has an id of its own, not the first command's events'.
    conflict = only_event(new_events(captured, after), "payment.failed")
    assert conflict.id not in {e.id for e in captured.events}
    # A second, different conflicting reuse gets yet another event.
    again = begin_payment_command(after, refund("cmd_cap_1", pid, 10)).collection
    assert len(new_events(after, again)) == 1
    validate_outbox(again)


def test_reused_command_id_while_in_flight(authorized: PaymentCollection) -> None:
    pid = _pid(authorized)
    reserved = begin_payment_command(authorized, capture("cmd_cap_1", pid, 1000)).collection
    _rejected(reserved, capture("cmd_cap_1", pid, 2000), "idempotency_conflict", recorded=False)
    _rejected(reserved, cancel("cmd_cap_1", pid), "idempotency_conflict", recorded=False)


def test_reject_payment_command(authorized: PaymentCollection) -> None:
    pid = _pid(authorized)
    snapshot = authorized.model_dump()
    cmd = capture("cmd_elsewhere", pid, 100)
    decision = reject_payment_command(
        authorized.model_copy(deep=True), cmd, "idempotency_conflict", "used elsewhere"
    )
    assert decision.kind == "settled"
    assert decision.note == "idempotency_conflict"
    after = decision.collection
    data = _failed(authorized, after)
    assert (data["reason"], data["message"]) == ("idempotency_conflict", "used elsewhere")
    assert not after.has_processed("cmd_elsewhere")
    assert after.payment is not None
    assert after.payment.history[-1].outcome == "rejected: idempotency_conflict"
    assert authorized.model_dump() == snapshot
    validate_outbox(after)
    # The id stays free of effects: the command can still be applied here.
    assert begin_payment_command(after, cmd).kind == "call"


# -- settled elsewhere ----------------------------------------------------------------------


def test_finish_after_a_webhook_settled_the_reservation(authorized: PaymentCollection) -> None:
    pid = _pid(authorized)
    cmd = capture("cmd_cap_1", pid, 1000)
    reserved = begin_payment_command(authorized, cmd).collection
    assert reserved.payment is not None
    settle_pending(reserved, reserved.payment.pending[0], OK, LATER)
    assert reserved.has_processed("cmd_cap_1")
    after = finish_payment_command(reserved.model_copy(deep=True), cmd, OK)
    assert after.payment is not None
    assert [c.amount for c in after.payment.captures] == [1000]
    assert [p.id for p in after.processed].count("cmd_cap_1") == 1
    assert after.payment.history[-1].outcome == "settled by reconciliation: succeeded"


def test_reconciler_settles_a_pending_refund(captured: PaymentCollection) -> None:
    pid = _pid(captured)
    reserved = begin_payment_command(captured, refund("cmd_ref_1", pid, 500)).collection
    assert reserved.payment is not None
    pending = reserved.payment.pending[0]
    unchanged = settle_pending(reserved, pending, ProviderOutcome.unknown("still"), LATER)
    assert unchanged.payment is not None and unchanged.payment.pending == [pending]
    settled = settle_pending(reserved, pending, ProviderOutcome.failed("no"), LATER)
    assert settled.payment is not None
    assert settled.payment.pending == []
    assert settled.payment.refunds == []
    seen = settled.processed_event("cmd_ref_1")
    assert seen is not None and seen.fingerprint == pending.fingerprint
    assert _failed(captured, settled)["reason"] == "provider_error"


def test_two_cancels_in_flight_publish_one_canceled_event(authorized: PaymentCollection) -> None:
    pid = _pid(authorized)
    first, second = cancel("cmd_cancel_1", pid), cancel("cmd_cancel_2", pid)
    reserved = begin_payment_command(authorized, first).collection
    decision = begin_payment_command(reserved, second)
    assert decision.reserve
    after = finish_payment_command(decision.collection, first, OK)
    assert after.payment is not None
    canceled_at, event_id = after.payment.canceled_at, after.payment.canceled_event_id
    for event in after.events:
        event.sent = True
    after = finish_payment_command(after, second, ProviderOutcome.succeeded())
    assert types_of(new_events(authorized, after)) == ["payment.canceled"]
    assert after.payment is not None
    assert (after.payment.canceled_at, after.payment.canceled_event_id) == (canceled_at, event_id)
    assert [e.id for e in after.unsent_events] == [event_id]
    assert after.payment.pending == []
    assert after.has_processed("cmd_cancel_1") and after.has_processed("cmd_cancel_2")
    validate_outbox(after)
