"""Redelivered and replayed events take effect at most once (contract promise 2)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from schemas.topics import EVENT_MODELS, INBOUND_TOPICS, topic_for
from service.testing import builders
from service.testing.builders import new_cart_id as _cart
from service.testing.harness import ServiceHarness
from service.testing.harness import caused_by as _caused_by

# `store`: also proven on FerretDB (`make test-store`): it exercises store semantics.
pytestmark = [pytest.mark.integration, pytest.mark.store]


@pytest.fixture
async def harness(kafka_bootstrap: str, mongodb_url: str) -> AsyncIterator[ServiceHarness]:
    async with ServiceHarness(kafka_bootstrap, mongodb_url) as h:
        yield h


def _sample(harness: ServiceHarness, name: str, labels: dict[str, str]) -> float:
    return harness.app.metrics.registry.get_sample_value(name, labels) or 0.0


def _handled(harness: ServiceHarness, event_type: str, outcome: str) -> float:
    return _sample(
        harness,
        "payments_events_handled_total",
        {"topic": topic_for(event_type, harness.prefix), "outcome": outcome},
    )


def _handled_total(harness: ServiceHarness) -> float:
    return sum(
        _handled(harness, t, outcome)
        for t in INBOUND_TOPICS
        for outcome in ("applied", "duplicate", "ignored", "rejected", "dead_lettered")
    )


async def _until(condition: Any, message: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, message
        await asyncio.sleep(0.05)


class Raw:
    """One inbound event as exact bytes, so it can be delivered again unchanged."""

    def __init__(
        self, harness: ServiceHarness, event_type: str, data: dict[str, Any], key: str
    ) -> None:
        self.harness = harness
        self.event_type = event_type
        event = builders.envelope(event_type, data)
        self.id = str(event["id"])
        self.value = builders.encode(event)
        self.key = key
        self.headers = (
            [builders.sign(self.value, *harness.admin_key)]
            if event_type.startswith("admin.")
            else []
        )

    async def send(self, times: int = 1) -> None:
        for _ in range(times):
            await self.harness.publish_raw(
                self.event_type, self.value, key=self.key, headers=self.headers
            )


def _outbound_ids(harness: ServiceHarness, cart: str) -> set[str]:
    return {r.id for r in harness.events(cart_id=cart)}


async def _ledger_ids(harness: ServiceHarness, cart: str) -> list[str]:
    return sorted(str(d["_id"]) for d in await harness.ledger(cart_id=cart))


async def _run_flow(harness: ServiceHarness, cart: str, times: int) -> list[Raw]:
    """cart.updated, checkout, capture, refund, an over-refund and a late cart.updated,
    each delivered `times` times back to back."""
    sent: list[Raw] = []
    cart_updated = Raw(harness, "cart.updated", builders.cart_updated(cart, 5000), cart)
    await cart_updated.send(times)
    sent.append(cart_updated)
    # cart.updated and checkout.completed are different topics, not ordered against
    # each other: let the cart update land first so that it is applied, not ignored.
    deadline = time.monotonic() + 15
    while True:
        collection = await harness.collection(cart)
        if collection is not None and collection.has_processed(cart_updated.id):
            break
        assert time.monotonic() < deadline, "cart.updated was not applied"
        await asyncio.sleep(0.05)
    checkout = Raw(harness, "checkout.completed", builders.checkout_completed(cart, 5000), cart)
    await checkout.send(times)
    sent.append(checkout)
    authorized = await harness.await_event(
        "payment.authorized", cart_id=cart, predicate=_caused_by(checkout.id)
    )
    payment_id = str(authorized.data["payment_id"])
    steps = [
        ("admin.payment.capture", builders.capture(payment_id, 2000), "payment.captured"),
        ("admin.payment.capture", builders.capture(payment_id), "payment.captured"),
        ("admin.payment.refund", builders.refund(payment_id, 500), "payment.refunded"),
        ("admin.payment.refund", builders.refund(payment_id, 99_999), "payment.failed"),
        ("admin.payment.cancel", builders.cancel(payment_id), "payment.failed"),
    ]
    for event_type, data, expected in steps:
        command = Raw(harness, event_type, data, payment_id)
        await command.send(times)
        sent.append(command)
        await harness.await_event(expected, cart_id=cart, predicate=_caused_by(command.id))
    late = Raw(harness, "cart.updated", builders.cart_updated(cart, 7777), cart)
    await late.send(times)
    sent.append(late)
    return sent


async def _assert_final_state(harness: ServiceHarness, cart: str) -> None:
    collection = await harness.collection(cart)
    assert collection is not None and collection.payment is not None
    payment = collection.payment
    assert [c.amount for c in payment.captures] == [2000, 3000]
    assert [r.amount for r in payment.refunds] == [500]
    assert payment.pending == []
    assert collection.amount == 5000
    ledger = await harness.ledger(cart_id=cart)
    assert sorted((d["operation"], d["amount"]) for d in ledger) == [
        ("authorize", 5000),
        ("capture", 2000),
        ("capture", 3000),
        ("refund", 500),
    ]
    # One answer per inbound event that has one: authorized, 2 captured, refunded, 2 failed.
    by_type: dict[str, set[str]] = {}
    for received in harness.events(cart_id=cart):
        EVENT_MODELS[received.type].model_validate(received.event)
        by_type.setdefault(received.type, set()).add(received.id)
    assert {t: len(ids) for t, ids in by_type.items()} == {
        "payment.authorized": 1,
        "payment.captured": 2,
        "payment.refunded": 1,
        "payment.failed": 2,
    }


async def test_every_event_delivered_twice(harness: ServiceHarness) -> None:
    cart = _cart()
    sent = await _run_flow(harness, cart, times=2)
    # Each of the 8 inbound events came twice: 8 were handled as duplicates.
    await _until(lambda: _handled_total(harness) >= 16, "not every delivery was handled")
    await harness.settle(quiet_s=0.7)
    duplicates = sum(_handled(harness, t, "duplicate") for t in INBOUND_TOPICS)
    ignored = _handled(harness, "cart.updated", "ignored")
    # The late cart.updated is ignored (authorized collection) both times; the
    # other seven second deliveries are duplicates.
    assert duplicates == 7, duplicates
    assert ignored == 2, ignored
    await _assert_final_state(harness, cart)
    ids_before = _outbound_ids(harness, cart)
    ledger_before = await _ledger_ids(harness, cart)

    # And once more, much later, every one of them again.
    for raw in sent:
        await raw.send()
    await _until(
        lambda: _handled_total(harness) >= 16 + len(sent), "late redeliveries were not handled"
    )
    await harness.settle(quiet_s=0.7)
    assert sum(_handled(harness, t, "duplicate") for t in INBOUND_TOPICS) == 7 + 7
    assert _outbound_ids(harness, cart) == ids_before
    assert await _ledger_ids(harness, cart) == ledger_before
    await _assert_final_state(harness, cart)
    assert harness.events("payments.dead_letter") == []


async def test_whole_topic_replay_with_fresh_consumer_group(harness: ServiceHarness) -> None:
    cart = _cart()
    sent = await _run_flow(harness, cart, times=1)
    await _until(lambda: _handled_total(harness) >= len(sent), "flow not fully handled")
    await harness.settle(quiet_s=0.7)
    await _assert_final_state(harness, cart)
    ids_before = _outbound_ids(harness, cart)
    ledger_before = await _ledger_ids(harness, cart)
    state_before = await harness.collection(cart)
    assert state_before is not None

    await harness.stop_app()
    await harness.start_app(consumer_group=harness.settings_overrides["consumer_group"] + "-replay")
    # The fresh group reads every inbound topic from the beginning.
    await _until(
        lambda: _handled_total(harness) >= len(sent), "replay not fully handled", timeout=60.0
    )
    await harness.settle(quiet_s=1.0)
    assert _handled_total(harness) == len(sent)
    assert sum(_handled(harness, t, "applied") for t in INBOUND_TOPICS) == 0
    assert sum(_handled(harness, t, "duplicate") for t in INBOUND_TOPICS) == len(sent) - 1
    assert _outbound_ids(harness, cart) == ids_before
    assert await _ledger_ids(harness, cart) == ledger_before
    await _assert_final_state(harness, cart)
    state_after = await harness.collection(cart)
    assert state_after is not None and state_after.payment is not None
    assert state_after.payment.captures == state_before.payment.captures  # type: ignore[union-attr]
    assert state_after.payment.refunds == state_before.payment.refunds  # type: ignore[union-attr]
    assert state_after.status == state_before.status
