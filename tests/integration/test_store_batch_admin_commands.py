"""A batch of admin commands, counted in MongoDB commands (issue 15).

Admin commands used to cost four round trips each (orphan look-up, claim
`insert`, load `find`, a second load to finish) while checkouts were batched.
With the batch's prefetch by payment and its grouped claims, a batch of N
commands costs a constant number of commands, measured with PyMongo's command
monitoring against the real MongoDB-protocol server, and the claims still mean
what `claim_command` means (the same command again is a duplicate, another one
under the same id a conflict).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from schemas.inbound import AdminCapture
from service.adapters.mongo_store import MongoCollectionStore
from service.handlers import PaymentService
from service.testing.builders import new_id
from tests.integration.test_store_batch_commands import Commands
from tests.support.world import World, claim_of, handle

# `store`: also proven on FerretDB (`make test-store`): it exercises store semantics.
pytestmark = [pytest.mark.integration, pytest.mark.store]


@pytest.fixture
async def world(mongodb_url: str) -> AsyncIterator[tuple[World, Commands]]:
    """The service over the MongoDB store (fake provider), its commands counted."""
    commands = Commands()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        mongodb_url, tz_aware=True, event_listeners=[commands]
    )
    name = new_id("admin_batch")
    database: AsyncDatabase[dict[str, Any]] = client[name]
    store = MongoCollectionStore(database)
    await store.create_indexes()
    w = World("fake")
    w.store = store  # type: ignore[assignment]
    w.service = PaymentService(store, w.registry, w.caller, clock=w.clock)
    try:
        yield w, commands
    finally:
        await client.drop_database(name)
        await client.close()


async def _payments(world: World, count: int) -> list[str]:
    ids = []
    for index in range(count):
        cart_id = world.new_id("cart")
        await world.cart(cart_id, 1000)
        await world.checkout(cart_id, 1000, f"key_{index}")
        payment = (await world.collection(cart_id)).payment
        assert payment is not None
        ids.append(payment.id)
    return ids


async def _run_batch(
    world: World, commands: list[tuple[str, AdminCapture]]
) -> list[tuple[str, str]]:
    """As the consumer runs a batch: prefetch, then the handlers concurrently."""
    store = world.service.store
    assert isinstance(store, MongoCollectionStore)
    batch = store.batch()
    await asyncio.gather(
        batch.prefetch_by_payment([data.payment_id for _, data in commands]),
        batch.prefetch_commands([claim_of(command_id, data) for command_id, data in commands]),
    )
    service = world.service.using(batch)
    by_payment: dict[str, list[tuple[str, AdminCapture]]] = {}
    for command in commands:
        by_payment.setdefault(command[1].payment_id, []).append(command)

    async def in_order(group: list[tuple[str, AdminCapture]]) -> list[tuple[str, str]]:
        results: list[tuple[str, str]] = []
        for command_id, data in group:
            result = await handle(service, command_id, data)
            results.append((result.status, result.note))
        return results

    groups = await asyncio.gather(*(in_order(g) for g in by_payment.values()))
    return [r for group in groups for r in group]


def _capture(payment_id: str, amount: int | None = None) -> AdminCapture:
    body: dict[str, Any] = {"payment_id": payment_id, "requested_by": "ops"}
    if amount is not None:
        body["amount"] = amount
    return AdminCapture.model_validate(body)


@pytest.mark.parametrize("count", [4, 24])
async def test_a_batch_of_admin_commands_costs_a_constant_number_of_commands(
    world: tuple[World, Commands], count: int
) -> None:
    w, commands = world
    payments = await _payments(w, count)
    batch = [(new_id("cmd"), _capture(p)) for p in payments]
    commands.names.clear()

    results = await _run_batch(w, batch)

    assert [status for status, _ in results] == ["applied"] * count
    names = commands.names
    # Prefetch: one find of the payments, one of the orphan answers, one claims insert;
    # then the reservations and the settlements, each written as one group.
    assert names.count("find") <= 2, names
    assert names.count("insert") == 1, names
    assert names.count("update") <= 4, names
    assert len(names) <= 7, f"{len(names)} commands for {count} admin commands: {names}"
    for payment_id in payments:
        loaded = await w.store.load_by_payment(payment_id)
        assert loaded is not None and loaded.collection.payment is not None
        assert loaded.collection.payment.captured_total == 1000


async def test_batched_claims_keep_duplicates_and_conflicts(
    world: tuple[World, Commands],
) -> None:
    w, commands = world
    first, second, third = await _payments(w, 3)
    # Claimed in an earlier batch: the same command again, and the id reused.
    await _run_batch(w, [("cmd_early", _capture(first, 400))])
    commands.names.clear()

    results = await _run_batch(
        w,
        [
            ("cmd_early", _capture(first, 400)),  # the same command: a duplicate
            ("cmd_early", _capture(second, 400)),  # the id reused: a conflict
            ("cmd_new", _capture(third, 300)),
            ("cmd_new", _capture(third, 500)),  # reused in the same batch: a conflict
        ],
    )

    assert results[0] == ("duplicate", "already processed")
    assert results[1][0] == "rejected" and results[1][1] == "idempotency_conflict"
    assert results[2][0] == "applied"
    assert results[3][0] == "rejected" and results[3][1] == "idempotency_conflict"
    # Claimed together; one more find reads the fingerprints of those claimed before.
    # The orphan answers are taken once, so the second delivery of each repeated id
    # asks again (a `payment_not_found` stored meanwhile must be its answer too).
    assert commands.names.count("insert") == 1, commands.names
    assert commands.names.count("find") == 3 + 2, commands.names
    totals = []
    for payment_id in (first, second, third):
        loaded = await w.store.load_by_payment(payment_id)
        assert loaded is not None and loaded.collection.payment is not None
        totals.append(loaded.collection.payment.captured_total)
    assert totals == [400, 0, 300]
