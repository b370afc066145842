"""Admin commands are batched like checkouts (issue 15).

The consumer prefetches a batch's payments with one query, claims its admin
commands together and reads their orphan answers together
(`StoreBatch.prefetch_by_payment`, `StoreBatch.prefetch_commands`); the handlers
then load and claim through the batch's store without a round trip each. The
claim keeps `claim_command`'s meaning exactly: the same fingerprint again is a
duplicate, another one an idempotency conflict; one payment's commands are still
applied in their order.
"""

from __future__ import annotations

from typing import Any

import orjson

from schemas.topics import PAYMENT_CAPTURED, PAYMENT_FAILED, PAYMENT_REFUNDED, topic_for
from service.consumer import BatchProcessor, Record
from tests.support.memory import MemoryCollectionStore, RecordingPublisher
from tests.support.world import World

PREFIX = "sba."


def _command(
    kind: str, command_id: str, payment_id: str, offset: int, amount: int | None = None
) -> Record:
    data: dict[str, Any] = {"payment_id": payment_id, "requested_by": "ops"}
    if amount is not None:
        data["amount"] = amount
    event_type = f"admin.payment.{kind}"
    event = {
        "specversion": "1.0",
        "id": command_id,
        "source": "/store-batch-admin",
        "type": event_type,
        "data": data,
    }
    topic = topic_for(event_type, PREFIX)
    return Record(topic, 0, offset, payment_id.encode(), orjson.dumps(event), ())


def _processor(world: World, publisher: RecordingPublisher) -> BatchProcessor:
    return world.batch_processor(publisher, PREFIX)


async def _authorized(world: World, cart_id: str, amount: int = 1000) -> str:
    await world.cart(cart_id, amount)
    await world.checkout(cart_id, amount, f"key_{cart_id}")
    payment = (await world.collection(cart_id)).payment
    assert payment is not None and payment.captured_total == 0
    return payment.id


def _reset_counts(store: MemoryCollectionStore) -> None:
    store.payment_queries = store.claim_queries = store.orphan_queries = 0


async def test_a_batch_of_admin_commands_costs_one_prefetch_not_a_query_each() -> None:
    world = World("fake")
    payments = [await _authorized(world, f"cart_{i}") for i in range(4)]
    store: MemoryCollectionStore = world.store
    _reset_counts(store)
    publisher = RecordingPublisher()

    records = [_command("capture", f"cmd_{i}", p, i) for i, p in enumerate(payments)]
    await _processor(world, publisher).process(records)

    assert store.payment_prefetches == [tuple(payments)]
    assert store.command_prefetches == [
        tuple((f"cmd_{i}", f"capture|{p}|None") for i, p in enumerate(payments))
    ]
    assert (store.payment_queries, store.claim_queries, store.orphan_queries) == (0, 0, 0), (
        "a handler queried what the batch already held"
    )
    assert store.conflicts == 0
    for i in range(4):
        payment = (await world.collection(f"cart_{i}")).payment
        assert payment is not None and payment.captured_total == 1000
    assert len(publisher.of_type(PAYMENT_CAPTURED)) == 4
    assert sorted(store.claims) == [f"cmd_{i}" for i in range(4)]


async def test_the_same_command_twice_in_a_batch_is_a_duplicate() -> None:
    world = World("fake")
    payment_id = await _authorized(world, "cart_d")
    publisher = RecordingPublisher()

    records = [
        _command("capture", "cmd_twice", payment_id, 0, 600),
        _command("capture", "cmd_twice", payment_id, 1, 600),
    ]
    await _processor(world, publisher).process(records)

    payment = (await world.collection("cart_d")).payment
    assert payment is not None and payment.captured_total == 600
    assert [op for op, _key, _amount in world.fake.operations if op == "capture"] == ["capture"]
    assert len(publisher.of_type(PAYMENT_CAPTURED)) == 1
    assert world.store.claims == {"cmd_twice": f"capture|{payment_id}|600"}


async def test_a_command_id_reused_for_another_command_is_a_conflict() -> None:
    world = World("fake")
    payment_id = await _authorized(world, "cart_c")
    publisher = RecordingPublisher()

    # The first of the id in the batch is claimed; the second, another amount, conflicts.
    records = [
        _command("capture", "cmd_reused", payment_id, 0, 400),
        _command("capture", "cmd_reused", payment_id, 1, 500),
    ]
    await _processor(world, publisher).process(records)

    payment = (await world.collection("cart_c")).payment
    assert payment is not None and payment.captured_total == 400
    assert world.store.claims == {"cmd_reused": f"capture|{payment_id}|400"}
    failed = publisher.of_type(PAYMENT_FAILED)
    assert [e.payload["data"]["reason"] for e in failed] == ["idempotency_conflict"]


async def test_a_command_id_claimed_in_an_earlier_batch_conflicts_in_a_later_one() -> None:
    world = World("fake")
    payment_id = await _authorized(world, "cart_e")
    await _processor(world, RecordingPublisher()).process(
        [_command("capture", "cmd_early", payment_id, 0, 300)]
    )
    publisher = RecordingPublisher()
    store: MemoryCollectionStore = world.store
    _reset_counts(store)

    await _processor(world, publisher).process(
        [
            _command("refund", "cmd_early", payment_id, 1, 100),  # another command, same id
            _command("capture", "cmd_early", payment_id, 2, 300),  # the same again
        ]
    )

    assert store.claim_queries == 0
    payment = (await world.collection("cart_e")).payment
    assert payment is not None
    assert (payment.captured_total, payment.refunded_total) == (300, 0)
    failed = publisher.of_type(PAYMENT_FAILED)
    assert [e.payload["data"]["reason"] for e in failed] == ["idempotency_conflict"]
    assert publisher.of_type(PAYMENT_CAPTURED) == []  # the duplicate had nothing unsent


async def test_two_commands_for_one_payment_in_a_batch_are_applied_in_order() -> None:
    world = World("fake")
    payment_id = await _authorized(world, "cart_o")
    store: MemoryCollectionStore = world.store
    _reset_counts(store)
    publisher = RecordingPublisher()

    # The refund is valid only after the capture: out of order it would be refused.
    records = [
        _command("capture", "cmd_capture", payment_id, 0),
        _command("refund", "cmd_refund", payment_id, 1, 250),
    ]
    await _processor(world, publisher).process(records)

    payment = (await world.collection("cart_o")).payment
    assert payment is not None
    assert (payment.captured_total, payment.refunded_total) == (1000, 250)
    assert [e.type for e in publisher.published] == [PAYMENT_CAPTURED, PAYMENT_REFUNDED]
    # The second command started from what the first saved in the batch.
    assert store.payment_queries == 0
    assert store.conflicts == 0


async def test_an_unknown_payment_is_answered_once_in_a_batch() -> None:
    world = World("fake")
    publisher = RecordingPublisher()

    records = [
        _command("capture", "cmd_ghost", "pay_ghost", 0),
        _command("capture", "cmd_ghost", "pay_ghost", 1),
    ]
    await _processor(world, publisher).process(records)

    failed = publisher.of_type(PAYMENT_FAILED)
    assert {e.id for e in failed} == {failed[0].id}, "the redelivery got another answer"
    assert failed[0].payload["data"]["reason"] == "payment_not_found"
    assert list(world.store.orphans) == ["cmd_ghost"]
