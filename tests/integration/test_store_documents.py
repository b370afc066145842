"""The stored document (schema 2) on the real MongoDB-protocol server (issue 23).

A save sends only what changed (read from the `update` command the driver sent) and
the server keeps it as the model dumps it; published events leave the document and
go to the archive; a mark-sent of an older version leaves a stale `outbox_at` that
the relay's query clears; documents of schema 1 (as the service wrote them before)
load, are marked sent and are rewritten by their next save. Run on nx-27017 and on
FerretDB (`PAYMENTS_TEST_INFRA=ferretdb`), whose update semantics differ in places
(`service/adapters/mongo_store.py`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo import AsyncMongoClient, monitoring
from pymongo.asynchronous.database import AsyncDatabase

from service.adapters.mongo_store import ARCHIVE, COLLECTIONS, MongoCollectionStore
from service.adapters.stored_document import event_key, log_entries, log_key
from service.domain.capabilities import Capabilities
from service.domain.events import new_event
from service.domain.model import INBOX_WINDOW, PaymentCollection
from service.ports.store import Loaded
from service.testing.builders import new_id
from tests.support.call_builders import declined_authorization
from tests.support.world import World

pytestmark = [pytest.mark.integration, pytest.mark.store]

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


class Updates(monitoring.CommandListener):
    """The `update` commands' statements the client sent, in order."""

    def __init__(self) -> None:
        self.statements: list[dict[str, Any]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "update":
            self.statements.extend(event.command["updates"])

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        return None

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        return None


@dataclass
class Store:
    store: MongoCollectionStore
    database: AsyncDatabase[dict[str, Any]]
    updates: Updates

    async def raw(self, collection_id: str) -> dict[str, Any]:
        document = await self.database[COLLECTIONS].find_one({"_id": collection_id})
        assert document is not None
        return document

    async def load(self, collection_id: str) -> Loaded:
        loaded = await self.store.load(collection_id)
        assert loaded is not None
        return loaded


@pytest.fixture
async def db(mongodb_url: str) -> AsyncIterator[Store]:
    updates = Updates()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        mongodb_url, tz_aware=True, event_listeners=[updates]
    )
    name = new_id("store_documents")
    database: AsyncDatabase[dict[str, Any]] = client[name]
    store = MongoCollectionStore(database)
    await store.create_indexes()
    try:
        yield Store(store, database, updates)
    finally:
        await client.drop_database(name)
        await client.close()


async def _paid(cart_id: str) -> PaymentCollection:
    """A collection after a cart update and a checkout (the in-memory service made it)."""
    world = World()
    await world.cart(cart_id, 5000)
    await world.checkout(cart_id, 5000, "K1")
    collection = await world.collection(cart_id)
    assert collection.payment is not None
    return collection


def _failed(collection: PaymentCollection, cause: str, at: datetime) -> PaymentCollection:
    data = declined_authorization(collection)
    new_event(collection, data, "payment.failed", cause, at)
    return collection


def _same(loaded: PaymentCollection, saved: PaymentCollection) -> None:
    saved.commit_recorded()
    assert loaded.model_dump(mode="json") == saved.model_dump(mode="json")


async def test_a_save_sends_only_what_changed(db: Store) -> None:
    collection = await _paid(new_id("cart"))
    await db.store.save(collection, None)
    loaded = await db.load(collection.id)
    changed = loaded.collection
    assert changed.payment is not None
    changed.payment.released_amount = 700  # a field of a nested model
    changed.email = "someone@example.com"  # a top-level field
    _failed(changed, "cause_1", T0)
    db.updates.statements.clear()

    assert await db.store.save(changed, loaded.version, loaded.snapshot) == loaded.version + 1

    (statement,) = db.updates.statements
    assert statement["q"] == {"_id": collection.id, "version": loaded.version}
    (event,) = changed.recorded
    assert set(statement["u"]) == {"$set"}
    assert set(statement["u"]["$set"]) == {
        "state.payment.released_amount",
        "state.email",
        f"outbox.{event_key(event.id)}",
        "outbox_at",
        "version",
    }
    again = await db.load(collection.id)
    _same(again.collection, changed)
    assert [e.id for e in again.collection.outbox] == [event.id]
    raw = await db.raw(collection.id)
    assert raw["schema"] == 2 and "outbox" not in raw["state"]
    # The inbox as a map of its entries (a log), in order.
    assert [p["id"] for p in log_entries(raw["state"]["processed"])] == [
        p.id for p in changed.processed
    ]
    assert isinstance(raw["state"]["processed"], dict)


async def test_a_log_sends_the_entries_added_and_removed(db: Store) -> None:
    collection = await _paid(new_id("cart"))
    await db.store.save(collection, None)
    for n in range(INBOX_WINDOW + 2):
        loaded = await db.load(collection.id)
        loaded.collection.remember(f"evt_in_{n}", "cart.updated", T0)
        db.updates.statements.clear()
        await db.store.save(loaded.collection, loaded.version, loaded.snapshot)

    (statement,) = db.updates.statements
    changed = {*statement["u"]["$set"], *statement["u"].get("$unset", {})}
    assert {c for c in changed if c.startswith("state.")} == {
        f"state.processed.{log_key(INBOX_WINDOW + 3)}",
        f"state.processed.{log_key(3)}",
    }
    loaded = await db.load(collection.id)
    assert len(loaded.collection.processed) == INBOX_WINDOW
    assert loaded.collection.processed[-1].id == f"evt_in_{INBOX_WINDOW + 1}"


async def test_a_boolean_of_a_nested_model_is_stored_as_a_boolean(db: Store) -> None:
    # nx-27017 stores a boolean `$set` on its own as 0/1: the model holding it is
    # written whole instead.
    collection = await _paid(new_id("cart"))
    await db.store.save(collection, None)
    loaded = await db.load(collection.id)
    payment = loaded.collection.payment
    assert payment is not None and payment.capabilities.multicapture is True
    payment.capabilities = Capabilities(multicapture=False, refunds_can_be_pending=True)
    db.updates.statements.clear()

    await db.store.save(loaded.collection, loaded.version, loaded.snapshot)

    (statement,) = db.updates.statements
    assert "state.payment.capabilities" in statement["u"]["$set"]
    stored = (await db.raw(collection.id))["state"]["payment"]["capabilities"]
    assert stored["multicapture"] is False and stored["refunds_can_be_pending"] is True


async def test_marking_sent_removes_the_events_and_archives_them(db: Store) -> None:
    collection = _failed(_failed(await _paid(new_id("cart")), "cause_1", T0), "cause_2", T0)
    events = collection.recorded
    version = await db.store.save(collection, None)
    collection.commit_recorded()
    raw = await db.raw(collection.id)
    assert sorted(raw["outbox"]) == sorted(event_key(e.id) for e in events)
    assert raw["outbox_at"] is not None

    await db.store.mark_sent([(collection, version)])

    raw = await db.raw(collection.id)
    assert raw["outbox"] == {} and raw["outbox_at"] is None and raw["version"] == version
    assert await db.store.pending_outbox(10) == []
    archived = {e["_id"]: e async for e in db.database[ARCHIVE].find({"key": collection.cart_id})}
    assert set(archived) == {e.id for e in events}
    for event in events:
        assert archived[event.id]["event"]["payload"] == event.payload
        assert archived[event.id]["collection_id"] == collection.id
    # Published again (the relay after a lost acknowledgement): the first copy stays.
    await db.store.mark_sent([(collection, version)])
    assert await db.database[ARCHIVE].count_documents({"key": collection.cart_id}) == 2


async def test_marking_an_older_version_sent_leaves_a_stale_outbox_at_the_relay_clears(
    db: Store,
) -> None:
    first = _failed(await _paid(new_id("cart")), "cause_1", T0)
    version = await db.store.save(first, None)
    first.commit_recorded()
    # Another writer stores the next version before the first marks its events sent.
    loaded = await db.load(first.id)
    loaded.collection.email = "later@example.com"
    await db.store.save(loaded.collection, loaded.version, loaded.snapshot)

    await db.store.mark_sent([(first, version)])

    raw = await db.raw(first.id)
    assert raw["outbox"] == {} and raw["version"] == version + 1
    assert raw["outbox_at"] is not None  # left as it was: not the version published
    assert await db.store.pending_outbox(10) == []
    assert (await db.raw(first.id))["outbox_at"] is None


async def test_marking_an_older_version_sent_keeps_what_the_newer_added(db: Store) -> None:
    first = _failed(await _paid(new_id("cart")), "cause_1", T0)
    version = await db.store.save(first, None)
    first.commit_recorded()
    loaded = await db.load(first.id)
    newer = _failed(loaded.collection, "cause_2", T0 + timedelta(seconds=1))
    (added,) = newer.recorded
    await db.store.save(newer, loaded.version, loaded.snapshot)

    await db.store.mark_sent([(first, version)])

    (pending,) = await db.store.pending_outbox(10)
    assert [e.id for e in pending.collection.unsent_events] == [added.id]


def _schema_1(collection: PaymentCollection, version: int) -> dict[str, Any]:
    """The document as the service wrote it before schema 2 (`MongoCollectionStore.
    to_document` then): the outbox, sent events included, inside the state."""
    state = collection.model_dump(mode="json")
    state["outbox"].extend(e.model_dump(mode="json") for e in collection.recorded)
    unsent = [e.created_at for e in collection.unsent_events]
    return {
        "_id": collection.id,
        "cart_id": collection.cart_id,
        "payment_id": collection.payment.id if collection.payment else None,
        "version": version,
        "outbox_pending": bool(unsent),
        "outbox_at": min(unsent) if unsent else None,
        "reconcile": collection.needs_reconcile,
        "attention": bool(collection.needs_attention),
        "reconcile_at": collection.reconcile_due_at,
        "updated_at": collection.updated_at,
        "state": state,
    }


async def _schema_1_with_a_sent_and_an_unsent_event(db: Store) -> tuple[PaymentCollection, str]:
    collection = _failed(await _paid(new_id("cart")), "cause_1", T0)
    collection.commit_recorded()
    collection.outbox[-1].sent = True
    _failed(collection, "cause_2", T0 + timedelta(seconds=1))
    (unsent,) = collection.recorded
    collection.commit_recorded()
    await db.database[COLLECTIONS].insert_one(_schema_1(collection, 4))
    return collection, unsent.id


async def test_a_schema_1_document_loads_and_its_next_save_writes_schema_2(db: Store) -> None:
    collection, unsent = await _schema_1_with_a_sent_and_an_unsent_event(db)

    loaded = await db.load(collection.id)
    assert loaded.version == 4
    assert [e.id for e in loaded.collection.outbox] == [unsent]
    expected = collection.model_copy(deep=True)
    expected.outbox = [e for e in expected.outbox if not e.sent]
    _same(loaded.collection, expected)
    by_cart = await db.store.load_by_cart(collection.cart_id)
    assert by_cart is not None and by_cart.collection.id == collection.id

    loaded.collection.email = "upgraded@example.com"
    assert await db.store.save(loaded.collection, 4, loaded.snapshot) == 5

    raw = await db.raw(collection.id)
    assert raw["schema"] == 2 and "outbox_pending" not in raw
    assert "outbox" not in raw["state"] and list(raw["outbox"]) == [event_key(unsent)]
    again = await db.load(collection.id)
    _same(again.collection, loaded.collection)
    (pending,) = await db.store.pending_outbox(10)
    assert [e.id for e in pending.collection.unsent_events] == [unsent]


async def test_a_schema_1_document_is_marked_sent(db: Store) -> None:
    collection, _ = await _schema_1_with_a_sent_and_an_unsent_event(db)
    await db.store.create_indexes()  # at start-up: it finds documents of schema 1
    loaded = await db.load(collection.id)

    await db.store.mark_sent([(loaded.collection, loaded.version)])

    raw = await db.raw(collection.id)
    assert raw["state"]["outbox"] == [] and raw["outbox_at"] is None and raw["version"] == 4
    # (nx-27017 stores that `false` as 0; the query matches either way.)
    flag = {"_id": collection.id, "outbox_pending": False}
    assert await db.database[COLLECTIONS].count_documents(flag) == 1
    assert (await db.load(collection.id)).collection.unsent_events == []
    assert await db.store.pending_outbox(10) == []


async def test_the_archive_expires(db: Store) -> None:
    """A TTL index where the server has one; else (FerretDB 1.24) the store deletes
    expired entries when it next archives."""

    async def sent_at_index() -> dict[str, Any]:
        # By its key: nx-27017 names indexes its own way.
        indexes = (await db.database[ARCHIVE].index_information()).values()
        (index,) = [i for i in indexes if i["key"] == [("sent_at", 1)]]
        return index

    ttl = (await sent_at_index()).get("expireAfterSeconds")
    if ttl is not None:
        assert ttl == int(db.store._shared.archive_ttl_s)
        assert not db.store._shared.prune_archive
        # Another TTL at the next start: the index follows it.
        other = MongoCollectionStore(db.database, archive_ttl_s=3600)
        await other.create_indexes()
        assert (await sent_at_index())["expireAfterSeconds"] == 3600
        return
    assert db.store._shared.prune_archive
    old = datetime.now(UTC) - timedelta(seconds=db.store._shared.archive_ttl_s + 60)
    await db.database[ARCHIVE].insert_one({"_id": "evt_old", "key": "cart_old", "sent_at": old})
    collection = _failed(await _paid(new_id("cart")), "cause_1", T0)
    version = await db.store.save(collection, None)
    await db.store.mark_sent([(collection, version)])
    assert await db.database[ARCHIVE].find_one({"_id": "evt_old"}) is None
    assert await db.database[ARCHIVE].count_documents({"key": collection.cart_id}) == 1


async def test_no_archive_when_its_ttl_is_zero(db: Store) -> None:
    store = MongoCollectionStore(db.database, archive_ttl_s=0)
    collection = _failed(await _paid(new_id("cart")), "cause_1", T0)
    version = await store.save(collection, None)

    await store.mark_sent([(collection, version)])

    assert (await db.raw(collection.id))["outbox"] == {}
    assert await db.database[ARCHIVE].count_documents({"key": collection.cart_id}) == 0


async def test_consecutive_saves_of_a_batch_send_what_each_changed(db: Store) -> None:
    collection = await _paid(new_id("cart"))
    await db.store.save(collection, None)
    batch = db.store.batch()
    await batch.prefetch_by_cart([collection.cart_id])
    db.updates.statements.clear()

    for n, email in enumerate(("a@example.com", "b@example.com")):
        loaded = await batch.load_by_cart(collection.cart_id)  # the prefetch, then our save
        assert loaded is not None
        loaded.collection.email = email
        _failed(loaded.collection, f"cause_{n}", T0 + timedelta(seconds=n))
        await batch.save(loaded.collection, loaded.version, loaded.snapshot)

    assert len(db.updates.statements) == 2
    for statement in db.updates.statements:
        assert {k for k in statement["u"]["$set"] if k.startswith("state.")} == {"state.email"}
        assert len([k for k in statement["u"]["$set"] if k.startswith("outbox.")]) == 1
    final = await db.load(collection.id)
    assert final.collection.email == "b@example.com"
    assert [e.causation_id for e in final.collection.outbox] == ["cause_0", "cause_1"]
