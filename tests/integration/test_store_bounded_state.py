"""Contract promise 10 on the real MongoDB-protocol server (nx-27017, and FerretDB in
`make test-store`): a paid cart's stored document stays within a constant bound however
often it is named, as written by the Mongo adapter's partial updates.

The unit tests (`tests/unit/service/test_bounded_state.py`) send 10,000 re-sent events
and 1,000 commands over the in-memory store, which applies the same updates; here the
volumes are smaller (each is a round trip to a server) but past every window: the inbox
keeps 64 ids, the payment's history 50 entries.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import bson
import pytest
from pymongo import AsyncMongoClient

from service.adapters.mongo_store import COLLECTIONS, MongoCollectionStore
from service.testing.builders import new_id
from tests.support.bounded import paid, refund_of_50, resend
from tests.support.world import World, handle

pytestmark = [pytest.mark.integration, pytest.mark.store]

CART = "cart_paid"


@pytest.fixture
async def world(mongodb_url: str) -> AsyncIterator[World]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongodb_url, tz_aware=True)
    name = new_id("bounded")
    store = MongoCollectionStore(client[name])
    await store.create_indexes()
    try:
        yield World("fake", store=store)
    finally:
        await client.drop_database(name)
        await client.close()


async def _stored_bytes(world: World) -> int:
    """The BSON size of the cart's document as the server holds it."""
    database = world.store.database
    document = await database[COLLECTIONS].find_one({"cart_id": CART})
    assert document is not None
    assert document["outbox"] == {}, "every event was published: none stays in the document"
    return len(bson.encode(document))


async def test_re_sent_events_for_a_paid_cart_leave_its_size_constant(world: World) -> None:
    await paid(world, CART)
    for n in range(100):
        await resend(world, CART, n)
    after_100 = await _stored_bytes(world)
    for n in range(100, 600):
        await resend(world, CART, n)
    after_600 = await _stored_bytes(world)
    assert after_600 <= 1.2 * after_100, (after_100, after_600)
    assert len({e.id for e in world.published("payment.authorized", CART)}) == 1


async def test_admin_commands_for_one_payment_leave_its_size_constant(world: World) -> None:
    payment_id = await paid(world, CART)
    sizes = []
    for n in range(300):
        # 100 refunds of 50 (a payment keeps its refunds), then refusals.
        await world.deliver(await handle(world.service, f"refund_{n}", refund_of_50(payment_id)))
        if n in (149, 299):
            sizes.append(await _stored_bytes(world))
    collection = await world.collection(CART)
    assert collection.payment is not None
    assert collection.payment.refunded_total == 5000
    assert sizes[1] <= 1.2 * sizes[0], sizes
