"""The reconciler: a background loop that settles what is unknown (contract promise 7).

Authorizations whose outcome was unknown, reserved captures, refunds and cancels left
in flight, and lost authorizations still to void: it asks the providers about every
collection whose reconciliation is due, oldest first (:meth:`PaymentService.reconcile`;
what to ask and what the answers do is the domain's, `service/domain/reconcile.py`),
and delivers what that settled through the outbox.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from service.handlers import HandleResult, PaymentService
from service.metrics import Metrics
from service.outbox_relay import OutboxRelay

log = logging.getLogger(__name__)


class Reconciler:
    def __init__(self, service: PaymentService, relay: OutboxRelay, metrics: Metrics) -> None:
        self.service = service
        self.relay = relay
        self.metrics = metrics

    async def reconcile_due(self, min_age: timedelta, limit: int = 100) -> list[HandleResult]:
        """One pass over what is due, oldest first; one failure does not stop the pass."""
        service = self.service
        due = await service.store.needing_reconcile(service.clock() - min_age, limit)
        results = []
        for loaded in due:
            try:
                results.append(await service.reconcile(loaded.collection.id))
            except Exception:
                log.warning("reconciling collection %s failed", loaded.collection.id, exc_info=True)
        return results

    async def run_once(self, min_age: timedelta) -> int:
        self.metrics.reconciler_runs.inc()
        counts = await self.service.store.counts(self.service.clock() - min_age)
        self.metrics.reconcile_backlog.set(counts.reconcile_due)
        self.metrics.needs_attention.set(counts.needs_attention)
        results = await self.reconcile_due(min_age)
        settled = [item for r in results if r.status == "applied" for item in r.saved]
        if settled:
            self.metrics.reconciled.inc(len(settled))
            try:
                await self.relay.publish_collections(settled, path="reconciler")
            except Exception:
                # Stored, so not lost: the relay publishes them with their ids.
                log.warning("publishing reconciled events failed; left to the relay")
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
