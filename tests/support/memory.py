"""In-memory fakes of the store and publisher ports, for tests of the service layer.

`MemoryCollectionStore` implements `service.ports.store.CollectionStore` with the
same documents as the Mongo adapter (`service/adapters/stored_document.py`: the
schema-2 layout, the diff a save sends, the updates that mark events sent), applied
by a small interpreter of `$set`/`$unset`, so service-layer tests (and the stateful
model test) exercise the real handlers and the adapter's writes without a database.
Every save also checks the diff: the document it leaves holds exactly the
collection's state, and nothing loaded was changed in place behind the snapshot's
back. Documents are kept as JSON, as the adapter stores them: a test can never share
a mutable aggregate with the store by accident.
`MemoryStoreBatch` is its consumer-batch view, answering loads from a prefetch
and from the batch's own saves as the Mongo adapter's batch does.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from service.adapters.mongo_store import release_held
from service.adapters.stored_document import (
    INDEX_FIELDS,
    SCHEMA,
    Snapshot,
    archive_entry,
    new_document,
    read_document,
    save_update,
    sent_update,
)
from service.domain.model import OutboxEvent, PaymentCollection
from service.ports.store import ConcurrencyConflict, Loaded, OrphanOutcome, StoreCounts
from service.settings import EVENT_ARCHIVE_TTL_S


def apply_update(document: dict[str, Any], update: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A copy of `document` with a MongoDB update of `$set` and `$unset` applied (the
    only operators the adapter sends), refusing what MongoDB refuses: two paths of
    one update where one is the other or inside it, a path through a non-object."""
    unknown = set(update) - {"$set", "$unset"}
    assert not unknown, f"operators the store does not use: {unknown}"
    paths = [*update.get("$set", {}), *update.get("$unset", {})]
    for path in paths:
        clash = [p for p in paths if p != path and (p + ".").startswith(path + ".")]
        assert not clash, f"conflicting paths in one update: {path} and {clash}"
    result = copy.deepcopy(document)
    for path, value in update.get("$set", {}).items():
        *parents, name = path.split(".")
        target = result
        for part in parents:
            target = target.setdefault(part, {})
            assert isinstance(target, dict), f"$set {path}: {part} is not an object"
        target[name] = copy.deepcopy(value)
    for path in update.get("$unset", {}):
        *parents, name = path.split(".")
        target = result
        for part in parents:
            target = target.get(part)
            if not isinstance(target, dict):
                break
        else:
            target.pop(name, None)
    return result


def matches(document: dict[str, Any], where: dict[str, Any]) -> bool:
    """Whether `document` matches a filter of the adapter's updates (equality, `$ne`,
    `$exists`)."""
    for name, wanted in where.items():
        present = name in document
        value = document.get(name)
        if isinstance(wanted, dict):
            if "$ne" in wanted and not (present and value != wanted["$ne"]):
                # nx-27017 matches no `$ne` on a missing field in an update (MongoDB
                # does): the adapter never relies on either, so neither does the fake.
                return False
            if "$exists" in wanted and present != wanted["$exists"]:
                return False
        elif not present or value != wanted:
            return False
    return True


class MemoryCollectionStore:
    """The store port over dicts; `save` is version-checked like the adapter's update."""

    def __init__(
        self,
        *,
        archive_ttl_s: float = EVENT_ARCHIVE_TTL_S,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.documents: dict[str, dict[str, Any]] = {}
        self.claims: dict[str, str] = {}
        self.orphans: dict[str, tuple[list[dict[str, Any]], bool]] = {}
        #: The archive of sent events (`sent_events`), by event id.
        self.sent_events: dict[str, dict[str, Any]] = {}
        self.archive_ttl_s = archive_ttl_s
        self.clock = clock
        self.saves = 0
        self.conflicts = 0
        #: Every update a save sent (an insert: the whole document), in order.
        self.writes: list[dict[str, Any]] = []
        #: Called before each save; a test may raise ConcurrencyConflict from it or
        #: write a competing version (to play a concurrent writer).
        self.before_save: Any = None
        #: The carts of each prefetch (one query each), and the loads by cart that
        #: were queries (not answered by a batch's prefetch or its own saves).
        self.prefetches: list[tuple[str, ...]] = []
        self.cart_queries = 0
        #: The same for admin commands: payments of each prefetch, loads by payment
        #: that were queries, claims made one by one and orphan look-ups that were
        #: queries (a batch's `prefetch_commands` is counted in `command_prefetches`).
        self.payment_prefetches: list[tuple[str, ...]] = []
        self.payment_queries = 0
        self.command_prefetches: list[tuple[tuple[str, str], ...]] = []
        self.claim_queries = 0
        self.orphan_queries = 0

    # -- documents ---------------------------------------------------------------

    @staticmethod
    def _loaded(document: dict[str, Any]) -> Loaded:
        # A copy, as a read from MongoDB is: the snapshot is the load's own.
        collection, version, snapshot = read_document(copy.deepcopy(document))
        return Loaded(collection, version, snapshot)

    async def load(self, collection_id: str) -> Loaded | None:
        document = self.documents.get(collection_id)
        return None if document is None else self._loaded(document)

    async def load_by_cart(self, cart_id: str) -> Loaded | None:
        self.cart_queries += 1
        for document in self.documents.values():
            if document["cart_id"] == cart_id:
                return self._loaded(document)
        return None

    async def load_by_payment(self, payment_id: str) -> Loaded | None:
        self.payment_queries += 1
        for document in self.documents.values():
            if document["payment_id"] == payment_id:
                return self._loaded(document)
        return None

    async def save(
        self,
        collection: PaymentCollection,
        expected_version: int | None,
        snapshot: object | None = None,
    ) -> int:
        if self.before_save is not None:
            hook, self.before_save = self.before_save, None
            await hook(collection, expected_version)
        current = self.documents.get(collection.id)
        if expected_version is None:
            if current is not None or any(
                d["cart_id"] == collection.cart_id for d in self.documents.values()
            ):
                self.conflicts += 1
                raise ConcurrencyConflict(collection.id)
            document = copy.deepcopy(new_document(collection))
            self.writes.append(copy.deepcopy(document))
            self.documents[collection.id] = document
            self.saves += 1
            return 1
        if current is None or current["version"] != expected_version:
            self.conflicts += 1
            raise ConcurrencyConflict(collection.id)
        version = expected_version + 1
        known = snapshot if isinstance(snapshot, Snapshot) else None
        if known is not None and known.schema == SCHEMA:
            # The diff's base must be what is stored: a value of the loaded state
            # changed in place would also have changed the snapshot (they share it).
            assert known.state == current["state"], (
                f"{collection.id}: the snapshot of the load differs from the stored state "
                "(a value the domain shares with it was changed in place?)"
            )
        write = save_update(collection, known, version)
        self.writes.append(copy.deepcopy(write.update))
        stored = apply_update(current, write.update)
        # The update leaves exactly the collection's state and index fields (its
        # outbox may lack what was marked sent since the load).
        assert stored["state"] == write.document["state"], (collection.id, write.update)
        for name in (*INDEX_FIELDS, "schema", "version"):
            assert stored.get(name) == write.document[name], (name, write.update)
        assert stored["outbox"].keys() <= write.document["outbox"].keys(), write.update
        self.documents[collection.id] = stored
        self.saves += 1
        return version

    async def mark_sent(self, items: Sequence[tuple[PaymentCollection, int]]) -> None:
        # The adapter's updates (each matching exactly one state of the document),
        # and the archive.
        now = self.clock()
        for collection, version in items:
            current = self.documents.get(collection.id)
            if current is None:
                continue
            matched = [
                change
                for where, change in sent_update(collection, version)
                if matches(current, where)
            ]
            assert len(matched) <= 1, (collection.id, version)
            for change in matched:
                self.documents[collection.id] = apply_update(current, change)
            if self.archive_ttl_s > 0:
                for event in collection.unsent_events:
                    self.sent_events.setdefault(event.id, archive_entry(collection, event, now))

    def archived(self) -> list[OutboxEvent]:
        """The archive's events not expired yet, oldest first."""
        expired = self.clock() - timedelta(seconds=self.archive_ttl_s)
        return sorted(
            (
                OutboxEvent.model_validate(e["event"])
                for e in self.sent_events.values()
                if e["sent_at"] >= expired
            ),
            key=lambda e: e.created_at,
        )

    async def pending_outbox(self, limit: int) -> list[Loaded]:
        pending = [d for d in self.documents.values() if d["outbox_at"] is not None]
        pending.sort(key=lambda d: d["outbox_at"])
        found = []
        for document in pending[:limit]:
            loaded = self._loaded(document)
            if loaded.collection.unsent_events:
                found.append(loaded)
            else:  # as the adapter: all marked sent by an older version's writer
                self.documents[loaded.collection.id] = {**document, "outbox_at": None}
        return found

    async def payments_active_since(
        self, since: datetime, after: str | None, limit: int
    ) -> list[Loaded]:
        found = sorted(
            (collection_id, d)
            for collection_id, d in self.documents.items()
            if d["audited"]
            and d["updated_at"] >= since
            and (after is None or collection_id > after)
        )
        return [self._loaded(d) for _, d in found[:limit]]

    async def counts(self, now: datetime) -> StoreCounts:
        documents = list(self.documents.values())
        return StoreCounts(
            reconcile_due=sum(
                1 for d in documents if d["reconcile_at"] is not None and d["reconcile_at"] < now
            ),
            needs_attention=sum(1 for d in documents if d["attention"]),
        )

    async def needing_reconcile(self, older_than: datetime, limit: int) -> list[Loaded]:
        due = [
            d
            for d in self.documents.values()
            if d["reconcile_at"] is not None and d["reconcile_at"] < older_than
        ]
        due.sort(key=lambda d: d["reconcile_at"])
        return [self._loaded(d) for d in due[:limit]]

    # -- claims and orphan answers ---------------------------------------------------

    async def claim_command(self, command_id: str, fingerprint: str) -> str | None:
        self.claim_queries += 1
        return self._claim(command_id, fingerprint)

    def _claim(self, command_id: str, fingerprint: str) -> str | None:
        stored = self.claims.setdefault(command_id, fingerprint)
        return None if stored == fingerprint else stored

    async def save_orphan(self, outcome: OrphanOutcome) -> OrphanOutcome:
        if outcome.event_id not in self.orphans:
            self.orphans[outcome.event_id] = (
                [e.model_dump(mode="json") for e in outcome.events],
                True,
            )
        stored = self._orphan(outcome.event_id)
        assert stored is not None
        return stored

    async def orphan(self, event_id: str) -> OrphanOutcome | None:
        self.orphan_queries += 1
        return self._orphan(event_id)

    def _orphan(self, event_id: str) -> OrphanOutcome | None:
        stored = self.orphans.get(event_id)
        if stored is None:
            return None
        return OrphanOutcome(event_id, [OutboxEvent.model_validate(e) for e in stored[0]])

    async def mark_orphan_sent(self, event_id: str) -> None:
        if event_id in self.orphans:
            self.orphans[event_id] = (self.orphans[event_id][0], False)

    async def pending_orphans(self, limit: int) -> list[OrphanOutcome]:
        pending = []
        for event_id, (events, unsent) in self.orphans.items():
            if unsent:
                pending.append(
                    OrphanOutcome(event_id, [OutboxEvent.model_validate(e) for e in events])
                )
        pending.sort(key=lambda o: min(e.created_at for e in o.events))
        return pending[:limit]

    def batch(self) -> MemoryStoreBatch:
        return MemoryStoreBatch(self)

    # -- for assertions ----------------------------------------------------------------

    def collections(self) -> list[PaymentCollection]:
        return [self._loaded(d).collection for d in self.documents.values()]


class MemoryStoreBatch:
    """A consumer batch's view of a :class:`MemoryCollectionStore` (the port's
    `StoreBatch`): the first load of a prefetched cart and the load after a save in
    the batch are answered from what the batch holds, which may be stale exactly as
    the Mongo adapter's batch may be; everything else is the store's."""

    def __init__(self, store: MemoryCollectionStore) -> None:
        self.store = store
        #: cart id → stored document (None: no collection), taken once by a load.
        self._documents: dict[str, dict[str, Any] | None] = {}
        #: payment id → stored document (None: no such payment), taken once by a load.
        self._by_payment: dict[str, dict[str, Any] | None] = {}
        #: (command id, fingerprint) → the claim's answer, kept (a claim never changes).
        self._claims: dict[tuple[str, str], str | None] = {}
        #: command id → stored orphan answer (None: none), taken once.
        self._orphans: dict[str, OrphanOutcome | None] = {}

    async def prefetch_by_cart(self, cart_ids: Iterable[str]) -> None:
        wanted = [c for c in dict.fromkeys(cart_ids) if c not in self._documents]
        if not wanted:
            return
        self.store.prefetches.append(tuple(wanted))
        by_cart = {d["cart_id"]: d for d in self.store.documents.values()}
        self._documents.update({cart_id: by_cart.get(cart_id) for cart_id in wanted})

    async def load_by_cart(self, cart_id: str) -> Loaded | None:
        if cart_id in self._documents:
            document = self._documents.pop(cart_id)
            return None if document is None else self.store._loaded(self._taken(document))
        return await self.store.load_by_cart(cart_id)

    def _taken(self, document: dict[str, Any]) -> dict[str, Any]:
        return release_held(document, self._documents, self._by_payment)

    async def prefetch_by_payment(self, payment_ids: Iterable[str]) -> None:
        wanted = [p for p in dict.fromkeys(payment_ids) if p not in self._by_payment]
        if not wanted:
            return
        self.store.payment_prefetches.append(tuple(wanted))
        by_payment = {d["payment_id"]: d for d in self.store.documents.values() if d["payment_id"]}
        self._by_payment.update({p: by_payment.get(p) for p in wanted})

    async def load_by_payment(self, payment_id: str) -> Loaded | None:
        if payment_id in self._by_payment:
            document = self._by_payment.pop(payment_id)
            return None if document is None else self.store._loaded(self._taken(document))
        return await self.store.load_by_payment(payment_id)

    async def prefetch_commands(self, claims: Sequence[tuple[str, str]]) -> None:
        # As the adapter: claimed in the batch's order, the first of a command id wins.
        wanted = [c for c in dict.fromkeys(claims) if c not in self._claims]
        if not wanted:
            return
        self.store.command_prefetches.append(tuple(wanted))
        for command_id, _ in wanted:
            self._orphans[command_id] = self.store._orphan(command_id)
        for command_id, fingerprint in wanted:
            self._claims[(command_id, fingerprint)] = self.store._claim(command_id, fingerprint)

    async def claim_command(self, command_id: str, fingerprint: str) -> str | None:
        key = (command_id, fingerprint)
        if key in self._claims:
            return self._claims[key]
        return await self.store.claim_command(command_id, fingerprint)

    async def orphan(self, event_id: str) -> OrphanOutcome | None:
        if event_id in self._orphans:
            return self._orphans.pop(event_id)
        return await self.store.orphan(event_id)

    async def save(
        self,
        collection: PaymentCollection,
        expected_version: int | None,
        snapshot: object | None = None,
    ) -> int:
        version = await self.store.save(collection, expected_version, snapshot)
        # Stored documents are replaced, never changed in place: this one stays as saved.
        document = self.store.documents[collection.id]
        self._documents[collection.cart_id] = document
        if document["payment_id"] is not None:
            self._by_payment[document["payment_id"]] = document
        return version

    def batch(self) -> MemoryStoreBatch:
        return self.store.batch()

    async def load(self, collection_id: str) -> Loaded | None:
        return await self.store.load(collection_id)

    async def mark_sent(self, items: Sequence[tuple[PaymentCollection, int]]) -> None:
        await self.store.mark_sent(items)

    async def pending_outbox(self, limit: int) -> list[Loaded]:
        return await self.store.pending_outbox(limit)

    async def needing_reconcile(self, older_than: datetime, limit: int) -> list[Loaded]:
        return await self.store.needing_reconcile(older_than, limit)

    async def counts(self, now: datetime) -> StoreCounts:
        return await self.store.counts(now)

    async def payments_active_since(
        self, since: datetime, after: str | None, limit: int
    ) -> list[Loaded]:
        return await self.store.payments_active_since(since, after, limit)

    async def save_orphan(self, outcome: OrphanOutcome) -> OrphanOutcome:
        return await self.store.save_orphan(outcome)

    async def mark_orphan_sent(self, event_id: str) -> None:
        await self.store.mark_orphan_sent(event_id)

    async def pending_orphans(self, limit: int) -> list[OrphanOutcome]:
        return await self.store.pending_orphans(limit)


class RecordingPublisher:
    """Records what it publishes; `fail_next` makes the next publishes raise."""

    def __init__(self) -> None:
        self.published: list[OutboxEvent] = []
        self.fail_next = 0
        self.fail_ids: set[str] = set()

    async def publish(self, events: Sequence[OutboxEvent]) -> None:
        if self.fail_next > 0:
            self.fail_next -= 1
            raise ConnectionError("broker unavailable (injected)")
        if any(e.id in self.fail_ids for e in events):
            raise ConnectionError("broker refused this batch (injected)")
        self.published.extend(events)

    def of_type(self, event_type: str) -> list[OutboxEvent]:
        return [e for e in self.published if e.type == event_type]


# Other names the same fakes go by in tests.
InMemoryCollectionStore = MemoryCollectionStore
InMemoryStore = MemoryCollectionStore
MemoryStore = MemoryCollectionStore
RecordingEventPublisher = RecordingPublisher
InMemoryPublisher = RecordingPublisher
