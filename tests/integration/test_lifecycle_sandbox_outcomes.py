"""Checkout outcomes driven by the sandbox provider's test payment methods, end to end.

One test per failure mode and flow over the real broker and MongoDB-protocol
server: a decline, 3-D Secure, a lost answer settled by the reconciler, capture on
authorization. A failed 3-D Secure, a flaky provider and a provider error are
answered as tests/unit/test_provider_outcome_answers.py shows (over the fakes);
the sandbox's payment methods themselves: tests/integration/test_providers.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from service.domain import derived_ids as ids
from service.domain.statuses import CollectionStatus, SessionStatus
from service.testing import builders
from service.testing.builders import new_cart_id as _cart
from service.testing.harness import ServiceHarness

pytestmark = pytest.mark.integration

REGIONS = {"eu": ["manual", "sandbox"], "us": ["sandbox"]}


@pytest.fixture(scope="module")
async def harness(kafka_bootstrap: str, mongodb_url: str) -> AsyncIterator[ServiceHarness]:
    async with ServiceHarness(kafka_bootstrap, mongodb_url, region_providers=REGIONS) as h:
        yield h


async def _checkout(
    harness: ServiceHarness,
    cart: str,
    payment_method: str | None,
    key: str | None = None,
    **payment_data: object,
) -> tuple[str, str]:
    key = key or builders.new_id("idem")
    data = dict(payment_data)
    if payment_method is not None:
        data["payment_method"] = payment_method
    event_id = await harness.publish(
        "checkout.completed",
        builders.checkout_completed(cart, 5000, idempotency_key=key, payment_data=data or None),
    )
    return event_id, key


def _at_provider(cart: str, key: str) -> str:
    """The key the provider sees for a checkout key: namespaced by collection and
    operation (issue 16)."""
    return ids.provider_key(ids.collection_id(cart), "authorize", key)


async def test_declined(harness: ServiceHarness) -> None:
    cart = _cart()
    await harness.publish("cart.updated", builders.cart_updated(cart, 5000))
    event_id, key = await _checkout(harness, cart, "pm_card_chargeDeclined")
    failed = await harness.await_event("payment.failed", cart_id=cart)
    assert failed.event["causationid"] == event_id
    assert failed.data["operation"] == "authorize"
    assert failed.data["reason"] == "declined"
    assert failed.data["retryable"] is False
    assert failed.data["provider_id"] == "sandbox"
    assert failed.data["amount"] == 5000

    collection = await harness.collection(cart)
    assert collection is not None
    session = collection.session_for("sandbox")
    assert session is not None
    assert session.status == SessionStatus.ERROR
    assert failed.data["session_id"] == session.id
    assert collection.payment is None
    assert collection.status == CollectionStatus.FAILED
    ledger = await harness.ledger(idempotency_key=_at_provider(cart, key))
    assert [(e["operation"], e["outcome"]) for e in ledger] == [("authorize", "declined")]
    await harness.settle(quiet_s=0.5)
    assert harness.events("payment.authorized", cart_id=cart) == []


async def test_requires_action_then_succeeded_with_same_key(harness: ServiceHarness) -> None:
    cart = _cart()
    await harness.publish("cart.updated", builders.cart_updated(cart, 5000))
    first_id, key = await _checkout(harness, cart, "pm_card_authenticationRequired")
    action = await harness.await_event("payment.requires_action", cart_id=cart)
    assert action.event["causationid"] == first_id
    assert action.data["amount"] == 5000
    assert action.data["provider_id"] == "sandbox"
    assert isinstance(action.data["action"], dict) and action.data["action"]
    assert action.data["action"]["type"] == "redirect_to_url"
    assert action.data["action"]["url"]
    collection = await harness.collection(cart)
    assert collection is not None
    session = collection.session_for("sandbox")
    assert session is not None and session.status == SessionStatus.REQUIRES_MORE
    assert action.data["session_id"] == session.id
    assert await harness.ledger(idempotency_key=_at_provider(cart, key)) == []

    second_id, _ = await _checkout(
        harness, cart, "pm_card_authenticationRequired", key=key, action_result="succeeded"
    )
    assert second_id != first_id
    authorized = await harness.await_event("payment.authorized", cart_id=cart)
    assert authorized.event["causationid"] == second_id
    assert authorized.data["session_id"] == session.id
    assert authorized.data["amount"] == 5000
    ledger = await harness.ledger(idempotency_key=_at_provider(cart, key))
    assert [(e["operation"], e["outcome"]) for e in ledger] == [("authorize", "authorized")]
    collection = await harness.collection(cart)
    assert collection is not None and collection.status == CollectionStatus.AUTHORIZED


async def test_lost_response_authorizes_exactly_once(harness: ServiceHarness) -> None:
    cart = _cart()
    event_id, key = await _checkout(harness, cart, "pm_card_lostResponse")
    authorized = await harness.await_event("payment.authorized", cart_id=cart)
    assert authorized.event["causationid"] == event_id
    assert authorized.data["amount"] == 5000
    # Give the reconciler a few passes: it must not charge again either.
    await harness.settle(quiet_s=1.5)
    assert len({r.id for r in harness.events("payment.authorized", cart_id=cart)}) == 1
    assert harness.events("payment.failed", cart_id=cart) == []
    ledger = await harness.ledger(cart_id=cart)
    assert [(e["operation"], e["outcome"]) for e in ledger] == [("authorize", "authorized")]
    assert ledger[0]["idempotency_key"] == _at_provider(cart, key)
    collection = await harness.collection(cart)
    assert collection is not None and collection.payment is not None
    assert all(not s.needs_reconcile for s in collection.sessions)


async def test_capture_on_authorization(kafka_bootstrap: str, mongodb_url: str) -> None:
    async with ServiceHarness(
        kafka_bootstrap, mongodb_url, provider_options={"sandbox": {"capture": True}}
    ) as harness:
        cart = _cart()
        event_id, key = await _checkout(harness, cart, None)
        authorized = await harness.await_event("payment.authorized", cart_id=cart)
        captured = await harness.await_event("payment.captured", cart_id=cart)
        assert authorized.event["causationid"] == event_id
        assert captured.event["causationid"] == event_id
        assert captured.data["payment_id"] == authorized.data["payment_id"]
        assert captured.data["amount"] == 5000
        assert captured.data["captured_total"] == 5000
        assert captured.data["fully_captured"] is True
        collection = await harness.collection(cart)
        assert collection is not None and collection.payment is not None
        assert collection.payment.captured_total == 5000
        assert collection.status == CollectionStatus.COMPLETED
        # One authorization and one capture at the provider, both under the checkout's key.
        ledger = await harness.ledger(idempotency_key=_at_provider(cart, key))
        assert sorted((e["operation"], e["outcome"], e["amount"]) for e in ledger) == [
            ("authorize", "authorized", 5000),
            ("capture", "captured", 5000),
        ]
        await harness.settle(quiet_s=0.5)
        assert len({r.id for r in harness.events("payment.captured", cart_id=cart)}) == 1
