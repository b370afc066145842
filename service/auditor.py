"""The provider audit: a background sweep that re-reads what the providers hold.

Webhooks can be lost for good (an endpoint misconfigured for a day, a secret rotated
wrongly), and some facts reach us only as webhooks: a refund or capture made in the
provider's dashboard, a dispute, an authorization the provider let expire. So every
`PAYMENTS_AUDIT_INTERVAL_S` the sweep takes the next page of collections active within
`PAYMENTS_AUDIT_WINDOW_S` that may have money at a provider (a payment, or an
authorization asked for), asks the providers for the objects the aggregate names
(`PaymentCollection.audit_reads`: the payment's, and other sessions' not released yet)
as they are now (`PaymentProvider.read_objects`), and has the aggregate apply each
difference as a fact
(`PaymentCollection.audit`), with the same rules as a webhook. It goes round all such
payments, a page per pass; `payments_provider_audit_corrections_total` counts what it
found, by provider and kind.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from service.domain.model import Notification
from service.domain.results import Decision
from service.handlers import HandleResult, PaymentService
from service.metrics import Metrics
from service.outbox_relay import OutboxRelay
from service.ports.providers import ProviderUnavailable
from service.ports.store import Loaded
from service.unit_of_work import Work

log = logging.getLogger(__name__)


class Auditor:
    def __init__(
        self,
        service: PaymentService,
        relay: OutboxRelay,
        metrics: Metrics,
        *,
        window: timedelta,
        batch: int,
    ) -> None:
        self.service = service
        self.relay = relay
        self.metrics = metrics
        self.window = window
        self.batch = batch
        self._after: str | None = None
        """Where the last page ended (a collection id): the next pass goes on from it."""

    async def run_once(self) -> int:
        """Audit the next page of active payments; returns how many differences it applied."""
        self.metrics.provider_audit_runs.inc()
        since = self.service.clock() - self.window
        page = await self.service.store.payments_active_since(since, self._after, self.batch)
        self._after = page[-1].collection.id if len(page) == self.batch else None
        corrected = 0
        for loaded in page:
            try:
                corrected += await self._audit(loaded)
            except ProviderUnavailable as exc:
                log.warning("audit of %s: provider unavailable: %s", loaded.collection.id, exc)
            except Exception:
                log.warning("audit of collection %s failed", loaded.collection.id, exc_info=True)
        return corrected

    async def _audit(self, loaded: Loaded) -> int:
        collection = loaded.collection
        facts: list[Notification] = []
        for call in collection.audit_reads():
            provider = self.service.providers.get(call.provider_id)
            if provider is not None:
                actions = await provider.read_objects(call)
                facts.extend(action.notification(call.provider_id) for action in actions)
        if not facts:
            return 0
        result = await self._apply(collection.id, facts)
        kinds = result.note.split(",") if result.status == "applied" and result.note else []
        provider_id = facts[0].provider_id
        for kind in kinds:
            self.metrics.provider_audit_corrections.labels(provider_id, kind).inc()
        if result.saved:
            try:
                await self.relay.publish_collections(result.saved, path="audit")
            except Exception:
                log.warning("publishing audited events failed; left to the relay")
        return len(kinds)

    async def _apply(self, collection_id: str, facts: list[Notification]) -> HandleResult:
        now = self.service.clock()
        service = self.service
        return await service.unit_of_work.run(
            Work(
                collection_id,
                lambda: service.store.load(collection_id),
                lambda loaded, _: loaded.collection.audit(facts, now) if loaded else _NOTHING,
            )
        )

    async def run_forever(self, interval_s: float) -> None:
        while True:
            try:
                corrected = await self.run_once()
                if corrected:
                    log.warning("the provider audit applied %d differences", corrected)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("provider audit pass failed", exc_info=True)
            await asyncio.sleep(interval_s)


_NOTHING = Decision("ignored")
