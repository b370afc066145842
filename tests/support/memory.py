"""In-memory fakes of the store and publisher ports, for tests of the service layer.

`MemoryCollectionStore` implements `service.ports.store.CollectionStore` with the
same version check, ordering and reconcile/outbox queries as the Mongo adapter,
so service-layer tests (and the stateful model test) exercise the real handlers
without a database. Documents are kept as JSON, as the adapter stores them: a
test can never share a mutable aggregate with the store by accident.
`MemoryStoreBatch` is its consumer-batch view, answering loads from a prefetch
and from the batch's own saves as the Mongo adapter's batch does.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from service.adapters.mongo_store import release_held
from service.domain.model import OutboxEvent, PaymentCollection
from service.ports.store import ConcurrencyConflict, Loaded, OrphanOutcome, StoreCounts


def _reconcile_at(collection: PaymentCollection) -> datetime | None:
    # What the Mongo adapter stores as `reconcile_at` (leases and back-off included).
    return collection.reconcile_due_at


class MemoryCollectionStore:
    """The store port over dicts; `save` is version-checked like `replace_one`."""

    def __init__(self) -> None:
        self.documents: dict[str, dict[str, Any]] = {}
        self.claims: dict[str, str] = {}
        self.orphans: dict[str, tuple[list[dict[str, Any]], bool]] = {}
        self.saves = 0
        self.conflicts = 0
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
        return Loaded(PaymentCollection.model_validate(document["state"]), document["version"])

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

    @staticmethod
    def _document(collection: PaymentCollection, version: int) -> dict[str, Any]:
        unsent = [e.created_at for e in collection.unsent_events]
        return {
            "cart_id": collection.cart_id,
            "payment_id": collection.payment.id if collection.payment else None,
            "version": version,
            "outbox_at": min(unsent) if unsent else None,
            "reconcile_at": _reconcile_at(collection),
            "updated_at": collection.updated_at,
            "attention": bool(collection.needs_attention),
            "audited": collection.audited,
            "state": collection.stored_state(),
        }

    async def save(self, collection: PaymentCollection, expected_version: int | None) -> int:
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
            version = 1
        else:
            if current is None or current["version"] != expected_version:
                self.conflicts += 1
                raise ConcurrencyConflict(collection.id)
            version = expected_version + 1
        self.documents[collection.id] = self._document(collection, version)
        self.saves += 1
        return version

    async def mark_sent(self, items: Sequence[tuple[PaymentCollection, int]]) -> None:
        # As the adapter: only where the version is still the one published.
        for collection, version in items:
            current = self.documents.get(collection.id)
            if current is None or current["version"] != version:
                continue
            sent = {e.id for e in collection.outbox}
            stored = PaymentCollection.model_validate(current["state"])
            for event in stored.outbox:
                if event.id in sent:
                    event.sent = True
            self.documents[collection.id] = self._document(stored, version)

    async def pending_outbox(self, limit: int) -> list[Loaded]:
        pending = [d for d in self.documents.values() if d["outbox_at"] is not None]
        pending.sort(key=lambda d: d["outbox_at"])
        return [self._loaded(d) for d in pending[:limit]]

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
        return [PaymentCollection.model_validate(d["state"]) for d in self.documents.values()]


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

    async def save(self, collection: PaymentCollection, expected_version: int | None) -> int:
        version = await self.store.save(collection, expected_version)
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
