"""`apply_notification`: provider webhooks applied with the rules of any other event."""

from __future__ import annotations

from typing import Any

from domain_testkit import (
    LATER,
    OK,
    authorized_collection,
    cancel,
    capture,
    cart_with_sessions,
    checkout,
    data_of,
    new_events,
    only_event,
    payment_id_of,
    run_checkout,
    run_command,
    types_of,
    validate_outbox,
)

from service.domain import derived_ids as ids
from service.domain.model import Meaning, PaymentCollection, PaymentSession
from service.domain.outcomes import ProviderOutcome
from service.domain.payment_operations import finish_payment_command
from service.domain.statuses import CollectionStatus, SessionStatus
from tests.unit.domain.domain_testkit import apply_notification, begin_payment_command


def _sandbox(collection: PaymentCollection) -> PaymentSession:
    session = collection.session_for("sandbox")
    assert session is not None
    return session


def _status(collection: PaymentCollection) -> CollectionStatus:
    return collection.status


def _notify(
    collection: PaymentCollection,
    meaning: Meaning,
    event_id: str = "evt_wh_1",
    *,
    session_id: str | None = None,
    provider_id: str = "sandbox",
    **fields: Any,
) -> bool:
    return apply_notification(
        collection,
        event_id=event_id,
        meaning=meaning,
        session_id=session_id,
        provider_id=provider_id,
        now=LATER,
        **fields,
    )


def test_authorized_without_a_payment_creates_it() -> None:
    collection = cart_with_sessions()
    session = _sandbox(collection)
    changed = _notify(collection, "authorized", session_id=session.id, data={"pi": "x"})
    assert changed
    payment = collection.payment
    assert payment is not None
    assert payment.id == ids.payment_id(session.id)
    assert payment.data == {"pi": "x"}
    assert collection.status == CollectionStatus.AUTHORIZED
    event = only_event(collection.events, "payment.authorized")
    assert event.causation_id == "evt_wh_1"
    assert collection.has_processed("evt_wh_1")
    assert collection.processed[-1].type == "payment.provider_webhook"
    validate_outbox(collection)


def test_authorized_found_by_its_provider_object_when_no_session_id() -> None:
    collection = cart_with_sessions()
    manual = collection.session_for("manual")
    assert manual is not None
    manual.data = {"id": "pi_manual_1"}
    assert _notify(collection, "authorized", provider_id="manual", reference="pi_manual_1")
    assert collection.payment is not None
    assert collection.payment.provider_id == "manual"
    assert collection.payment.reference == "pi_manual_1"


def test_a_fact_naming_no_object_of_ours_is_never_applied_to_the_providers_session() -> None:
    """Sequence 9: no fallback from a session or object the books do not know to the
    provider's current session (it could bind the payment to a canceled intent)."""
    collection = cart_with_sessions()
    assert not _notify(collection, "authorized", provider_id="sandbox")
    assert not _notify(
        collection, "authorized", "evt_wh_2", provider_id="sandbox", session_id="payses_gone"
    )
    assert collection.payment is None
    assert collection.voids == []  # no object named: nothing that could be released


def test_captured_without_a_payment_authorizes_and_captures() -> None:
    collection = cart_with_sessions()
    assert _notify(collection, "captured", session_id=_sandbox(collection).id)
    payment = collection.payment
    assert payment is not None
    assert payment.captured_total == 5000
    assert collection.status == CollectionStatus.COMPLETED
    assert types_of(collection.events) == ["payment.authorized", "payment.captured"]
    validate_outbox(collection)


def test_captured_settles_the_capture_in_flight_exactly_once() -> None:
    collection = authorized_collection()
    pid = payment_id_of(collection)
    cmd = capture("cmd_cap_1", pid, 2000)
    reserved = begin_payment_command(collection, cmd).collection
    webhooked = reserved.model_copy(deep=True)

    assert _notify(webhooked, "captured", session_id=_sandbox(webhooked).id, amount=2000)
    payment = webhooked.payment
    assert payment is not None
    assert payment.pending == []
    [cap] = payment.captures
    assert (cap.amount, cap.command_id) == (2000, "cmd_cap_1")
    assert webhooked.status == CollectionStatus.PARTIALLY_CAPTURED
    event = only_event(new_events(reserved, webhooked), "payment.captured")
    assert event.causation_id == "cmd_cap_1"
    assert webhooked.has_processed("cmd_cap_1")

    # The admin command's own answer arrives afterwards: nothing more is captured.
    after = finish_payment_command(webhooked, cmd, OK)
    assert after.payment is not None
    assert [c.amount for c in after.payment.captures] == [2000]
    assert types_of(new_events(reserved, after)) == ["payment.captured"]
    assert [p.id for p in after.processed].count("cmd_cap_1") == 1
    assert begin_payment_command(after, cmd).kind == "duplicate"
    validate_outbox(after)


def test_captured_with_amount_when_nothing_is_pending() -> None:
    collection = authorized_collection()
    session_id = _sandbox(collection).id
    assert _notify(collection, "captured", "evt_wh_1", session_id=session_id, amount=1500)
    payment = collection.payment
    assert payment is not None
    [cap] = payment.captures
    assert (cap.amount, cap.source, cap.command_id) == (1500, "webhook", "evt_wh_1")
    assert collection.status == CollectionStatus.PARTIALLY_CAPTURED
    first = data_of(collection.events[-1])
    assert (first["amount"], first["captured_total"], first["fully_captured"]) == (
        1500,
        1500,
        False,
    )

    # The provider reports a running total: only the difference is new, capped at the amount.
    assert _notify(collection, "captured", "evt_wh_2", session_id=session_id, amount=9999)
    assert [c.amount for c in payment.captures] == [1500, 3500]
    assert _status(collection) == CollectionStatus.COMPLETED
    assert data_of(collection.events[-1])["fully_captured"] is True
    validate_outbox(collection)


def test_captured_without_amount_and_nothing_pending_changes_nothing() -> None:
    collection = authorized_collection()
    before = collection.model_dump(exclude={"processed", "updated_at"})
    assert not _notify(collection, "captured", session_id=_sandbox(collection).id)
    assert collection.model_dump(exclude={"processed", "updated_at"}) == before


def test_repeated_webhook_changes_nothing() -> None:
    collection = cart_with_sessions()
    session_id = _sandbox(collection).id
    assert _notify(collection, "authorized", "evt_wh_1", session_id=session_id)
    snapshot = collection.model_dump()
    # Redelivered: the same event id.
    assert not _notify(collection, "authorized", "evt_wh_1", session_id=session_id)
    assert collection.model_dump() == snapshot
    # Sent again by the provider: a new event id meaning the same thing.
    assert not _notify(collection, "authorized", "evt_wh_2", session_id=session_id)
    assert collection.events == [collection.events[0]]
    assert collection.has_processed("evt_wh_2")


def test_repeated_captured_webhook_captures_once() -> None:
    collection = authorized_collection()
    session_id = _sandbox(collection).id
    assert _notify(collection, "captured", "evt_wh_1", session_id=session_id, amount=5000)
    assert not _notify(collection, "captured", "evt_wh_2", session_id=session_id, amount=5000)
    assert collection.payment is not None
    assert collection.payment.captured_total == 5000


def test_late_failed_webhook_after_authorization_changes_nothing() -> None:
    collection = authorized_collection()
    before = collection.model_dump(exclude={"processed", "updated_at"})
    assert not _notify(collection, "failed", session_id=_sandbox(collection).id, message="declined")
    assert not _notify(
        collection,
        "requires_more",
        "evt_wh_2",
        session_id=_sandbox(collection).id,
        action={"type": "x"},
    )
    assert collection.model_dump(exclude={"processed", "updated_at"}) == before
    assert collection.status == CollectionStatus.AUTHORIZED


def test_failed_webhook_before_authorization_declines() -> None:
    collection = cart_with_sessions()
    session_id = _sandbox(collection).id
    assert _notify(collection, "failed", session_id=session_id, message="insufficient funds")
    assert _sandbox(collection).status == SessionStatus.ERROR
    assert collection.status == CollectionStatus.FAILED
    data = data_of(only_event(collection.events, "payment.failed"))
    assert (data["reason"], data["message"]) == ("declined", "insufficient funds")
    validate_outbox(collection)


def test_failed_webhook_on_an_errored_session_changes_nothing() -> None:
    _, collection = run_checkout(cart_with_sessions(), checkout(), ProviderOutcome.declined("no"))
    assert not _notify(collection, "failed")


def test_requires_more_webhook_on_a_pending_session() -> None:
    collection = cart_with_sessions()
    sid = _sandbox(collection).id
    assert _notify(collection, "requires_more", session_id=sid, action={"type": "use_stripe_sdk"})
    assert _sandbox(collection).status == SessionStatus.REQUIRES_MORE
    event = only_event(collection.events, "payment.requires_action")
    assert data_of(event)["action"] == {"type": "use_stripe_sdk"}
    # Only a pending session moves: a second one changes nothing.
    assert not _notify(
        collection, "requires_more", "evt_wh_2", session_id=sid, action={"type": "x"}
    )
    validate_outbox(collection)


def test_canceled_webhook_settles_the_cancel_in_flight() -> None:
    collection = authorized_collection()
    pid = payment_id_of(collection)
    cmd = cancel("cmd_cancel", pid)
    reserved = begin_payment_command(collection, cmd).collection
    assert _notify(reserved, "canceled", session_id=_sandbox(reserved).id)
    assert reserved.status == CollectionStatus.CANCELED
    assert reserved.payment is not None and reserved.payment.is_canceled
    assert types_of(new_events(collection, reserved)) == ["payment.canceled"]
    after = finish_payment_command(reserved, cmd, OK)
    assert types_of(new_events(collection, after)) == ["payment.canceled"]


def test_canceled_webhook_without_a_cancel_in_flight_cancels_the_payment() -> None:
    """Issue 13: an authorization expired or canceled at the provider is canceled here."""
    collection = authorized_collection()
    assert _notify(collection, "canceled", session_id=_sandbox(collection).id)
    assert collection.status == CollectionStatus.CANCELED
    assert collection.payment is not None and collection.payment.is_canceled
    assert types_of(collection.unsent_events)[-1] == "payment.canceled"


def test_captured_webhook_on_a_canceled_payment_changes_nothing() -> None:
    collection = authorized_collection()
    _, collection = run_command(collection, cancel("cmd_cancel", payment_id_of(collection)))
    assert not _notify(collection, "captured", amount=5000)
    assert collection.payment is not None and collection.payment.captures == []


def test_a_hold_live_on_another_session_is_released_not_booked() -> None:
    """Sequence 2: the shopper finishes 3-D Secure on a session that is not the
    payment's; the provider holds (or charged) money there. Never booked as the
    payment's capture; recorded to be released at the provider (a refund when it was
    captured, a cancel otherwise), once, whatever repeats."""
    collection = authorized_collection()
    manual = collection.session_for("manual")
    assert manual is not None
    manual.data = {"id": "pi_other"}
    assert _notify(
        collection,
        "captured",
        session_id=manual.id,
        provider_id="manual",
        amount=5000,
        reference="pi_other",
    )
    assert collection.payment is not None and collection.payment.captures == []
    [void] = collection.voids
    assert (void.reference, void.captured, void.amount) == ("pi_other", True, 5000)
    assert not _notify(
        collection,
        "authorized",
        "evt_wh_2",
        session_id=manual.id,
        provider_id="manual",
        reference="pi_other",
        amount=5000,
    )
    assert len(collection.voids) == 1
    # A session with no provider object of its own names nothing that could be released.
    bare = cart_with_sessions()
    _, bare = run_checkout(bare, checkout())
    bare_manual = bare.session_for("manual")
    assert bare_manual is not None and bare_manual.reference is None
    assert not _notify(bare, "captured", session_id=bare_manual.id, provider_id="manual", amount=1)
    assert bare.voids == []


def test_webhook_for_an_unknown_session_and_object_changes_nothing() -> None:
    collection = cart_with_sessions()
    assert not _notify(collection, "authorized", session_id="payses_x", provider_id="stripe")
    assert collection.has_processed("evt_wh_1")  # proven irrelevant: consumed
    assert collection.payment is None


def test_captured_webhook_during_a_cancel_in_flight_fails_the_cancel() -> None:
    collection = authorized_collection()
    pid = payment_id_of(collection)
    cmd = cancel("cmd_cancel", pid)
    reserved = begin_payment_command(collection, cmd).collection
    assert _notify(reserved, "captured", session_id=_sandbox(reserved).id, amount=1000)
    assert reserved.status == CollectionStatus.PARTIALLY_CAPTURED
    # Whatever the provider answers to the cancel, captured money cannot be canceled.
    after = finish_payment_command(reserved.model_copy(deep=True), cmd, OK)
    assert after.payment is not None
    assert not after.payment.is_canceled
    assert after.payment.pending == []
    assert after.status == CollectionStatus.PARTIALLY_CAPTURED
    data = data_of(only_event(new_events(reserved, after), "payment.failed"))
    assert (data["operation"], data["reason"]) == ("cancel", "already_captured")
    assert after.has_processed("cmd_cancel")
    validate_outbox(after)
