"""The MongoDB store: one document per payment collection, version-checked.

The document (schema 2, `stored_document.py`) holds the aggregate's state and its
unsent events as a map; a save is one version-checked `update_one` of what changed
since the load (a new collection: one insert), so the write that stores a decision
also stores the events it causes and the event that caused it. Marking events sent
removes them from the map (`$unset`) and keeps a copy in `sent_events`, an archive
that expires after `PAYMENTS_EVENT_ARCHIVE_TTL_S` (for `payments republish`).

Operators: `$set` of whole values at object paths, `$unset`, and equality, `$in`,
`$ne`, `$exists`, `$lt`/`$gte` in filters, as every server here (MongoDB, nx-27017,
FerretDB) applies them alike; no array operators (nx-27017 corrupts `$push` of
sub-documents and ignores `$set` of an element by index). nx-27017 matches no `$ne`
on a missing field in an update's filter (finds do): `$exists` says it instead.
FerretDB 1.24 has no TTL index: the store then deletes expired archive entries itself.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ASCENDING, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError, OperationFailure, WriteError

from service.adapters.driver_errors import store_errors
from service.adapters.stored_document import (
    SaveUpdate,
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

COLLECTIONS = "payment_collections"
ORPHANS = "orphan_outcomes"
CLAIMS = "command_claims"
ARCHIVE = "sent_events"

DUPLICATE_KEY = 11000
NOT_IMPLEMENTED = 238
INDEX_OPTIONS_CONFLICT = (85, 86)
ARCHIVE_INDEX = "sent_at_1"
COUNT_LIMIT = 10_000
"""The gauges count up to this many collections (a backlog past it shows as it)."""


@dataclass(slots=True)
class _Shared:
    """What a store and the batches made from it share."""

    archive_ttl_s: float
    #: The server has no TTL index (FerretDB): expired entries are deleted by us,
    #: at most every `prune_every_s` (monotonic time of the last: `pruned_at`).
    prune_archive: bool = False
    pruned_at: float = field(default=float("-inf"))
    #: Schema-1 documents may exist (until `create_indexes` finds none): marking
    #: events sent then also covers that layout.
    legacy: bool = True

    @property
    def prune_every_s(self) -> float:
        return max(60.0, self.archive_ttl_s / 10)


@dataclass(slots=True)
class _PendingWrite:
    """One version-checked save waiting for the next group write."""

    collection_id: str
    expected_version: int | None  # None: insert
    document: dict[str, Any]
    """The whole document once written (with its `write_id`)."""
    update: dict[str, Any] | None  # None: insert `document`
    done: asyncio.Future[bool]  # True: written; False: ConcurrencyConflict

    def settle(self, written: bool | BaseException) -> None:
        if self.done.done():  # the waiting handler was cancelled
            return
        if isinstance(written, asyncio.CancelledError):
            self.done.cancel()
        elif isinstance(written, BaseException):
            self.done.set_exception(written)
        else:
            self.done.set_result(written)


class MongoCollectionStore:
    """The store port over PyMongo's async API.

    (The benchmark counts its round trips with PyMongo's command monitoring.)
    """

    def __init__(
        self,
        database: AsyncDatabase[dict[str, Any]],
        *,
        archive_ttl_s: float = EVENT_ARCHIVE_TTL_S,
        _shared: _Shared | None = None,
    ) -> None:
        self.database = database
        self.collections = database[COLLECTIONS]
        self.orphans = database[ORPHANS]
        self.claims = database[CLAIMS]
        self.archive = database[ARCHIVE]
        self._shared = _shared if _shared is not None else _Shared(archive_ttl_s)

    @store_errors
    async def create_indexes(self) -> None:
        await self.collections.create_index([("cart_id", ASCENDING)], unique=True)
        await self.collections.create_index([("payment_id", ASCENDING)])
        # Schema 1's flag: the index finds documents not upgraded yet (below).
        await self.collections.create_index([("outbox_pending", ASCENDING)])
        await self.collections.create_index([("reconcile", ASCENDING)])
        await self.collections.create_index([("reconcile_at", ASCENDING)])
        await self.collections.create_index([("outbox_at", ASCENDING)])
        # The gauges' count (every reconciler pass) and the audit sweep's page: without
        # them each is a scan of every collection ever stored.
        await self.collections.create_index([("attention", ASCENDING)])
        await self.collections.create_index([("updated_at", ASCENDING)])
        await self.orphans.create_index([("outbox_pending", ASCENDING)])
        legacy = await self.collections.find_one({"outbox_pending": {"$in": [True, False]}})
        self._shared.legacy = legacy is not None
        if self._shared.archive_ttl_s > 0:
            await self._archive_indexes()

    async def _archive_indexes(self) -> None:
        ttl = int(self._shared.archive_ttl_s)
        try:
            await self.archive.create_index(
                [("sent_at", ASCENDING)], name=ARCHIVE_INDEX, expireAfterSeconds=ttl
            )
        except OperationFailure as exc:
            if exc.code in INDEX_OPTIONS_CONFLICT:  # another TTL before: this one now
                await self.archive.drop_index([("sent_at", ASCENDING)])
                await self._archive_indexes()
            elif exc.code == NOT_IMPLEMENTED:  # FerretDB 1.24: we delete expired ones
                await self.archive.create_index([("sent_at", ASCENDING)], name=ARCHIVE_INDEX)
                self._shared.prune_archive = True
            else:
                raise
        await self.archive.create_index([("key", ASCENDING)])

    # -- documents -------------------------------------------------------------

    @staticmethod
    def from_document(document: dict[str, Any]) -> Loaded:
        collection, version, snapshot = read_document(document)
        return Loaded(collection=collection, version=version, snapshot=snapshot)

    async def _load(self, query: dict[str, Any]) -> Loaded | None:
        document = await self.collections.find_one(query)
        return None if document is None else self.from_document(document)

    @store_errors
    async def load(self, collection_id: str) -> Loaded | None:
        return await self._load({"_id": collection_id})

    @store_errors
    async def load_by_cart(self, cart_id: str) -> Loaded | None:
        return await self._load({"cart_id": cart_id})

    def batch(self) -> MongoStoreBatch:
        return MongoStoreBatch(self)

    @store_errors
    async def load_by_payment(self, payment_id: str) -> Loaded | None:
        return await self._load({"payment_id": payment_id})

    @staticmethod
    def _update(
        collection: PaymentCollection, expected_version: int, snapshot: object | None
    ) -> SaveUpdate:
        known = snapshot if isinstance(snapshot, Snapshot) else None
        return save_update(collection, known, expected_version + 1)

    @store_errors
    async def save(
        self,
        collection: PaymentCollection,
        expected_version: int | None,
        snapshot: object | None = None,
    ) -> int:
        if expected_version is None:
            try:
                await self.collections.insert_one(new_document(collection))
            except DuplicateKeyError as exc:
                raise ConcurrencyConflict(collection.id) from exc
            return 1
        write = self._update(collection, expected_version, snapshot)
        result = await self.collections.update_one(
            {"_id": collection.id, "version": expected_version}, write.update
        )
        if result.matched_count != 1:
            raise ConcurrencyConflict(collection.id)
        return expected_version + 1

    @store_errors
    async def mark_sent(self, items: Sequence[tuple[PaymentCollection, int]]) -> None:
        """The published events leave their documents, in one bulk write, and go to
        the archive (one insert), both at once.

        Never changes a version: a writer that loaded this version may still store
        its next one, which at worst sends these events again, with their ids. An
        archived copy is written with the removal, not before: a crash between the
        two loses the copy of an event that was published (republish cannot send it).
        """
        requests = [
            UpdateOne(where, change)
            for collection, version in items
            for where, change in sent_update(collection, version, legacy=self._shared.legacy)
        ]
        steps: list[Awaitable[object]] = []
        if requests:
            steps.append(self.collections.bulk_write(requests, ordered=False))
        if self._shared.archive_ttl_s > 0:
            steps.append(self._archive_sent(items))
        for outcome in await asyncio.gather(*steps, return_exceptions=True):
            if isinstance(outcome, BaseException):
                raise outcome

    async def _archive_sent(self, items: Sequence[tuple[PaymentCollection, int]]) -> None:
        now = datetime.now(UTC)
        entries = [
            archive_entry(collection, event, now)
            for collection, _ in items
            for event in collection.unsent_events
        ]
        if entries:
            try:
                await self.archive.insert_many(entries, ordered=False)
            except BulkWriteError as exc:
                # Sent before (a re-publish): the first copy stays.
                errors = exc.details.get("writeErrors", [])
                if any(e.get("code") != DUPLICATE_KEY for e in errors):
                    raise
        shared = self._shared
        if shared.prune_archive and time.monotonic() - shared.pruned_at >= shared.prune_every_s:
            shared.pruned_at = time.monotonic()
            expired = now - timedelta(seconds=shared.archive_ttl_s)
            await self.archive.delete_many({"sent_at": {"$lt": expired}})

    @store_errors
    async def pending_outbox(self, limit: int) -> list[Loaded]:
        """Documents with an `outbox_at`, oldest first. One whose events all left
        (marked sent by a writer of an older version, which leaves `outbox_at` as it
        was) is not returned, and its `outbox_at` is cleared, as long as its version
        has not changed (a save may have added events; a removal changes nothing)."""
        cursor = (
            self.collections.find({"outbox_at": {"$ne": None}})
            .sort("outbox_at", ASCENDING)
            .limit(limit)
        )
        pending: list[Loaded] = []
        stale: list[UpdateOne] = []
        async for document in cursor:
            loaded = self.from_document(document)
            if loaded.collection.unsent_events:
                pending.append(loaded)
            else:
                where = {"_id": document["_id"], "version": loaded.version}
                stale.append(UpdateOne(where, {"$set": {"outbox_at": None}}))
        if stale:
            await self.collections.bulk_write(stale, ordered=False)
        return pending

    @store_errors
    async def payments_active_since(
        self, since: datetime, after: str | None, limit: int
    ) -> list[Loaded]:
        # `payment_id`: documents stored before `audited` was (they had a payment).
        query: dict[str, Any] = {
            "$or": [{"audited": True}, {"payment_id": {"$ne": None}}],
            "updated_at": {"$gte": since},
        }
        if after is not None:
            query["_id"] = {"$gt": after}
        cursor = self.collections.find(query).sort("_id", ASCENDING).limit(limit)
        return [self.from_document(d) async for d in cursor]

    @store_errors
    async def counts(self, now: datetime) -> StoreCounts:
        return StoreCounts(
            reconcile_due=await self._count({"reconcile": True, "reconcile_at": {"$lt": now}}),
            needs_attention=await self._count({"attention": True}),
        )

    async def _count(self, query: dict[str, Any]) -> int:
        """How many documents match, up to :data:`COUNT_LIMIT`, from an indexed `find`
        of their ids. Not `count_documents`: it is an aggregation, which nx-27017 runs
        over every document (0.8 s at 5,000 carts, every reconciler pass; the server
        is busy that long and every request waits behind it)."""
        cursor = self.collections.find(query, {"_id": True}).limit(COUNT_LIMIT)
        return len([document async for document in cursor])

    @store_errors
    async def needing_reconcile(self, older_than: datetime, limit: int) -> list[Loaded]:
        cursor = (
            self.collections.find({"reconcile": True, "reconcile_at": {"$lt": older_than}})
            .sort("reconcile_at", ASCENDING)
            .limit(limit)
        )
        return [self.from_document(d) async for d in cursor]

    # -- idempotency claims and orphan answers -----------------------------------

    @store_errors
    async def claim_command(self, command_id: str, fingerprint: str) -> str | None:
        try:
            await self.claims.insert_one({"_id": command_id, "fingerprint": fingerprint})
        except DuplicateKeyError:
            stored = await self.claims.find_one({"_id": command_id})
            stored_fingerprint = str(stored["fingerprint"]) if stored else fingerprint
            return None if stored_fingerprint == fingerprint else stored_fingerprint
        return None

    @store_errors
    async def save_orphan(self, outcome: OrphanOutcome) -> OrphanOutcome:
        try:
            await self.orphans.insert_one(
                {
                    "_id": outcome.event_id,
                    "outbox_pending": True,
                    "created_at": min(e.created_at for e in outcome.events),
                    "events": [e.model_dump(mode="json") for e in outcome.events],
                }
            )
            return outcome
        except DuplicateKeyError:
            stored = await self.orphans.find_one({"_id": outcome.event_id})
            assert stored is not None
            return self._orphan(stored)

    @staticmethod
    def _orphan(document: dict[str, Any]) -> OrphanOutcome:
        return OrphanOutcome(
            event_id=str(document["_id"]),
            events=[OutboxEvent.model_validate(e) for e in document["events"]],
        )

    @store_errors
    async def orphan(self, event_id: str) -> OrphanOutcome | None:
        stored = await self.orphans.find_one({"_id": event_id})
        return None if stored is None else self._orphan(stored)

    @store_errors
    async def mark_orphan_sent(self, event_id: str) -> None:
        await self.orphans.update_one({"_id": event_id}, {"$set": {"outbox_pending": False}})

    @store_errors
    async def pending_orphans(self, limit: int) -> list[OrphanOutcome]:
        cursor = (
            self.orphans.find({"outbox_pending": True}).sort("created_at", ASCENDING).limit(limit)
        )
        return [self._orphan(d) async for d in cursor]


def release_held(
    document: dict[str, Any],
    by_cart: dict[str, dict[str, Any] | None],
    by_payment: dict[str, dict[str, Any] | None],
) -> dict[str, Any]:
    """A document a batch holds by cart and by payment: taken by one, it is gone from
    both (a retry after a conflict reads the store). Shared with the in-memory fake."""
    for held, key in ((by_cart, document["cart_id"]), (by_payment, document["payment_id"])):
        if key is not None and held.get(key) is document:
            del held[key]
    return document


class MongoStoreBatch(MongoCollectionStore):
    """The store for one consumer batch (:class:`~service.ports.store.StoreBatch`).

    `prefetch_by_cart`, `prefetch_by_payment` and the batch's own saves feed
    `load_by_cart` and `load_by_payment`, `prefetch_commands` answers the admin
    commands' claims and orphan look-ups, and the version-checked saves of the
    batch's concurrent handlers are written together.
    Everything else is the store's. Made by :meth:`MongoCollectionStore.batch`.
    """

    def __init__(self, store: MongoCollectionStore) -> None:
        super().__init__(store.database, _shared=store._shared)
        #: cart id → document (None: no collection yet), from the prefetch or our own writes.
        self._documents: dict[str, dict[str, Any] | None] = {}
        #: payment id → document (None: no such payment), the same for admin commands.
        self._by_payment: dict[str, dict[str, Any] | None] = {}
        #: (command id, fingerprint) → what `claim_command` answers, from `prefetch_commands`.
        self._claims: dict[tuple[str, str], str | None] = {}
        #: command id → stored orphan answer (None: none), taken once.
        self._orphans: dict[str, dict[str, Any] | None] = {}
        self._pending: list[_PendingWrite] = []
        self._writer: asyncio.Task[None] | None = None

    @store_errors
    async def prefetch_by_cart(self, cart_ids: Iterable[str]) -> None:
        await self._prefetch("cart_id", cart_ids, self._documents)

    @store_errors
    async def load_by_cart(self, cart_id: str) -> Loaded | None:
        if cart_id in self._documents:
            return self._take(self._documents, cart_id)
        return await super().load_by_cart(cart_id)

    async def _prefetch(
        self, field: str, ids: Iterable[str], held: dict[str, dict[str, Any] | None]
    ) -> None:
        """One `find` with `$in` on a top-level field (a plain query everywhere) for
        the ids not held yet; an id without a document is held as None."""
        wanted = [i for i in dict.fromkeys(ids) if i not in held]
        if not wanted:
            return
        found: dict[str, dict[str, Any] | None] = dict.fromkeys(wanted)
        # One id (a quiet moment's batch): an equality, which every server answers
        # from the index; nx-27017 scans the whole collection for any `$in` on a
        # field (its SQL goes through json_each), tens of ms at a few thousand carts.
        query = {field: wanted[0]} if len(wanted) == 1 else {field: {"$in": wanted}}
        async for document in self.collections.find(query):
            found[document[field]] = document
        held.update(found)

    def _take(self, held: dict[str, dict[str, Any] | None], key: str) -> Loaded | None:
        """Taken once: a retry after a ConcurrencyConflict reads the database."""
        document = held.pop(key)
        return None if document is None else self.from_document(self._taken(document))

    def _taken(self, document: dict[str, Any]) -> dict[str, Any]:
        return release_held(document, self._documents, self._by_payment)

    @store_errors
    async def prefetch_by_payment(self, payment_ids: Iterable[str]) -> None:
        await self._prefetch("payment_id", payment_ids, self._by_payment)

    @store_errors
    async def load_by_payment(self, payment_id: str) -> Loaded | None:
        if payment_id in self._by_payment:
            return self._take(self._by_payment, payment_id)
        return await super().load_by_payment(payment_id)

    @store_errors
    async def prefetch_commands(self, claims: Sequence[tuple[str, str]]) -> None:
        """One `insert_many` claims every command of the batch, one `find` reads the
        fingerprints of those claimed before and one reads their orphan answers.

        The claims are inserted unordered, in the batch's order: for a command id
        seen twice in the batch the first is stored and the second fails with a
        duplicate key, exactly as two `claim_command` calls in that order would.
        A claim that failed otherwise is left to `claim_command`.
        """
        wanted = [c for c in dict.fromkeys(claims) if c not in self._claims]
        command_ids = list(dict.fromkeys(c for c, _ in wanted))
        if not wanted:
            return

        async def read_orphans() -> dict[str, dict[str, Any] | None]:
            found: dict[str, dict[str, Any] | None] = dict.fromkeys(command_ids)
            async for document in self.orphans.find({"_id": {"$in": command_ids}}):
                found[str(document["_id"])] = document
            return found

        async def claim() -> dict[tuple[str, str], str | None]:
            failed: dict[int, dict[str, Any]] = {}
            try:
                await self.claims.insert_many(
                    [{"_id": c, "fingerprint": f} for c, f in wanted], ordered=False
                )
            except BulkWriteError as exc:
                failed = {e["index"]: e for e in exc.details.get("writeErrors", [])}
            answers: dict[tuple[str, str], str | None] = {
                pair: None for index, pair in enumerate(wanted) if index not in failed
            }
            taken = [wanted[index] for index, e in failed.items() if e.get("code") == DUPLICATE_KEY]
            if taken:
                stored = {
                    str(d["_id"]): str(d["fingerprint"])
                    async for d in self.claims.find({"_id": {"$in": [c for c, _ in taken]}})
                }
                for command_id, fingerprint in taken:
                    first = stored.get(command_id, fingerprint)
                    answers[(command_id, fingerprint)] = None if first == fingerprint else first
            return answers

        orphans, answers = await asyncio.gather(read_orphans(), claim())
        self._orphans.update(orphans)
        self._claims.update(answers)

    @store_errors
    async def claim_command(self, command_id: str, fingerprint: str) -> str | None:
        key = (command_id, fingerprint)
        if key in self._claims:
            # Not taken once: a stored claim never changes, so neither does its answer.
            return self._claims[key]
        return await super().claim_command(command_id, fingerprint)

    @store_errors
    async def orphan(self, event_id: str) -> OrphanOutcome | None:
        if event_id in self._orphans:
            # Taken once: the batch's own `save_orphan` may answer the next delivery.
            document = self._orphans.pop(event_id)
            return None if document is None else self._orphan(document)
        return await super().orphan(event_id)

    @store_errors
    async def save(
        self,
        collection: PaymentCollection,
        expected_version: int | None,
        snapshot: object | None = None,
    ) -> int:
        """`save`, written together with the saves of the batch's other handlers.

        Group commit: at most one group write is in flight; saves arriving
        meanwhile wait for the next one. Alone, a save is written at once; under
        load, one insert_many and one unordered bulk of updates carry many of them.
        Each write sets a fresh `write_id`, which tells which version-checked
        updates of a partly matched bulk were ours.
        """
        write_id = secrets.token_hex(8)
        update: dict[str, Any] | None = None
        if expected_version is None:
            version = 1
            document = new_document(collection)
        else:
            version = expected_version + 1
            write = self._update(collection, expected_version, snapshot)
            document, update = write.document, write.update
            update["$set"]["write_id"] = write_id
        document["write_id"] = write_id
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append(_PendingWrite(collection.id, expected_version, document, update, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_groups())
        if not await done:
            raise ConcurrencyConflict(collection.id)
        # The next event of this cart (or payment) in the batch starts from what we
        # just wrote.
        self._documents[collection.cart_id] = document
        if document["payment_id"] is not None:
            self._by_payment[document["payment_id"]] = document
        return version

    async def _write_groups(self) -> None:
        while self._pending:
            group, self._pending = self._pending, []
            inserts = [w for w in group if w.expected_version is None]
            updates = [w for w in group if w.expected_version is not None]
            try:
                results = await asyncio.gather(
                    self._insert_group(inserts),
                    self._update_group(updates),
                    return_exceptions=True,
                )
            except asyncio.CancelledError as exc:
                for write in group:
                    write.settle(exc)
                raise
            for writes, result in zip((inserts, updates), results, strict=True):
                if isinstance(result, BaseException):
                    for write in writes:
                        write.settle(result)  # e.g. MongoDB unreachable: the handler retries

    async def _insert_group(self, writes: list[_PendingWrite]) -> None:
        if not writes:
            return
        failed: dict[int, dict[str, Any]] = {}
        try:
            await self.collections.insert_many([w.document for w in writes], ordered=False)
        except BulkWriteError as exc:
            failed = {e["index"]: e for e in exc.details.get("writeErrors", [])}
        for index, write in enumerate(writes):
            error = failed.get(index)
            if error is None:
                write.settle(True)
            elif error.get("code") == DUPLICATE_KEY:
                write.settle(False)
            else:
                write.settle(WriteError(error.get("errmsg", ""), error.get("code")))

    async def _update_group(self, writes: list[_PendingWrite]) -> None:
        if not writes:
            return
        requests = []
        for write in writes:
            assert write.update is not None, "an update group holds updates only"
            where = {"_id": write.collection_id, "version": write.expected_version}
            requests.append(UpdateOne(where, write.update))
        failed: dict[int, dict[str, Any]] = {}
        matched: int | None
        try:
            result = await self.collections.bulk_write(requests, ordered=False)
            matched = result.matched_count
        except BulkWriteError as exc:
            failed = {e["index"]: e for e in exc.details.get("writeErrors", [])}
            matched = None
        if matched == len(writes):
            for write in writes:
                write.settle(True)
            return
        # Some did not match (a newer version was stored): ours are those that
        # carry our write ids now.
        current = {
            d["_id"]: d.get("write_id")
            async for d in self.collections.find(
                {"_id": {"$in": [w.collection_id for w in writes]}}, {"write_id": 1}
            )
        }
        for index, write in enumerate(writes):
            error = failed.get(index)
            if error is not None:
                write.settle(WriteError(error.get("errmsg", ""), error.get("code")))
            else:
                write.settle(current.get(write.collection_id) == write.document["write_id"])
