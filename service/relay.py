"""The outbox relay and the reconciler: background loops of one service instance.

The relay publishes events that were stored but not confirmed sent (the process
died between the write and the publish, or the broker was down), keeping their
ids. It runs once at start-up and then periodically; it only takes events older
than a grace period, so it does not race the handler that just stored them.

The reconciler settles authorizations whose outcome was unknown and reserved
operations left in flight (contract promise 7).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from service.domain.model import PaymentCollection
from service.handlers import PaymentService, utcnow
from service.metrics import Metrics
from service.ports.publisher import EventPublisher
from service.ports.store import CollectionStore

log = logging.getLogger(__name__)


class OutboxRelay:
    def __init__(
        self,
        store: CollectionStore,
        publisher: EventPublisher,
        metrics: Metrics,
        *,
        batch_size: int = 500,
    ) -> None:
        self.store = store
        self.publisher = publisher
        self.metrics = metrics
        self.batch_size = batch_size
        self.last_run_ok = False

    async def publish_collections(
        self, items: list[tuple[PaymentCollection, int]], path: str = "relay"
    ) -> int:
        events = [e for collection, _ in items for e in collection.unsent_events]
        if not events:
            return 0
        await self.publisher.publish(events)
        self.metrics.observe_published(events, path)
        await self.store.mark_sent(items)
        return len(events)

    async def run_once(self, min_age: timedelta = timedelta(0)) -> int:
        """Publish every unsent event older than `min_age`; return how many."""
        now = utcnow()
        sent = 0
        pending = await self.store.pending_outbox(self.batch_size)
        self.metrics.outbox_backlog.set(len(pending))
        due = [
            (loaded.collection, loaded.version)
            for loaded in pending
            if loaded.collection.updated_at <= now - min_age
        ]
        # Lag over everything pending, not only what is due: a relay that cannot
        # publish (broker down) must show a growing lag.
        created = [e.created_at for loaded in pending for e in loaded.collection.unsent_events]
        self.metrics.relay_lag.set(
            max(0.0, (now - min(created)).total_seconds()) if created else 0.0
        )
        sent += await self.publish_collections(due)
        for orphan in await self.store.pending_orphans(self.batch_size):
            await self.publisher.publish(orphan.events)
            self.metrics.observe_published(orphan.events, "relay")
            await self.store.mark_orphan_sent(orphan.event_id)
            sent += len(orphan.events)
        self.last_run_ok = True
        return sent

    async def run_forever(self, interval_s: float, min_age: timedelta) -> None:
        while True:
            try:
                sent = await self.run_once(min_age)
                if sent:
                    log.info("relay published %d stored events", sent)
            except asyncio.CancelledError:
                raise
            except Exception:
                self.last_run_ok = False
                log.warning("outbox relay pass failed", exc_info=True)
            await asyncio.sleep(interval_s)


class Reconciler:
    def __init__(self, service: PaymentService, relay: OutboxRelay, metrics: Metrics) -> None:
        self.service = service
        self.relay = relay
        self.metrics = metrics

    async def run_once(self, min_age: timedelta) -> int:
        self.metrics.reconciler_runs.inc()
        results = await self.service.reconcile_due(min_age)
        settled = [item for r in results if r.status == "applied" for item in r.saved]
        if settled:
            self.metrics.reconciled.inc(len(settled))
            await self.relay.publish_collections(settled, path="reconciler")
        return len(settled)

    async def run_forever(self, interval_s: float, min_age: timedelta) -> None:
        while True:
            try:
                await self.run_once(min_age)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("reconciler pass failed", exc_info=True)
            await asyncio.sleep(interval_s)
