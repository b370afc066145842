"""The one way out: publish stored outbound events, then mark them sent.

Every path that sends what a decision stored — the consumer right after its batch,
the relay for what nobody confirmed, the reconciler for what it settled — goes
through :meth:`Outbox.deliver`, so they count, order and mark alike: publish (the
broker acknowledged every event), count them as published on that path, then mark
them sent. An event published but not marked (the marking failed, the process died)
is published again later by the relay, with its id: consumers de-duplicate by id.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from service.domain.model import OutboxEvent, PaymentCollection
from service.metrics import Metrics, StageClock
from service.ports.publisher import EventPublisher
from service.ports.store import CollectionStore, OrphanOutcome


@dataclass(slots=True)
class Progress:
    """How far a delivery got, for a batch pipelined behind it: `marked` is set once
    the published events are marked sent in the store (or can no longer be), `error`
    before it when the delivery failed before the marking was done."""

    marked: asyncio.Event = field(default_factory=asyncio.Event)
    error: BaseException | None = None

    def done(self, error: BaseException | None = None) -> None:
        if not self.marked.is_set():
            self.error = error
            self.marked.set()


class EventsNotPublished(Exception):
    """The publish failed (the broker is down, or refused them): nothing was marked
    sent, so the events stay stored for the relay."""


Stored = tuple[PaymentCollection, int]
"""A collection as stored at a version: its unsent events are what to deliver."""


def unsent_events(
    saved: Sequence[Stored], orphans: Sequence[OrphanOutcome] = ()
) -> list[OutboxEvent]:
    """What delivering these stored collections and orphan answers publishes."""
    events = [e for collection, _ in saved for e in collection.unsent_events]
    return events + [e for orphan in orphans for e in orphan.events]


class Outbox:
    """Publishes what the store holds unsent and marks it sent (see the module doc)."""

    def __init__(self, store: CollectionStore, publisher: EventPublisher, metrics: Metrics) -> None:
        self.store = store
        self.publisher = publisher
        self.metrics = metrics

    async def deliver(
        self,
        saved: Sequence[Stored],
        orphans: Sequence[OrphanOutcome] = (),
        *,
        path: str,
        alongside: Callable[[], Awaitable[None]] | None = None,
        clock: StageClock | None = None,
        progress: Progress | None = None,
    ) -> int:
        """Publish the unsent events of `saved` and `orphans`, then mark them sent;
        returns how many were published. Raises what the publish raised (nothing is
        marked then: they stay for the relay).

        `alongside` runs together with the marking, once the publish succeeded (the
        consumer's offset commit: both only follow the publish, neither needs the
        other); a failure of either raises. `progress` says when the marking is done.
        """
        events = unsent_events(saved, orphans)
        if events:
            try:
                await self.publisher.publish(events)
            except Exception as exc:
                raise EventsNotPublished(f"{len(events)} events not published: {exc}") from exc
            self.metrics.observe_published(events, path)
        if clock is not None:
            clock.lap("publish")
        # Only collections that had events to send: the others are stored as they are.
        sent = [item for item in saved if item[0].unsent_events]
        steps = [self._timed(clock, "mark_sent", self._mark_sent(sent, orphans, progress))]
        if alongside is not None:
            steps.append(self._timed(clock, "commit", alongside()))
        for outcome in await asyncio.gather(*steps, return_exceptions=True):
            if isinstance(outcome, BaseException):
                raise outcome
        return len(events)

    async def _mark_sent(
        self,
        sent: list[Stored],
        orphans: Sequence[OrphanOutcome],
        progress: Progress | None = None,
    ) -> None:
        try:
            if sent:
                await self.store.mark_sent(sent)
            for orphan in orphans:
                await self.store.mark_orphan_sent(orphan.event_id)
        except BaseException as exc:
            if progress is not None:
                progress.done(exc)
            raise
        if progress is not None:
            progress.done()

    @staticmethod
    async def _timed(clock: StageClock | None, stage: str, step: Awaitable[None]) -> None:
        if clock is None:
            await step
        else:
            await clock.timed(stage, step)
