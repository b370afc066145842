"""Amount invariants under concurrent capture and refund commands (contract promise 8)."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from schemas.topics import EVENT_MODELS, topic_for
from service.domain.derived_ids import provider_key
from service.entrypoints.app import PaymentsApp
from service.settings import load_settings
from service.testing import builders
from service.testing.harness import ReceivedEvent, ServiceHarness

# `store`: also proven on FerretDB (`make test-store`): it exercises store semantics.
pytestmark = [pytest.mark.integration, pytest.mark.store]

AUTHORIZED = 5000
INITIAL_CAPTURE = 1500
ANSWERS = ("payment.captured", "payment.refunded", "payment.failed")
EXPECTED_FAILURES = {
    "admin.payment.capture": {"amount_exceeds_authorized"},
    "admin.payment.refund": {"nothing_captured", "amount_exceeds_captured"},
}


@pytest.fixture
async def harness(kafka_bootstrap: str, mongodb_url: str) -> AsyncIterator[ServiceHarness]:
    async with ServiceHarness(kafka_bootstrap, mongodb_url) as h:
        yield h


def _commands(payment_id: str, seed: int, count: int = 50) -> list[tuple[str, dict[str, Any]]]:
    rng = random.Random(seed)
    commands: list[tuple[str, dict[str, Any]]] = []
    for i in range(count):
        if i % 2 == 0:
            amount = None if i in (20, 40) else rng.randrange(100, 900, 50)
            commands.append(("admin.payment.capture", builders.capture(payment_id, amount)))
        else:
            amount = None if i in (25, 45) else rng.randrange(50, 700, 25)
            commands.append(("admin.payment.refund", builders.refund(payment_id, amount)))
    return commands


async def _authorized_payment(harness: ServiceHarness) -> tuple[str, str]:
    """An authorized payment of 5000 with 1500 captured already, so that refunds racing
    the captures have something to refund whatever order the commands land in."""
    cart = f"cart_{uuid.uuid4().hex[:12]}"
    await harness.publish("checkout.completed", builders.checkout_completed(cart, AUTHORIZED))
    authorized = await harness.await_event("payment.authorized", cart_id=cart)
    payment_id = str(authorized.data["payment_id"])
    await harness.publish("admin.payment.capture", builders.capture(payment_id, INITIAL_CAPTURE))
    await harness.await_event("payment.captured", cart_id=cart)
    return cart, payment_id


async def _answers(
    harness: ServiceHarness, command_ids: dict[str, str], timeout: float = 60.0
) -> dict[str, list[ReceivedEvent]]:
    """Wait until every command has an answer, then collect them per command id."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        answered: dict[str, list[ReceivedEvent]] = {cid: [] for cid in command_ids}
        for received in harness.received:
            cause = received.event.get("causationid")
            if received.type in ANSWERS and cause in answered:
                answered[cause].append(received)
        missing = [cid for cid, events in answered.items() if not events]
        if not missing:
            return answered
        assert loop.time() < deadline, f"{len(missing)} commands never answered"
        await asyncio.sleep(0.1)


async def _check_invariants(
    harness: ServiceHarness, cart: str, command_ids: dict[str, str]
) -> None:
    await _answers(harness, command_ids)
    await harness.settle(quiet_s=1.0)
    answered = await _answers(harness, command_ids)

    # Every command answered by exactly one outbound event (re-sends keep the id).
    captured_events: list[ReceivedEvent] = []
    refunded_events: list[ReceivedEvent] = []
    for command_id, events in answered.items():
        ids = {e.id for e in events}
        assert len(ids) == 1, (command_id, [(e.type, e.id) for e in events])
        answer = events[0]
        assert answer.key == cart
        EVENT_MODELS[answer.type].model_validate(answer.event)
        command_type = command_ids[command_id]
        if answer.type == "payment.failed":
            assert answer.data["reason"] in EXPECTED_FAILURES[command_type], answer.data
            assert answer.data["operation"] == command_type.rsplit(".", 1)[1]
        elif answer.type == "payment.captured":
            assert command_type == "admin.payment.capture"
            captured_events.append(answer)
        else:
            assert command_type == "admin.payment.refund"
            refunded_events.append(answer)

    # The mix is not trivial: money moved both ways and some commands were refused.
    failed = [cid for cid, events in answered.items() if events[0].type == "payment.failed"]
    assert captured_events and refunded_events and failed, (
        len(captured_events),
        len(refunded_events),
        len(failed),
    )

    # Invariants from the published events.
    captured_sum = INITIAL_CAPTURE + sum(e.data["amount"] for e in captured_events)
    refunded_sum = sum(e.data["amount"] for e in refunded_events)
    assert INITIAL_CAPTURE < captured_sum <= AUTHORIZED
    assert refunded_sum <= captured_sum
    assert max(e.data["captured_total"] for e in captured_events) == captured_sum
    if refunded_events:
        assert max(e.data["refunded_total"] for e in refunded_events) == refunded_sum
    # Running totals never exceed the limits and are each reported once.
    assert len({e.data["captured_total"] for e in captured_events}) == len(captured_events)
    assert all(e.data["captured_total"] <= AUTHORIZED for e in captured_events)
    assert sum(1 for e in captured_events if e.data["fully_captured"]) <= 1

    # Invariants from the stored state.
    collection = await harness.collection(cart)
    assert collection is not None and collection.payment is not None
    payment = collection.payment
    assert payment.pending == []
    assert payment.captured_total == captured_sum <= payment.amount == AUTHORIZED
    assert payment.refunded_total == refunded_sum <= payment.captured_total
    assert sorted(c.id for c in payment.captures[1:]) == sorted(
        e.data["capture_id"] for e in captured_events
    )
    assert payment.captures[0].amount == INITIAL_CAPTURE
    assert sorted(r.id for r in payment.refunds) == sorted(
        e.data["refund_id"] for e in refunded_events
    )
    assert len({c.command_id for c in payment.captures}) == len(payment.captures)
    assert len({r.command_id for r in payment.refunds}) == len(payment.refunds)

    # Invariants at the provider: one ledger entry per successful command, same sums.
    captures = await harness.ledger(cart_id=cart, operation="capture")
    refunds = await harness.ledger(cart_id=cart, operation="refund")
    # Provider keys name the collection and operation (issue 16).
    assert sorted(d["idempotency_key"] for d in captures) == sorted(
        provider_key(collection.id, "capture", c.command_id) for c in payment.captures
    )
    assert sorted(d["idempotency_key"] for d in refunds) == sorted(
        provider_key(collection.id, "refund", r.command_id) for r in payment.refunds
    )
    assert sum(d["amount"] for d in captures) == captured_sum
    assert sum(d["amount"] for d in refunds) == refunded_sum
    assert len(await harness.ledger(cart_id=cart, operation="authorize")) == 1
    assert harness.events("payments.dead_letter") == []


async def _publish_all(
    harness: ServiceHarness,
    commands: list[tuple[str, dict[str, Any]]],
    *,
    random_keys: bool = False,
) -> dict[str, str]:
    ids = await asyncio.gather(
        *(
            harness.publish(t, d, key=f"k{uuid.uuid4().hex}" if random_keys else None)
            for t, d in commands
        )
    )
    assert len(set(ids)) == len(commands)
    return dict(zip(ids, (t for t, _ in commands), strict=True))


async def test_fifty_concurrent_captures_and_refunds(harness: ServiceHarness) -> None:
    cart, payment_id = await _authorized_payment(harness)
    command_ids = await _publish_all(harness, _commands(payment_id, seed=7))
    await _check_invariants(harness, cart, command_ids)


async def test_two_instances_race_on_the_same_commands(harness: ServiceHarness) -> None:
    """A second instance in another consumer group handles every command too, and
    the commands are spread over partitions: both instances race on every command
    and on the same collection, truly concurrently."""
    cart, payment_id = await _authorized_payment(harness)
    overrides = {
        **harness.settings_overrides,
        "consumer_group": harness.settings_overrides["consumer_group"] + "-twin",
    }
    twin = PaymentsApp(load_settings(**overrides), serve_http=False)
    await twin.start()
    try:
        command_ids = await _publish_all(harness, _commands(payment_id, seed=11), random_keys=True)
        await _check_invariants(harness, cart, command_ids)
        # The twin really handled every command too (applied, duplicate or rejected),
        # and, reading from the beginning, the initial capture as well.
        handled = sum(
            twin.metrics.registry.get_sample_value(
                "payments_events_handled_total",
                {"topic": topic_for(t, harness.prefix), "outcome": outcome},
            )
            or 0.0
            for t in ("admin.payment.capture", "admin.payment.refund")
            for outcome in ("applied", "duplicate", "rejected")
        )
        assert handled == len(command_ids) + 1
    finally:
        await twin.stop()
