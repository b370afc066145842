"""The Mongo store's batch view (`StoreBatch`), counted in MongoDB commands (issue 14).

What the consumer's batch exists for, measured with PyMongo's command monitoring
against the real MongoDB-protocol server: a batch's carts cost one `find`, the
loads answered from it cost nothing more, a second load of a cart asks again,
the concurrent saves of a batch go out as one write, and a document made stale
by another writer is refused by the version check.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from pymongo import AsyncMongoClient, monitoring
from pymongo.asynchronous.database import AsyncDatabase

from service.adapters.mongo_store import MongoCollectionStore
from service.domain.cart import new_collection
from service.ports.store import ConcurrencyConflict, StoreBatch
from service.testing.builders import new_id

# `store`: also proven on FerretDB (`make test-store`): it exercises store semantics.
pytestmark = [pytest.mark.integration, pytest.mark.store]

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
DATA_COMMANDS = {"find", "insert", "update", "delete", "aggregate", "getMore"}


class Commands(monitoring.CommandListener):
    """The data commands the client sent, by name, in order."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.filters: list[Any] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name in DATA_COMMANDS:
            self.names.append(event.command_name)
            self.filters.append(event.command.get("filter"))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        return None

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        return None


@pytest.fixture
async def counted(mongodb_url: str) -> AsyncIterator[tuple[MongoCollectionStore, Commands]]:
    commands = Commands()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        mongodb_url, tz_aware=True, event_listeners=[commands]
    )
    name = new_id("store_batch")
    database: AsyncDatabase[dict[str, Any]] = client[name]
    store = MongoCollectionStore(database)
    await store.create_indexes()
    try:
        yield store, commands
    finally:
        await client.drop_database(name)
        await client.close()


async def test_a_batch_of_carts_costs_one_find(
    counted: tuple[MongoCollectionStore, Commands],
) -> None:
    store, commands = counted
    carts = [f"cart_{i}" for i in range(5)]
    for cart_id in carts:
        await store.save(new_collection(cart_id, "eu", "usd", 1000, T0), None)
    batch: StoreBatch = store.batch()
    commands.names.clear()

    await batch.prefetch_by_cart([*carts, "cart_none", carts[0]])
    loaded = [await batch.load_by_cart(cart_id) for cart_id in carts]
    missing = await batch.load_by_cart("cart_none")

    assert commands.names == ["find"]
    assert [x.collection.cart_id for x in loaded if x is not None] == carts
    assert missing is None
    # Taken once: a second load (a retry after a conflict) asks the database.
    again = await batch.load_by_cart(carts[0])
    assert again is not None and again.version == 1
    assert commands.names == ["find", "find"]


async def test_a_batch_of_one_cart_asks_with_an_equality(
    counted: tuple[MongoCollectionStore, Commands],
) -> None:
    """Issue 15: nx-27017 answers `$in` on a field by scanning the collection (tens of
    ms at a few thousand carts, the largest stage of a quiet moment's batch); an
    equality comes from the index there as everywhere. Still one `find`."""
    store, commands = counted
    await store.save(new_collection("cart_one", "eu", "usd", 1000, T0), None)
    batch = store.batch()
    commands.filters.clear()

    await batch.prefetch_by_cart(["cart_one", "cart_one"])
    loaded = await batch.load_by_cart("cart_one")

    assert commands.filters == [{"cart_id": "cart_one"}]
    assert loaded is not None and loaded.collection.cart_id == "cart_one"
    await batch.prefetch_by_cart(["cart_two", "cart_three"])
    assert commands.filters[1] == {"cart_id": {"$in": ["cart_two", "cart_three"]}}


async def test_the_concurrent_saves_of_a_batch_are_written_together(
    counted: tuple[MongoCollectionStore, Commands],
) -> None:
    store, commands = counted
    carts = [f"cart_w{i}" for i in range(4)]
    for cart_id in carts:
        await store.save(new_collection(cart_id, "eu", "usd", 1000, T0), None)
    batch = store.batch()
    await batch.prefetch_by_cart(carts)
    loaded = [await batch.load_by_cart(cart_id) for cart_id in carts]
    commands.names.clear()

    async def change(index: int) -> int:
        current = loaded[index]
        assert current is not None
        current.collection.amount = 2000 + index
        return await batch.save(current.collection, current.version)

    versions = await asyncio.gather(*(change(i) for i in range(len(carts))))

    assert versions == [2, 2, 2, 2]
    assert commands.names == ["update"], "the batch's saves were not written as one"
    # The next event of a cart in the batch starts from what was just saved.
    after = await batch.load_by_cart(carts[2])
    assert after is not None and (after.version, after.collection.amount) == (2, 2002)
    assert commands.names == ["update"]
    stored = await store.load_by_cart(carts[2])
    assert stored is not None and (stored.version, stored.collection.amount) == (2, 2002)


async def test_a_prefetched_document_changed_since_is_refused(
    counted: tuple[MongoCollectionStore, Commands],
) -> None:
    store, _ = counted
    await store.save(new_collection("cart_s", "eu", "usd", 1000, T0), None)
    batch = store.batch()
    await batch.prefetch_by_cart(["cart_s"])
    other = await store.load_by_cart("cart_s")
    assert other is not None
    other.collection.amount = 1500
    assert await store.save(other.collection, other.version) == 2  # another writer

    stale = await batch.load_by_cart("cart_s")
    assert stale is not None and stale.version == 1
    stale.collection.amount = 1700
    with pytest.raises(ConcurrencyConflict):
        await batch.save(stale.collection, stale.version)

    fresh = await batch.load_by_cart("cart_s")
    assert fresh is not None and (fresh.version, fresh.collection.amount) == (2, 1500)
