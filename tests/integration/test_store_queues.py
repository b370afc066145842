"""The Mongo store's queues (issue 16): oldest first, leases respected, orphans kept.

Against the real MongoDB-protocol server: the relay's and the reconciler's
queries are sorted by when each item became due, and a command's orphan answer
can be read back, so a replay gets the same answer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from schemas.outbound import PaymentFailed
from service.adapters.mongo_store import MongoCollectionStore
from service.domain.cart import new_collection, new_session
from service.domain.events import new_event, standalone_event
from service.domain.model import PaymentCollection
from service.ports.store import OrphanOutcome
from service.testing.builders import new_id

# `store`: also proven on FerretDB (`make test-store`): it exercises store semantics.
from tests.support.call_builders import declined_authorization

pytestmark = [pytest.mark.integration, pytest.mark.store]

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


@pytest.fixture
async def store(mongodb_url: str) -> AsyncIterator[MongoCollectionStore]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongodb_url, tz_aware=True)
    name = new_id("store_queues")
    database: AsyncDatabase[dict[str, Any]] = client[name]
    store = MongoCollectionStore(database)
    await store.create_indexes()
    try:
        yield store
    finally:
        await client.drop_database(name)
        await client.close()


def _with_event(cart_id: str, created: datetime, *, updated: datetime) -> PaymentCollection:
    collection = new_collection(cart_id, "eu", "usd", 5000, created)
    new_event(
        collection,
        declined_authorization(collection),
        "payment.failed",
        f"cause_{cart_id}",
        created,
    )
    collection.updated_at = updated
    return collection


def _unknown(cart_id: str, at: datetime) -> PaymentCollection:
    collection = new_collection(cart_id, "eu", "usd", 5000, at)
    session = new_session(collection, "sandbox", at)
    session.authorization_key = "K1"
    session.needs_reconcile = True
    return collection


async def test_relay_queue_is_oldest_event_first(store: MongoCollectionStore) -> None:
    # Written last, but its event is the oldest: it comes first.
    await store.save(_with_event(new_id("cart"), T0 + timedelta(seconds=5), updated=T0), None)
    oldest = _with_event(new_id("cart"), T0, updated=T0 + timedelta(hours=1))
    await store.save(oldest, None)

    (first,) = await store.pending_outbox(1)
    assert first.collection.id == oldest.id


async def test_reconciler_queue_is_longest_due_first_and_respects_leases(
    store: MongoCollectionStore,
) -> None:
    late = _unknown(new_id("cart"), T0 + timedelta(seconds=30))
    early = _unknown(new_id("cart"), T0)
    leased = _unknown(new_id("cart"), T0 - timedelta(hours=1))
    leased.sessions[0].lease_until = T0 + timedelta(minutes=10)
    for collection in (late, early, leased):
        await store.save(collection, None)

    due = await store.needing_reconcile(T0 + timedelta(minutes=1), 10)
    assert [d.collection.id for d in due] == [early.id, late.id]


async def test_orphan_answer_is_read_back(store: MongoCollectionStore) -> None:
    data = PaymentFailed.model_validate(
        {
            "cart_id": None,
            "collection_id": None,
            "provider_id": None,
            "currency_code": None,
            "operation": "capture",
            "reason": "payment_not_found",
            "message": "no payment",
            "retryable": False,
            "payment_id": "pay_x",
        }
    )
    command_id = new_id("cmd")
    event = standalone_event(data, "payment.failed", command_id, T0, key="pay_x", subject="pay_x")
    assert await store.orphan(command_id) is None
    await store.save_orphan(OrphanOutcome(command_id, [event]))

    stored = await store.orphan(command_id)
    assert stored is not None and [e.id for e in stored.events] == [event.id]
    (pending,) = [o for o in await store.pending_orphans(100) if o.event_id == command_id]
    assert pending.events[0].id == event.id
