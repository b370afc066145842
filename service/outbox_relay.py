"""The outbox relay: a background loop of one service instance.

It publishes events that were stored but not confirmed sent (the process died
between the write and the publish, or the broker was down), keeping their ids. It
runs once at start-up and then periodically; it only takes events older than a
grace period, so it does not race the handler that just stored them. It delivers
through :class:`~service.outbox.Outbox`, as the consumer does.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from service.domain.model import PaymentCollection
from service.handlers import utcnow
from service.metrics import Metrics
from service.outbox import Outbox, Stored
from service.ports.publisher import EventPublisher
from service.ports.store import CollectionStore

log = logging.getLogger(__name__)

STARVATION_FACTOR = 10
STARVATION_FLOOR = timedelta(seconds=30)


class OutboxRelay:
    def __init__(
        self,
        store: CollectionStore,
        publisher: EventPublisher,
        metrics: Metrics,
        *,
        batch_size: int = 500,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.clock = clock
        self.store = store
        self.publisher = publisher
        self.metrics = metrics
        self.batch_size = batch_size
        self.outbox = Outbox(store, publisher, metrics)
        self.last_run_ok = False

    async def publish_collections(self, items: list[Stored], path: str = "relay") -> int:
        return await self.outbox.deliver(items, path=path)

    async def run_once(self, min_age: timedelta = timedelta(0)) -> int:
        """Publish every unsent event older than `min_age`; return how many.

        The age is the event's own (from its creation), not its collection's last
        write: a busy cart's events do not wait for a lull. Collections come oldest
        event first, and each is published on its own, so one the broker refuses
        does not hold up the others.
        """
        now = self.clock()
        sent = 0
        failed = 0
        pending = await self.store.pending_outbox(self.batch_size)
        self.metrics.outbox_backlog.set(len(pending))
        due = [
            (loaded.collection, loaded.version)
            for loaded in pending
            if self._due(loaded.collection, now, min_age)
        ]
        # Lag over everything pending, not only what is due: a relay that cannot
        # publish (broker down) must show a growing lag.
        created = [e.created_at for loaded in pending for e in loaded.collection.unsent_events]
        self.metrics.relay_lag.set(
            max(0.0, (now - min(created)).total_seconds()) if created else 0.0
        )
        for item in due:
            try:
                sent += await self.publish_collections([item])
            except Exception:
                failed += 1
                log.warning(
                    "relay could not publish the events of collection %s",
                    item[0].id,
                    exc_info=True,
                )
        for orphan in await self.store.pending_orphans(self.batch_size):
            try:
                sent += await self.outbox.deliver([], [orphan], path="relay")
            except Exception:
                failed += 1
                log.warning("relay could not publish orphan answer %s", orphan.event_id)
        self.last_run_ok = failed == 0
        return sent

    @staticmethod
    def _due(collection: PaymentCollection, now: datetime, min_age: timedelta) -> bool:
        """Whether the relay publishes a collection's unsent events now.

        Not while it was just written (the handler that wrote it is publishing
        them: both would send, a duplicate); but a cart written again and again
        does not hold its events back for longer than `STARVATION_FACTOR` grace
        periods, counted from the oldest event's creation.
        """
        oldest = min(e.created_at for e in collection.unsent_events)
        if oldest > now - min_age:
            return False
        patience = max(min_age * STARVATION_FACTOR, STARVATION_FLOOR)
        return collection.updated_at <= now - min_age or oldest <= now - patience

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
