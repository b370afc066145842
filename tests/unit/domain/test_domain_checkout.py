"""`begin_checkout` / `finish_checkout` / `finish_authorization`: authorizing a session."""

from __future__ import annotations

import pytest
from domain_testkit import (
    LATER,
    NOW,
    OK,
    answer,
    authorized_collection,
    by_operation,
    cancel,
    cart_update,
    cart_with_sessions,
    checkout,
    data_of,
    new_events,
    only_event,
    payment_id_of,
    run_cart_update,
    run_checkout,
    run_command,
    types_of,
    validate_outbox,
)

from service.domain import derived_ids as ids
from service.domain.authorization import finish_authorization
from service.domain.checkout import finish_checkout
from service.domain.model import PaymentCollection
from service.domain.outcomes import OutcomeKind, ProviderOutcome
from service.domain.statuses import CollectionStatus, SessionStatus
from tests.unit.domain.domain_testkit import begin_checkout

ACTION = {"type": "redirect_to_url", "url": "https://bank.example/3ds"}


def _failed(
    collection_before: PaymentCollection | None, after: PaymentCollection
) -> dict[str, object]:
    event = only_event(new_events(collection_before, after), "payment.failed")
    return data_of(event)


# -- creating and authorizing ------------------------------------------------------------


def test_checkout_without_a_collection_creates_it() -> None:
    cmd = checkout(
        payment_data={"payment_method": "pm_card_visa"},
        context={"ip": "10.0.0.1"},
        currency_code="USD",
    )
    decision = begin_checkout(None, cmd)

    assert decision.kind == "call"
    # Stored before the calls (issue 16): a crash after the provider acted leaves
    # the attempt in flight for the reconciler, and cart.updated leaves it alone.
    assert decision.reserve
    assert decision.collection.sessions[0].needs_reconcile
    collection = decision.collection
    assert collection.id == ids.collection_id("cart_01")
    assert collection.currency_code == "usd"
    assert collection.status == CollectionStatus.AWAITING
    assert collection.selected_provider_id == "sandbox"
    [session] = collection.sessions
    assert session.provider_id == "sandbox"
    assert session.authorization_key == "idem_1"
    assert [c.operation for c in decision.calls] == ["initiate", "authorize"]
    authorize = decision.calls[1]
    # Namespaced by collection and operation (issue 16): another cart's "idem_1"
    # is another key at the provider.
    assert authorize.idempotency_key == ids.provider_key(collection.id, "authorize", "idem_1")
    assert authorize.session_id == session.id
    assert authorize.amount == 5000
    assert authorize.currency_code == "usd"
    assert authorize.payment_data == {"payment_method": "pm_card_visa"}
    assert authorize.context == {"ip": "10.0.0.1"}
    [attempt] = collection.checkout_attempts
    assert (attempt.idempotency_key, attempt.outcome, attempt.tries) == ("idem_1", "started", 1)

    after = finish_checkout(decision, cmd, answer(decision, ProviderOutcome.succeeded({"pi": "x"})))
    payment = after.payment
    assert payment is not None
    assert payment.id == ids.payment_id(session.id)
    assert payment.amount == 5000
    assert payment.provider_id == "sandbox"
    assert payment.data == {"pi": "x"}
    assert after.status == CollectionStatus.AUTHORIZED
    assert after.sessions[0].status == SessionStatus.AUTHORIZED
    assert after.sessions[0].initiated
    assert after.checkout_attempts[0].outcome == "authorized"
    event = only_event(after.events, "payment.authorized")
    assert event.id == payment.authorized_event_id
    assert event.causation_id == "evt_checkout_1"
    assert data_of(event) == {
        "cart_id": "cart_01",
        "collection_id": after.id,
        "provider_id": "sandbox",
        "currency_code": "usd",
        "payment_id": payment.id,
        "session_id": session.id,
        "amount": 5000,
        "authorized_at": "2025-01-02T03:04:05Z",
    }
    processed = after.processed_event("evt_checkout_1")
    assert processed is not None
    assert processed.fingerprint == "idem_1|5000|sandbox"
    assert not after.needs_reconcile
    validate_outbox(after)


def test_checkout_on_initiated_session_only_authorizes_and_cancels_the_others() -> None:
    collection = cart_with_sessions()
    decision = begin_checkout(collection, checkout())
    assert [c.operation for c in decision.calls] == ["authorize"]
    _, after = run_checkout(collection, checkout())
    statuses = {s.provider_id: s.status for s in after.sessions}
    assert statuses == {"manual": SessionStatus.CANCELED, "sandbox": SessionStatus.AUTHORIZED}
    assert after.status == CollectionStatus.AUTHORIZED
    assert types_of(after.events) == ["payment.authorized"]
    validate_outbox(after)


def test_authorized_and_captured_at_once() -> None:
    collection = cart_with_sessions()
    _, after = run_checkout(collection, checkout(), ProviderOutcome.succeeded(captured=True))
    payment = after.payment
    assert payment is not None
    assert after.status == CollectionStatus.COMPLETED
    [capture] = payment.captures
    assert capture.amount == 5000
    assert capture.source == "auto"
    assert payment.captured_total == 5000
    assert types_of(after.events) == ["payment.authorized", "payment.captured"]
    captured = data_of(after.events[1])
    assert captured["capture_id"] == capture.id
    assert captured["fully_captured"] is True
    assert captured["captured_total"] == 5000
    assert after.events[0].id != after.events[1].id
    validate_outbox(after)


# -- each authorize outcome ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("outcome", "reason", "retryable", "collection_status"),
    [
        (ProviderOutcome.declined("card declined", "card_declined"), "declined", False, "failed"),
        (ProviderOutcome.invalid_data("bad token"), "invalid_payment_data", False, "failed"),
        (ProviderOutcome.failed("bad request"), "provider_error", False, "failed"),
        (ProviderOutcome.canceled(), "provider_error", False, "failed"),
        (ProviderOutcome.transient("503"), "provider_unavailable", True, "awaiting"),
    ],
    ids=["declined", "invalid_data", "failed", "canceled", "transient"],
)
def test_failing_outcomes(
    outcome: ProviderOutcome, reason: str, retryable: bool, collection_status: str
) -> None:
    collection = cart_with_sessions()
    _, after = run_checkout(collection, checkout(), outcome)
    session = after.session_for("sandbox")
    assert session is not None
    assert session.status == SessionStatus.ERROR
    assert session.last_error is not None and session.last_error.startswith(reason)
    assert not session.needs_reconcile
    assert after.status == collection_status
    assert after.payment is None
    assert after.checkout_attempts[0].outcome == reason
    data = _failed(collection, after)
    assert data["operation"] == "authorize"
    assert data["reason"] == reason
    assert data["retryable"] is retryable
    assert data["amount"] == 5000
    assert data["session_id"] == session.id
    assert data["provider_id"] == "sandbox"
    assert data["message"]
    assert after.has_processed("evt_checkout_1")
    assert not after.needs_reconcile
    validate_outbox(after)


@pytest.mark.parametrize(
    ("outcome", "attempt_outcome"),
    [
        (ProviderOutcome.unknown("timeout"), "unknown"),
        (ProviderOutcome.pending({"s": 1}), "pending"),
    ],
    ids=["unknown", "pending"],
)
def test_unknown_and_pending_are_not_failures(
    outcome: ProviderOutcome, attempt_outcome: str
) -> None:
    collection = cart_with_sessions()
    _, after = run_checkout(collection, checkout(), outcome)
    session = after.session_for("sandbox")
    assert session is not None
    assert session.needs_reconcile
    assert session.status == SessionStatus.PENDING
    assert after.needs_reconcile
    assert after.status == CollectionStatus.AWAITING
    assert after.payment is None
    assert after.events == []
    assert after.checkout_attempts[0].outcome == attempt_outcome
    assert after.has_processed("evt_checkout_1")

    # The reconciler settles it later, with the checkout as cause.
    settled = finish_authorization(
        after, session.id, ProviderOutcome.succeeded(), "evt_checkout_1", LATER
    )
    assert settled.payment is not None
    assert not settled.needs_reconcile
    assert only_event(settled.events, "payment.authorized").causation_id == "evt_checkout_1"
    validate_outbox(settled)


def test_requires_more_then_succeeded_with_the_same_key() -> None:
    collection = cart_with_sessions()
    _, after = run_checkout(collection, checkout(), ProviderOutcome.requires_more(ACTION, {"a": 1}))
    session = after.session_for("sandbox")
    assert session is not None
    assert session.status == SessionStatus.REQUIRES_MORE
    assert session.data == {"a": 1}
    assert after.status == CollectionStatus.AWAITING
    assert after.checkout_attempts[0].outcome == "requires_more"
    action_event = only_event(after.events, "payment.requires_action")
    assert data_of(action_event)["action"] == ACTION
    assert data_of(action_event)["session_id"] == session.id
    assert data_of(action_event)["amount"] == 5000

    retry = checkout("evt_checkout_2", payment_data={"action_result": "succeeded"}, now=LATER)
    decision = begin_checkout(after, retry)
    assert decision.kind == "call"
    [authorize] = decision.calls
    assert authorize.idempotency_key == ids.provider_key(after.id, "authorize", "idem_1")
    assert authorize.payment_data == {"action_result": "succeeded"}
    attempt = decision.collection.attempt_for("idem_1")
    assert attempt is not None
    assert attempt.tries == 2
    assert attempt.event_id == "evt_checkout_2"

    final = finish_checkout(decision, retry, answer(decision, OK))
    assert final.payment is not None
    assert final.status == CollectionStatus.AUTHORIZED
    assert types_of(final.events) == ["payment.requires_action", "payment.authorized"]
    assert final.events[1].causation_id == "evt_checkout_2"
    assert len(final.checkout_attempts) == 1
    assert final.checkout_attempts[0].outcome == "authorized"
    validate_outbox(final)


def test_requires_more_then_declined() -> None:
    collection = cart_with_sessions()
    _, after = run_checkout(collection, checkout(), ProviderOutcome.requires_more(ACTION))
    _, final = run_checkout(
        after, checkout("evt_checkout_2"), ProviderOutcome.declined("3ds failed")
    )
    assert final.status == CollectionStatus.FAILED
    assert final.session_for("sandbox").status == SessionStatus.ERROR  # type: ignore[union-attr]
    assert _failed(after, final)["reason"] == "declined"
    validate_outbox(final)


def test_declined_then_another_key_authorizes() -> None:
    collection = cart_with_sessions()
    _, failed = run_checkout(collection, checkout(), ProviderOutcome.declined("no"))
    assert failed.status == CollectionStatus.FAILED
    _, after = run_checkout(failed, checkout("evt_checkout_2", key="idem_2"))
    assert after.status == CollectionStatus.AUTHORIZED
    assert after.payment is not None
    assert [a.idempotency_key for a in after.checkout_attempts] == ["idem_1", "idem_2"]
    validate_outbox(after)


def test_declined_then_requires_more_moves_back_to_awaiting() -> None:
    collection = cart_with_sessions()
    _, failed = run_checkout(collection, checkout(), ProviderOutcome.declined("no"))
    _, after = run_checkout(
        failed, checkout("evt_checkout_2", key="idem_2"), ProviderOutcome.requires_more(ACTION)
    )
    assert after.status == CollectionStatus.AWAITING
    assert after.session_for("sandbox").status == SessionStatus.REQUIRES_MORE  # type: ignore[union-attr]


def test_failed_initiate_is_reported_as_the_authorization_failure() -> None:
    decision = begin_checkout(None, checkout())
    answers = answer(decision, by_operation(initiate=ProviderOutcome.transient("down")))
    assert [c.operation for c, _ in answers] == ["initiate"]
    after = finish_checkout(decision, checkout(), answers)
    session = after.session_for("sandbox")
    assert session is not None
    assert not session.initiated
    assert session.status == SessionStatus.ERROR
    data = _failed(None, after)
    assert (data["reason"], data["retryable"]) == ("provider_unavailable", True)
    validate_outbox(after)


# -- answered without a provider call -----------------------------------------------------


def test_duplicate_event_id() -> None:
    _, collection = run_checkout(None, checkout(), ProviderOutcome.declined("no"))
    decision = begin_checkout(collection, checkout())
    assert decision.kind == "duplicate"
    assert decision.calls == []
    assert decision.collection.events == collection.events


@pytest.mark.parametrize(
    "changes",
    [{"amount": 4000}, {"provider_id": "manual"}],
    ids=["other_amount", "other_provider"],
)
def test_same_key_with_other_amount_or_provider_is_a_conflict(changes: dict[str, object]) -> None:
    _, collection = run_checkout(None, checkout(), ProviderOutcome.requires_more(ACTION))
    decision = begin_checkout(collection, checkout("evt_checkout_2", **changes))  # type: ignore[arg-type]
    assert decision.kind == "settled"
    assert decision.note == "idempotency_conflict"
    assert decision.calls == []
    data = _failed(collection, decision.collection)
    assert data["reason"] == "idempotency_conflict"
    assert data["retryable"] is False
    assert decision.collection.has_processed("evt_checkout_2")
    assert decision.collection.checkout_attempts == collection.checkout_attempts
    validate_outbox(decision.collection)


def test_conflict_wins_over_republishing_when_authorized() -> None:
    collection = authorized_collection()
    decision = begin_checkout(collection, checkout("evt_checkout_2", amount=1))
    assert decision.note == "idempotency_conflict"


@pytest.mark.parametrize("key", ["idem_1", "idem_new"], ids=["same_key", "new_key"])
def test_already_authorized_republishes_the_stored_event(key: str) -> None:
    collection = authorized_collection()
    for event in collection.events:
        event.sent = True
    stored = only_event(collection.events, "payment.authorized")

    decision = begin_checkout(collection, checkout("evt_checkout_2", key=key, now=LATER))
    assert decision.kind == "settled"
    assert decision.note == "already authorized: republished"
    assert decision.calls == []
    after = decision.collection
    assert [e.id for e in after.events] == [e.id for e in collection.events]
    republished = after.outbox_event(stored.id)
    assert republished is not None
    assert republished.sent is False
    assert republished.payload == stored.payload
    assert [e.id for e in after.unsent_events] == [stored.id]
    assert after.has_processed("evt_checkout_2")
    assert collection.outbox_event(stored.id).sent is True  # type: ignore[union-attr]  # input kept


def test_collection_canceled() -> None:
    collection = authorized_collection()
    _, collection = run_command(collection, cancel("cmd_cancel", payment_id_of(collection)))
    assert collection.status == CollectionStatus.CANCELED
    decision = begin_checkout(collection, checkout("evt_checkout_2", key="idem_2"))
    assert decision.kind == "settled"
    assert decision.note == "collection_canceled"
    assert _failed(collection, decision.collection)["reason"] == "collection_canceled"
    validate_outbox(decision.collection)


def test_amount_mismatch() -> None:
    collection = cart_with_sessions()
    decision = begin_checkout(collection, checkout(amount=4999))
    assert decision.note == "amount_mismatch"
    data = _failed(collection, decision.collection)
    assert data["reason"] == "amount_mismatch"
    assert data["amount"] == 4999
    assert decision.collection.checkout_attempts == []
    validate_outbox(decision.collection)


def test_currency_mismatch() -> None:
    collection = cart_with_sessions()
    decision = begin_checkout(collection, checkout(currency_code="EUR"))
    assert decision.note == "currency_mismatch"
    assert _failed(collection, decision.collection)["reason"] == "currency_mismatch"


def test_currency_is_compared_case_insensitively() -> None:
    collection = cart_with_sessions()
    decision = begin_checkout(collection, checkout(currency_code="USD"))
    assert decision.kind == "call"


def test_provider_not_enabled_in_region() -> None:
    collection = cart_with_sessions(region_id="us")
    decision = begin_checkout(collection, checkout(provider_id="manual", region_id="us"))
    assert decision.kind == "settled"
    assert decision.note == "provider_not_available"
    data = _failed(collection, decision.collection)
    assert (data["reason"], data["provider_id"]) == ("provider_not_available", "manual")
    assert decision.collection.session_for("manual") is None


def test_unknown_provider_without_a_collection() -> None:
    decision = begin_checkout(None, checkout(provider_id="stripe"))
    assert decision.note == "provider_not_available"
    assert decision.collection.sessions == []
    validate_outbox(decision.collection)


@pytest.mark.parametrize("existing", [False, True], ids=["new_collection", "cart_at_zero"])
def test_zero_amount_is_authorized_by_the_system_provider(existing: bool) -> None:
    collection = None
    if existing:
        _, collection = run_cart_update(None, cart_update(amount=0))
    decision = begin_checkout(collection, checkout(amount=0, provider_id="stripe"))
    assert decision.kind == "settled"
    assert decision.calls == []
    assert decision.note == "zero amount authorized by system"
    after = decision.collection
    payment = after.payment
    assert payment is not None
    assert (payment.provider_id, payment.amount) == ("system", 0)
    assert after.status == CollectionStatus.AUTHORIZED
    [session] = after.sessions
    assert (session.provider_id, session.status) == ("system", SessionStatus.AUTHORIZED)
    data = data_of(only_event(after.events, "payment.authorized"))
    assert (data["provider_id"], data["amount"]) == ("system", 0)
    assert payment.captures == []
    validate_outbox(after)


def test_begin_does_not_mutate_its_input() -> None:
    collection = cart_with_sessions()
    snapshot = collection.model_dump()
    run_checkout(collection, checkout(), OK)
    run_checkout(collection, checkout(amount=1), OK)
    assert collection.model_dump() == snapshot


# -- finish_authorization directly ---------------------------------------------------------


def test_outcome_for_an_authorized_collection_changes_nothing() -> None:
    collection = authorized_collection()
    session = collection.session_for("sandbox")
    assert session is not None
    before = collection.model_dump()
    finish_authorization(collection, session.id, ProviderOutcome.declined("late"), "evt_late", NOW)
    assert collection.model_dump() == before


def test_outcome_for_an_unknown_session_changes_nothing() -> None:
    collection = cart_with_sessions()
    before = collection.model_dump()
    finish_authorization(collection, "payses_missing", OK, "evt_x", NOW)
    assert collection.model_dump() == before


def test_every_outcome_kind_is_handled() -> None:
    for kind in OutcomeKind:
        collection = cart_with_sessions()
        decision = begin_checkout(collection, checkout())
        outcome = (
            ProviderOutcome.requires_more(ACTION)
            if kind == OutcomeKind.REQUIRES_MORE
            else ProviderOutcome(kind, message="m")
        )
        after = finish_checkout(decision, checkout(), answer(decision, outcome))
        validate_outbox(after)
        assert after.has_processed("evt_checkout_1")
