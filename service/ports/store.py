"""The store port: payment collections, one document each, version-checked.

Adapters speak in this port's errors only: :class:`ConcurrencyConflict`,
:class:`StoreUnavailable` and :class:`StoreError`; no driver exception leaves them.

:class:`CollectionStore` is what the handlers, the relay and the reconciler use;
:meth:`CollectionStore.batch` gives the consumer a :class:`StoreBatch`, the store
as one batch of records sees it, which the consumer hands to that batch's handlers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from service.domain.model import OutboxEvent, PaymentCollection


class ConcurrencyConflict(Exception):
    """The document changed since it was loaded: reload and decide again."""


class StoreUnavailable(Exception):
    """The store cannot be reached (an outage): not the message's fault, so the work is
    retried in place, however long it lasts, and never dead-lettered."""


class StoreError(Exception):
    """The store refused an operation for another reason than an outage (a document
    too large, an unexpected server error): the message's processing fails and is
    retried a bounded number of times, then dead-lettered."""


@dataclass(slots=True)
class Loaded:
    collection: PaymentCollection
    version: int
    snapshot: object | None = None
    """What the adapter read, opaque: given back to :meth:`CollectionStore.save`, it
    lets the adapter write only what changed since this load."""


@dataclass(frozen=True, slots=True)
class StoreCounts:
    """What the gauges show: collections due for reconciliation, and those holding an
    operation that needs a person (`needs_attention`)."""

    reconcile_due: int
    needs_attention: int


@dataclass(slots=True)
class OrphanOutcome:
    """An answer to an event that found no collection (e.g. unknown payment)."""

    event_id: str
    events: list[OutboxEvent]
    version: int = 1


class CollectionStore(Protocol):
    async def load(self, collection_id: str) -> Loaded | None: ...

    async def load_by_cart(self, cart_id: str) -> Loaded | None: ...

    async def load_by_payment(self, payment_id: str) -> Loaded | None: ...

    async def save(
        self,
        collection: PaymentCollection,
        expected_version: int | None,
        snapshot: object | None = None,
    ) -> int:
        """Store the collection (its state and its unsent events, recorded ones
        included) if its version is still `expected_version` (None: it must not exist
        yet). Returns the new version; raises :class:`ConcurrencyConflict` otherwise.

        `snapshot` is the :attr:`Loaded.snapshot` of the load at `expected_version`:
        with it the write carries only what changed; without it, all of it."""
        ...

    async def mark_sent(self, items: Sequence[tuple[PaymentCollection, int]]) -> None:
        """The unsent events of these (collection, version) pairs were published:
        they leave the stored outbox (and go to the archive of sent events, if the
        adapter keeps one). Never changes a stored version."""
        ...

    async def pending_outbox(self, limit: int) -> list[Loaded]:
        """Collections with unsent events, the oldest unsent event first."""
        ...

    async def needing_reconcile(self, older_than: datetime, limit: int) -> list[Loaded]:
        """Collections whose reconciliation was due before `older_than`
        (:attr:`PaymentCollection.reconcile_due_at`), the longest due first."""
        ...

    async def payments_active_since(
        self, since: datetime, after: str | None, limit: int
    ) -> list[Loaded]:
        """Collections a provider may hold money for (`PaymentCollection.audited`: a
        payment, or an authorization asked for), changed at or after `since`, in id
        order after the collection id `after` (None: from the start): the audit
        sweep's pages."""
        ...

    async def counts(self, now: datetime) -> StoreCounts:
        """How many collections are due for reconciliation at `now`, and how many hold
        an operation that needs a person."""
        ...

    async def claim_command(self, command_id: str, fingerprint: str) -> str | None:
        """Record the first fingerprint seen for a command id; return the stored
        one when it differs (an idempotency conflict), else None."""
        ...

    async def save_orphan(self, outcome: OrphanOutcome) -> OrphanOutcome:
        """Store an orphan answer once; return the stored one (same event ids)."""
        ...

    async def orphan(self, event_id: str) -> OrphanOutcome | None:
        """The orphan answer stored for an event (e.g. a command's `payment_not_found`)."""
        ...

    async def mark_orphan_sent(self, event_id: str) -> None: ...

    async def pending_orphans(self, limit: int) -> list[OrphanOutcome]:
        """Orphan answers not yet sent, oldest first."""
        ...

    def batch(self) -> StoreBatch:
        """A fresh view of this store for one consumer batch (see :class:`StoreBatch`)."""
        ...


class StoreBatch(CollectionStore, Protocol):
    """The store as one consumer batch sees it; the batch's handlers all use it.

    The consumer calls :meth:`prefetch_by_cart` with every cart of the batch (and
    :meth:`prefetch_by_payment`, :meth:`prefetch_commands` with its admin
    commands), so the batch costs one query for its aggregates instead of one per
    event: the
    first :meth:`load_by_cart` of each prefetched cart is answered from it, a
    collection saved in the batch answers the next event of its cart, and a
    second load of the same cart (a retry after a :class:`ConcurrencyConflict`)
    asks the store again. An adapter may also write the concurrent saves of the
    batch's handlers together (group commit).

    Safe because every save is version-checked: an answer that someone else has
    made stale since only costs a ConcurrencyConflict, after which the handler
    reloads. `batch()` on a batch gives a fresh batch of the same store.
    """

    async def prefetch_by_cart(self, cart_ids: Iterable[str]) -> None:
        """Load the collections of many carts with one query, for this batch's loads."""
        ...

    async def prefetch_by_payment(self, payment_ids: Iterable[str]) -> None:
        """Load the collections of many payments with one query, for this batch's
        :meth:`load_by_payment` (taken once, as :meth:`prefetch_by_cart`)."""
        ...

    async def prefetch_commands(self, claims: Sequence[tuple[str, str]]) -> None:
        """Claim the batch's admin commands together and read their orphan answers.

        `claims` are (command id, fingerprint) pairs in the batch's order; each is
        claimed exactly as :meth:`claim_command` would, the first of a command id
        winning, and :meth:`claim_command` then answers them without a round trip.
        A claim's answer never changes (a claim is stored once, never altered), so
        it is kept for the whole batch; the orphan answers are taken once, as the
        prefetched collections are.
        """
        ...
