"""The consumer hands each batch's handlers one `StoreBatch`, explicitly (issue 14).

The store port declares the batch: `CollectionStore.batch()` gives the view the
consumer prefetches every cart of the batch into and passes to the handlers
(`PaymentService.using`). A batch of events for many carts therefore costs one
query for their aggregates, not one per event; a second event of a cart starts
from what the first one saved; and an answer made stale by another writer only
costs a version conflict and a reload, never a lost update.
"""

from __future__ import annotations

import orjson

from schemas.inbound import CartUpdated
from schemas.topics import topic_for
from service.admin_auth import AdminAuthenticator
from service.consumer import BatchProcessor, Record
from tests.support.memory import MemoryCollectionStore, RecordingPublisher
from tests.support.world import World, handle

PREFIX = "sb."


def _cart_updated(cart_id: str, amount: int, offset: int) -> Record:
    event = {
        "specversion": "1.0",
        "id": f"evt_{cart_id}_{offset}",
        "source": "/store-batch",
        "type": "cart.updated",
        "data": {
            "cart_id": cart_id,
            "region_id": "eu",
            "currency_code": "usd",
            "amount": amount,
        },
    }
    topic = topic_for("cart.updated", PREFIX)
    return Record(topic, 0, offset, cart_id.encode(), orjson.dumps(event), ())


def _processor(world: World) -> BatchProcessor:
    return world.batch_processor(RecordingPublisher(), PREFIX, AdminAuthenticator({}))


async def test_a_batch_loads_all_its_carts_with_one_query() -> None:
    world = World("fake")
    for cart_id in ("cart_a", "cart_b", "cart_c"):
        await world.cart(cart_id, 1000)
    store: MemoryCollectionStore = world.store
    store.cart_queries = 0

    records = [
        _cart_updated("cart_a", 2000, 0),
        _cart_updated("cart_b", 2100, 1),
        _cart_updated("cart_c", 2200, 2),
        _cart_updated("cart_new", 2300, 3),
        # A second event of a cart: answered from what the first one saved.
        _cart_updated("cart_a", 2400, 4),
    ]
    await _processor(world).process(records)

    assert store.prefetches == [("cart_a", "cart_b", "cart_c", "cart_new")]
    assert store.cart_queries == 0, "a handler queried a cart the batch already held"
    assert store.conflicts == 0
    amounts = {c: (await world.collection(c)).amount for c in ("cart_a", "cart_b", "cart_c")}
    assert amounts == {"cart_a": 2400, "cart_b": 2100, "cart_c": 2200}
    assert (await world.collection("cart_new")).amount == 2300


async def test_a_stale_prefetch_costs_a_conflict_and_a_reload_not_an_update() -> None:
    world = World("fake")
    await world.cart("cart_s", 1000)
    store: MemoryCollectionStore = world.store
    batch = store.batch()
    await batch.prefetch_by_cart(["cart_s"])
    # Another consumer (or the reconciler) writes after the prefetch.
    await world.cart("cart_s", 1500)

    data = CartUpdated.model_validate(
        {"cart_id": "cart_s", "region_id": "eu", "currency_code": "usd", "amount": 1700}
    )
    result = await handle(world.service.using(batch), "evt_late", data)

    assert result.status == "applied"
    assert store.conflicts == 1, "the stale prefetched version was not refused"
    collection = await world.collection("cart_s")
    assert collection.amount == 1700
    assert collection.has_processed("evt_late")
    assert store.cart_queries >= 1  # the reload after the conflict went to the store


async def test_the_service_outside_a_batch_still_queries_the_store() -> None:
    world = World("fake")
    await world.cart("cart_o", 1000)
    store: MemoryCollectionStore = world.store
    batch = store.batch()
    await batch.prefetch_by_cart(["cart_o"])
    store.cart_queries = 0

    await world.cart("cart_o", 1200)  # through `world.service`: not the batch's view

    assert store.cart_queries == 1
    assert world.service.store is store
