"""cart.updated / checkout.completed rules: ordering, staleness, regions, mismatches."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest

from schemas.topics import topic_for
from service.domain.model import PaymentCollection
from service.domain.statuses import CollectionStatus, SessionStatus
from service.testing import builders
from service.testing.builders import new_cart_id as _cart
from service.testing.harness import ServiceHarness
from service.testing.harness import caused_by as _caused_by

pytestmark = pytest.mark.integration

REGIONS = {"eu": ["manual", "sandbox"], "us": ["sandbox"]}


@pytest.fixture(scope="module")
async def harness(kafka_bootstrap: str, mongodb_url: str) -> AsyncIterator[ServiceHarness]:
    async with ServiceHarness(kafka_bootstrap, mongodb_url, region_providers=REGIONS) as h:
        yield h


def _handled(harness: ServiceHarness, event_type: str, outcome: str) -> float:
    value = harness.app.metrics.registry.get_sample_value(
        "payments_events_handled_total",
        {"topic": topic_for(event_type, harness.prefix), "outcome": outcome},
    )
    return value or 0.0


async def _wait_handled(
    harness: ServiceHarness, event_type: str, outcome: str, at_least: float, timeout: float = 15.0
) -> None:
    deadline = time.monotonic() + timeout
    while _handled(harness, event_type, outcome) < at_least:
        assert time.monotonic() < deadline, f"no {outcome} {event_type} handled in {timeout}s"
        await asyncio.sleep(0.05)


async def _wait_collection(
    harness: ServiceHarness,
    cart: str,
    predicate: Callable[[PaymentCollection], bool],
    timeout: float = 15.0,
) -> PaymentCollection:
    deadline = time.monotonic() + timeout
    while True:
        collection = await harness.collection(cart)
        if collection is not None and predicate(collection):
            return collection
        assert time.monotonic() < deadline, f"collection of {cart} never matched: {collection}"
        await asyncio.sleep(0.05)


async def _authorize(
    harness: ServiceHarness, cart: str, amount: int = 5000, key: str | None = None
) -> tuple[str, str]:
    key = key or builders.new_id("idem")
    event_id = await harness.publish(
        "checkout.completed", builders.checkout_completed(cart, amount, idempotency_key=key)
    )
    await harness.await_event("payment.authorized", cart_id=cart, predicate=_caused_by(event_id))
    return event_id, key


async def test_checkout_without_cart_updated(harness: ServiceHarness) -> None:
    cart = _cart()
    event_id = await harness.publish(
        "checkout.completed", builders.checkout_completed(cart, 4200, currency_code="EUR")
    )
    authorized = await harness.await_event("payment.authorized", cart_id=cart)
    assert authorized.event["causationid"] == event_id
    assert authorized.data["amount"] == 4200
    assert authorized.data["currency_code"] == "eur"
    assert authorized.data["provider_id"] == "sandbox"
    collection = await harness.collection(cart)
    assert collection is not None
    assert collection.amount == 4200
    assert collection.status == CollectionStatus.AUTHORIZED
    assert [s.provider_id for s in collection.sessions] == ["sandbox"]
    assert collection.sessions[0].status == SessionStatus.AUTHORIZED
    assert collection.payment is not None
    assert collection.payment.id == authorized.data["payment_id"]
    ledger = await harness.ledger(cart_id=cart)
    assert [(e["operation"], e["amount"]) for e in ledger] == [("authorize", 4200)]


async def test_stale_cart_update_is_ignored(harness: ServiceHarness) -> None:
    cart = _cart()
    ignored_before = _handled(harness, "cart.updated", "ignored")
    await harness.publish("cart.updated", builders.cart_updated(cart, 6000, version=2))
    await _wait_collection(harness, cart, lambda c: c.cart_version == 2)
    await harness.publish("cart.updated", builders.cart_updated(cart, 5000, version=1))
    await _wait_handled(harness, "cart.updated", "ignored", ignored_before + 1)

    collection = await harness.collection(cart)
    assert collection is not None
    assert collection.amount == 6000
    assert collection.cart_version == 2
    assert all(s.amount == 6000 for s in collection.sessions)

    # The checkout agrees with the newer amount, not the stale one.
    await _authorize(harness, cart, 6000)
    failed = harness.events("payment.failed", cart_id=cart)
    assert failed == []


async def test_region_change_deletes_dropped_provider_session(harness: ServiceHarness) -> None:
    cart = _cart()
    await harness.publish("cart.updated", builders.cart_updated(cart, 5000, region_id="eu"))
    first = await _wait_collection(harness, cart, lambda c: len(c.sessions) == 2)
    assert sorted(s.provider_id for s in first.sessions) == ["manual", "sandbox"]
    sandbox_session = first.session_for("sandbox")
    assert sandbox_session is not None

    await harness.publish("cart.updated", builders.cart_updated(cart, 5000, region_id="us"))
    second = await _wait_collection(harness, cart, lambda c: c.region_id == "us")
    assert [s.provider_id for s in second.sessions] == ["sandbox"]
    assert second.session_for("manual") is None
    # The surviving session is the same one, not re-created.
    assert second.sessions[0].id == sandbox_session.id

    # manual is no longer available in region us.
    event_id = await harness.publish(
        "checkout.completed",
        builders.checkout_completed(cart, 5000, provider_id="manual", region_id="us"),
    )
    failed = await harness.await_event(
        "payment.failed", cart_id=cart, predicate=_caused_by(event_id)
    )
    assert failed.data["reason"] == "provider_not_available"
    assert failed.data["operation"] == "authorize"


async def test_cart_update_after_authorization_changes_nothing(harness: ServiceHarness) -> None:
    cart = _cart()
    await harness.publish("cart.updated", builders.cart_updated(cart, 5000, version=1))
    await _wait_collection(harness, cart, lambda c: len(c.sessions) == 2)
    await _authorize(harness, cart, 5000)
    before = await harness.collection(cart)
    assert before is not None

    ignored_before = _handled(harness, "cart.updated", "ignored")
    await harness.publish(
        "cart.updated", builders.cart_updated(cart, 9999, version=2, region_id="us")
    )
    await _wait_handled(harness, "cart.updated", "ignored", ignored_before + 1)

    after = await harness.collection(cart)
    assert after is not None
    assert after.amount == 5000
    assert after.region_id == "eu"
    assert after.cart_version == 1
    assert after.status == CollectionStatus.AUTHORIZED
    assert [(s.id, s.amount, s.status) for s in after.sessions] == [
        (s.id, s.amount, s.status) for s in before.sessions
    ]
    assert after.payment is not None and after.payment.amount == 5000


async def test_amount_mismatch(harness: ServiceHarness) -> None:
    cart = _cart()
    await harness.publish("cart.updated", builders.cart_updated(cart, 5000))
    await _wait_collection(harness, cart, lambda c: len(c.sessions) == 2)
    event_id = await harness.publish("checkout.completed", builders.checkout_completed(cart, 4000))
    failed = await harness.await_event("payment.failed", cart_id=cart)
    assert failed.event["causationid"] == event_id
    assert failed.data["operation"] == "authorize"
    assert failed.data["reason"] == "amount_mismatch"
    assert failed.data["retryable"] is False
    assert await harness.ledger(cart_id=cart) == []
    collection = await harness.collection(cart)
    assert collection is not None and collection.payment is None


async def test_currency_mismatch(harness: ServiceHarness) -> None:
    cart = _cart()
    await harness.publish("cart.updated", builders.cart_updated(cart, 5000, currency_code="usd"))
    await _wait_collection(harness, cart, lambda c: len(c.sessions) == 2)
    event_id = await harness.publish(
        "checkout.completed", builders.checkout_completed(cart, 5000, currency_code="eur")
    )
    failed = await harness.await_event("payment.failed", cart_id=cart)
    assert failed.event["causationid"] == event_id
    assert failed.data["reason"] == "currency_mismatch"
    assert failed.data["operation"] == "authorize"
    assert await harness.ledger(cart_id=cart) == []
    collection = await harness.collection(cart)
    assert collection is not None and collection.payment is None


async def test_unknown_provider(harness: ServiceHarness) -> None:
    cart = _cart()
    event_id = await harness.publish(
        "checkout.completed", builders.checkout_completed(cart, 5000, provider_id="stripe")
    )
    failed = await harness.await_event("payment.failed", cart_id=cart)
    assert failed.event["causationid"] == event_id
    assert failed.data["operation"] == "authorize"
    assert failed.data["reason"] == "provider_not_available"
    assert failed.data["retryable"] is False
    assert await harness.ledger(cart_id=cart) == []
    collection = await harness.collection(cart)
    assert collection is None or collection.payment is None


async def test_zero_amount_authorized_by_system(harness: ServiceHarness) -> None:
    cart = _cart()
    await harness.publish("cart.updated", builders.cart_updated(cart, 0))
    await _wait_collection(harness, cart, lambda c: c.amount == 0)
    collection = await harness.collection(cart)
    assert collection is not None and collection.sessions == []

    event_id = await harness.publish("checkout.completed", builders.checkout_completed(cart, 0))
    authorized = await harness.await_event("payment.authorized", cart_id=cart)
    assert authorized.event["causationid"] == event_id
    assert authorized.data["provider_id"] == "system"
    assert authorized.data["amount"] == 0
    assert authorized.data["payment_id"]
    assert authorized.data["session_id"]
    assert await harness.ledger(cart_id=cart) == []
    collection = await harness.collection(cart)
    assert collection is not None and collection.payment is not None
    assert collection.payment.provider_id == "system"
    assert collection.status == CollectionStatus.AUTHORIZED


async def test_later_checkout_with_new_key_republishes_same_event(
    harness: ServiceHarness,
) -> None:
    cart = _cart()
    first_id, first_key = await _authorize(harness, cart)
    original = harness.events("payment.authorized", cart_id=cart)
    assert len(original) == 1

    second_id = await harness.publish("checkout.completed", builders.checkout_completed(cart))
    again = await harness.await_event("payment.authorized", cart_id=cart, count=2)
    assert again.id == original[0].id
    assert again.event == original[0].event  # the stored event, byte for byte the same data
    # And the same key, same amount and provider: answered the same way.
    await harness.publish(
        "checkout.completed", builders.checkout_completed(cart, idempotency_key=first_key)
    )
    third = await harness.await_event("payment.authorized", cart_id=cart, count=3)
    assert third.id == original[0].id
    await harness.settle(quiet_s=0.5)
    assert {r.id for r in harness.events(cart_id=cart)} == {original[0].id}
    assert second_id != first_id
    ledger = await harness.ledger(cart_id=cart)
    assert [e["operation"] for e in ledger] == ["authorize"]
    collection = await harness.collection(cart)
    assert collection is not None and collection.payment is not None
    assert collection.payment.id == original[0].data["payment_id"]


async def test_same_key_different_amount_is_idempotency_conflict(
    harness: ServiceHarness,
) -> None:
    cart = _cart()
    _, key = await _authorize(harness, cart, 5000)
    event_id = await harness.publish(
        "checkout.completed", builders.checkout_completed(cart, 6000, idempotency_key=key)
    )
    failed = await harness.await_event("payment.failed", cart_id=cart)
    assert failed.event["causationid"] == event_id
    assert failed.data["operation"] == "authorize"
    assert failed.data["reason"] == "idempotency_conflict"
    assert failed.data["retryable"] is False
    # Nothing moved: still one authorization of 5000.
    ledger = await harness.ledger(cart_id=cart)
    assert [(e["operation"], e["amount"]) for e in ledger] == [("authorize", 5000)]
    collection = await harness.collection(cart)
    assert collection is not None and collection.payment is not None
    assert collection.payment.amount == 5000
