"""A batch's offset commit follows its publish, and runs together with marking the
published events sent (issue 15: one round trip less on every batch's path).

Neither needs the other: an event published but not yet marked is at worst sent
again by the relay, with its id; the commit only has to follow the publish. What
must not change: no commit before the events are published or stored, and a
failure of either step still fails the batch (it is then re-delivered).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import orjson
import pytest

from schemas.topics import topic_for
from service.consumer import BatchProcessor, Record
from service.domain.model import OutboxEvent, PaymentCollection
from service.handlers import PaymentService
from service.testing import builders
from tests.support.memory import MemoryCollectionStore, RecordingPublisher
from tests.support.world import World

PREFIX = "bc."


def _checkout(cart_id: str, amount: int) -> Record:
    event = builders.envelope(
        "checkout.completed",
        builders.checkout_completed(
            cart_id, amount, idempotency_key=f"idem-{cart_id}", provider_id="fake"
        ),
        event_id=f"evt_co_{cart_id}",
        source="/batch-commit",
    )
    topic = topic_for("checkout.completed", PREFIX)
    return Record(topic, 0, 0, cart_id.encode(), orjson.dumps(event), ())


class SlowMarkingStore(MemoryCollectionStore):
    """Once armed, `mark_sent` waits until the commit has started (or fails, if told to)."""

    def __init__(self, commit_started: asyncio.Event, fail: bool = False) -> None:
        super().__init__()
        self.commit_started = commit_started
        self.fail = fail
        self.armed = False
        self.marked = 0

    async def mark_sent(self, items: Sequence[tuple[PaymentCollection, int]]) -> None:
        if not self.armed:
            await super().mark_sent(items)
            return
        await asyncio.wait_for(self.commit_started.wait(), 5)
        if self.fail:
            raise ConnectionError("MongoDB unreachable (injected)")
        self.marked += 1
        await super().mark_sent(items)


class RefusingPublisher(RecordingPublisher):
    """The broker refuses the batch's payment events (dead letters, none here, pass)."""

    async def publish(self, events: Sequence[OutboxEvent]) -> None:
        if events:
            raise ConnectionError("broker unavailable (injected)")


def _processor(world: World, publisher: RecordingPublisher) -> BatchProcessor:
    return world.batch_processor(publisher, PREFIX)


async def _scene(fail_marking: bool = False) -> tuple[World, RecordingPublisher, asyncio.Event]:
    started = asyncio.Event()
    world = World("fake")
    store = SlowMarkingStore(started, fail=fail_marking)
    world.store = store
    world.service = PaymentService(store, world.registry, world.caller, clock=world.clock)
    await world.cart("cart_1", 2500)
    store.armed = True
    return world, RecordingPublisher(), started


async def test_the_commit_follows_the_publish_and_runs_with_the_marking() -> None:
    world, publisher, started = await _scene()
    seen_at_commit: list[int] = []

    async def commit() -> None:
        seen_at_commit.append(len(publisher.of_type("payment.authorized")))
        started.set()  # the marking was waiting for this: they overlap

    await _processor(world, publisher).process([_checkout("cart_1", 2500)], commit=commit)

    assert seen_at_commit == [1], "committed before the batch's events were published"
    store = world.store
    assert isinstance(store, SlowMarkingStore) and store.marked == 1
    assert (await world.collection("cart_1")).unsent_events == []


async def test_a_failed_marking_still_fails_the_batch_after_the_commit() -> None:
    world, publisher, started = await _scene(fail_marking=True)
    commits = 0

    async def commit() -> None:
        nonlocal commits
        commits += 1
        started.set()

    with pytest.raises(ConnectionError):
        await _processor(world, publisher).process([_checkout("cart_1", 2500)], commit=commit)

    # Published and committed; left unmarked, so the relay sends it again (same id).
    assert commits == 1
    assert len(publisher.of_type("payment.authorized")) == 1
    unsent = (await world.collection("cart_1")).unsent_events
    assert [e.type for e in unsent] == ["payment.authorized"]


async def test_events_left_to_the_relay_are_stored_before_the_commit() -> None:
    world, _, _ = await _scene()
    publisher = RefusingPublisher()
    pending_at_commit: list[list[str]] = []

    async def commit() -> None:
        pending_at_commit.append([e.type for e in (await world.collection("cart_1")).unsent_events])

    await _processor(world, publisher).process([_checkout("cart_1", 2500)], commit=commit)

    assert pending_at_commit == [["payment.authorized"]]
    assert publisher.published == []
