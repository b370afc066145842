"""`decide_cart_update` / `finish_cart_update`: one payment session per enabled provider."""

from __future__ import annotations

from domain_testkit import (
    LATER,
    NOW,
    OK,
    authorized_collection,
    cancel,
    cart_update,
    cart_with_sessions,
    payment_id_of,
    run_cart_update,
    run_command,
    validate_outbox,
)

from service.domain import derived_ids as ids
from service.domain.calls import ProviderCall
from service.domain.cart import finish_cart_update, is_frozen
from service.domain.outcomes import ProviderOutcome
from service.domain.statuses import CollectionStatus, SessionStatus
from tests.unit.domain.domain_testkit import decide_cart_update


def _ops(calls: list[ProviderCall]) -> list[tuple[str, str]]:
    return [(c.operation, c.provider_id) for c in calls]


def test_first_update_creates_collection_and_one_session_per_region_provider() -> None:
    cmd = cart_update(currency_code="USD", version=3, email="a@example.com")
    decision = decide_cart_update(None, cmd)

    assert decision.kind == "call"
    assert not decision.reserve
    collection = decision.collection
    assert collection.id == ids.collection_id("cart_01")
    assert collection.currency_code == "usd"
    assert collection.cart_version == 3
    assert collection.email == "a@example.com"
    assert collection.status == CollectionStatus.AWAITING
    assert [s.provider_id for s in collection.sessions] == ["manual", "sandbox"]
    assert _ops(decision.calls) == [("initiate", "manual"), ("initiate", "sandbox")]
    for call, session in zip(decision.calls, collection.sessions, strict=True):
        assert call.session_id == session.id
        assert call.idempotency_key == f"{session.id}:initiate"
        assert call.amount == 5000
        assert call.currency_code == "usd"
        assert call.cart_id == "cart_01"
        assert not session.initiated
        assert session.status == SessionStatus.PENDING
    assert [p.id for p in collection.processed] == ["evt_cart_1"]
    assert collection.processed[0].type == "cart.updated"
    assert collection.events == []  # cart.updated publishes nothing

    answers = [
        (call, ProviderOutcome.succeeded({"ref": call.provider_id})) for call in decision.calls
    ]
    finished = finish_cart_update(decision, answers, NOW)
    assert all(s.initiated for s in finished.sessions)
    assert [s.data for s in finished.sessions] == [{"ref": "manual"}, {"ref": "sandbox"}]


def test_region_with_one_provider_gets_one_session() -> None:
    collection = cart_with_sessions(region_id="us")
    assert [s.provider_id for s in collection.sessions] == ["sandbox"]


def test_region_without_providers_gets_no_sessions() -> None:
    decision, collection = run_cart_update(None, cart_update(region_id="none"))
    assert decision.calls == []
    assert collection.sessions == []
    assert collection.status == CollectionStatus.NOT_PAID


def test_amount_zero_creates_no_sessions() -> None:
    decision, collection = run_cart_update(None, cart_update(amount=0))
    assert decision.kind == "call"
    assert decision.calls == []
    assert collection.sessions == []
    assert collection.status == CollectionStatus.NOT_PAID
    assert collection.amount == 0


def test_amount_dropping_to_zero_deletes_every_session() -> None:
    collection = cart_with_sessions()
    decision, after = run_cart_update(collection, cart_update("evt_cart_2", amount=0))
    assert _ops(decision.calls) == [("delete", "manual"), ("delete", "sandbox")]
    assert after.sessions == []
    assert after.amount == 0


def test_unchanged_update_makes_no_calls() -> None:
    collection = cart_with_sessions()
    decision, after = run_cart_update(collection, cart_update("evt_cart_2"))
    assert decision.kind == "call"
    assert decision.calls == []
    assert [s.id for s in after.sessions] == [s.id for s in collection.sessions]
    assert [p.id for p in after.processed] == ["evt_cart_1", "evt_cart_2"]


def test_amount_change_updates_every_initiated_session() -> None:
    collection = cart_with_sessions()
    decision, after = run_cart_update(collection, cart_update("evt_cart_2", amount=7000))
    assert _ops(decision.calls) == [("update", "manual"), ("update", "sandbox")]
    for call in decision.calls:
        assert call.amount == 7000
        assert call.idempotency_key == f"{call.session_id}:update:evt_cart_2"
    assert after.amount == 7000
    assert all(s.amount == 7000 for s in after.sessions)


def test_currency_and_context_changes_update_sessions() -> None:
    collection = cart_with_sessions()
    decision, after = run_cart_update(
        collection, cart_update("evt_cart_2", currency_code="EUR", context={"ip": "10.0.0.1"})
    )
    assert _ops(decision.calls) == [("update", "manual"), ("update", "sandbox")]
    assert all(c.currency_code == "eur" and c.context == {"ip": "10.0.0.1"} for c in decision.calls)
    assert all(s.currency_code == "eur" for s in after.sessions)


def test_failed_update_keeps_the_provider_data() -> None:
    collection = cart_with_sessions()
    collection.sessions[0].data = {"kept": True}
    _, after = run_cart_update(
        collection, cart_update("evt_cart_2", amount=7000), ProviderOutcome.failed("boom")
    )
    assert after.sessions[0].data == {"kept": True}
    assert after.sessions[0].last_error is not None
    assert "update" in after.sessions[0].last_error


def test_region_change_deletes_sessions_of_providers_no_longer_enabled() -> None:
    collection = cart_with_sessions(region_id="eu")
    manual = collection.session_for("manual")
    assert manual is not None
    decision, after = run_cart_update(collection, cart_update("evt_cart_2", region_id="us"))
    assert _ops(decision.calls) == [("delete", "manual")]
    assert decision.calls[0].session_id == manual.id
    assert decision.calls[0].idempotency_key == f"{manual.id}:delete"
    assert [s.provider_id for s in after.sessions] == ["sandbox"]
    assert after.region_id == "us"


def test_uninitiated_session_is_dropped_without_a_delete_call() -> None:
    decision, collection = run_cart_update(None, cart_update(), ProviderOutcome.transient("down"))
    assert not any(s.initiated for s in collection.sessions)
    decision, after = run_cart_update(collection, cart_update("evt_cart_2", region_id="none"))
    assert decision.calls == []
    assert after.sessions == []


def test_failed_initiate_is_retried_by_the_next_update() -> None:
    _, collection = run_cart_update(None, cart_update(), ProviderOutcome.unknown("timeout"))
    assert all(not s.initiated and s.last_error for s in collection.sessions)
    decision, after = run_cart_update(collection, cart_update("evt_cart_2"))
    assert _ops(decision.calls) == [("initiate", "manual"), ("initiate", "sandbox")]
    assert [c.session_id for c in decision.calls] == [s.id for s in collection.sessions]
    assert all(s.initiated and s.last_error is None for s in after.sessions)


def test_recreated_session_gets_a_new_id() -> None:
    collection = cart_with_sessions(region_id="eu")
    first_manual = collection.session_for("manual")
    assert first_manual is not None
    _, collection = run_cart_update(collection, cart_update("evt_cart_2", region_id="us"))
    _, collection = run_cart_update(collection, cart_update("evt_cart_3", region_id="eu"))
    again = collection.session_for("manual")
    assert again is not None
    assert again.id != first_manual.id
    assert collection.session_seq == 3


def test_selected_provider_and_payment_data() -> None:
    collection = cart_with_sessions()
    decision, after = run_cart_update(
        collection,
        cart_update("evt_cart_2", provider_id="sandbox", payment_data={"payment_method": "pm"}),
    )
    sandbox = after.session_for("sandbox")
    assert sandbox is not None
    assert after.selected_provider_id == "sandbox"
    assert _ops(decision.calls) == [("update_data", "sandbox")]
    call = decision.calls[0]
    assert call.payment_data == {"payment_method": "pm"}
    assert call.session_id == sandbox.id
    assert call.idempotency_key == f"{sandbox.id}:data:evt_cart_2"


def test_provider_not_enabled_in_region_is_not_selected() -> None:
    collection = cart_with_sessions(region_id="us")
    decision, after = run_cart_update(
        collection,
        cart_update("evt_cart_2", region_id="us", provider_id="manual", payment_data={"x": 1}),
    )
    assert after.selected_provider_id is None
    assert decision.calls == []


def test_duplicate_event_id_changes_nothing() -> None:
    collection = cart_with_sessions()
    decision = decide_cart_update(collection, cart_update("evt_cart_1", amount=9999))
    assert decision.kind == "duplicate"
    assert decision.calls == []
    assert decision.collection.amount == 5000


def test_stale_version_is_ignored() -> None:
    _, collection = run_cart_update(None, cart_update(version=5))
    decision = decide_cart_update(collection, cart_update("evt_cart_2", version=4, amount=1))
    assert decision.kind == "ignored"
    assert "stale" in decision.note
    assert decision.calls == []
    assert decision.collection.amount == 5000
    assert not decision.collection.has_processed("evt_cart_2")


def test_same_or_newer_or_unversioned_update_applies() -> None:
    _, collection = run_cart_update(None, cart_update(version=5))
    _, collection = run_cart_update(collection, cart_update("evt_cart_2", version=5, amount=1))
    assert collection.amount == 1
    _, collection = run_cart_update(collection, cart_update("evt_cart_3", version=6, amount=2))
    assert (collection.amount, collection.cart_version) == (2, 6)
    _, collection = run_cart_update(collection, cart_update("evt_cart_4", amount=3))
    assert (collection.amount, collection.cart_version) == (3, 6)


def test_frozen_after_authorization() -> None:
    collection = authorized_collection()
    assert is_frozen(collection)
    decision = decide_cart_update(collection, cart_update("evt_cart_9", amount=1))
    assert decision.kind == "ignored"
    assert decision.calls == []
    assert decision.collection.amount == 5000
    assert decision.collection.status == CollectionStatus.AUTHORIZED


def test_frozen_after_cancel() -> None:
    collection = authorized_collection()
    _, collection = run_command(collection, cancel("cmd_cancel", payment_id_of(collection)))
    assert collection.status == CollectionStatus.CANCELED
    decision = decide_cart_update(collection, cart_update("evt_cart_9", amount=1))
    assert decision.kind == "ignored"


def test_decision_does_not_mutate_its_input() -> None:
    collection = cart_with_sessions()
    snapshot = collection.model_dump()
    run_cart_update(collection, cart_update("evt_cart_2", amount=1, region_id="us", now=LATER))
    assert collection.model_dump() == snapshot


def test_customer_is_copied() -> None:
    _, collection = run_cart_update(None, cart_update(customer={"id": "cus_1"}))
    assert collection.customer == {"id": "cus_1"}
    validate_outbox(collection)


def test_delete_outcome_is_ignored() -> None:
    collection = cart_with_sessions()
    decision = decide_cart_update(collection, cart_update("evt_cart_2", region_id="none"))
    after = finish_cart_update(decision, [(c, OK) for c in decision.calls], NOW)
    assert after.sessions == []
