"""cart.updated / checkout.completed rules end to end: one rejection, one republish.

Each rule (ordering, staleness, regions, mismatches, zero amounts, idempotency
conflicts) is tested where it lives: tests/unit/domain/test_domain_checkout.py and
test_domain_cart.py (the decisions), tests/unit/test_checkout_rule_answers.py (the
service's answers over the in-memory fakes). Here the wiring, over the real broker
and MongoDB-protocol server: a rejected checkout is answered with `payment.failed`
caused by it and nothing charged, and a repeated checkout republishes the stored
`payment.authorized` (same id, same bytes).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest

from service.domain.model import PaymentCollection
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


async def _wait_collection(
    harness: ServiceHarness,
    cart: str,
    predicate: Callable[[PaymentCollection], bool],
    timeout: float = 60.0,
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
