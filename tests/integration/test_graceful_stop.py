"""A graceful stop commits the batch being delivered before it closes the consumer.

Batches are pipelined: a handled batch is published, marked sent and committed in the
background while the next is fetched. CI found (Apache Kafka, a loaded machine) a
SIGTERM whose stop closed the consumer while that commit was in flight: the commit
failed, the stop hung until it was killed, and the batch was fetched again. Here the
commit is held back until the stop has begun, so the race happens every time.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

import service.entrypoints.app as app_module
from schemas.topics import topic_for
from service.entrypoints.app import shutdown_budget_s
from service.testing import builders
from service.testing.builders import new_cart_id
from service.testing.harness import ServiceHarness

pytestmark = pytest.mark.integration


@pytest.fixture
async def harness(kafka_bootstrap: str, mongodb_url: str) -> AsyncIterator[ServiceHarness]:
    async with ServiceHarness(kafka_bootstrap, mongodb_url, start_service=False) as h:
        yield h


async def _committed(harness: ServiceHarness, topic: str) -> int:
    """What the service's group committed on `topic`, summed over its partitions."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=harness.kafka_bootstrap,
        group_id=harness.settings_overrides["consumer_group"],
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        total = 0
        for partition in range(harness.settings().topic_partitions):
            total += await consumer.committed(TopicPartition(topic, partition)) or 0
        return total
    finally:
        await consumer.stop()


async def test_a_stop_during_a_commit_waits_for_it(
    harness: ServiceHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    stopping = asyncio.Event()
    real_committer = app_module._committer

    def held_committer(message: Any, records: Any) -> Callable[[], Awaitable[None]]:
        commit = real_committer(message, records)

        async def held() -> None:
            await stopping.wait()  # commit only once the stop has begun
            await commit()

        return held

    monkeypatch.setattr(app_module, "_committer", held_committer)
    app = await harness.start_app()
    cart = new_cart_id()
    await harness.publish("checkout.completed", builders.checkout_completed(cart, 1000))
    # Published, so the delivery is at its commit, held.
    await harness.await_event("payment.authorized", cart_id=cart)

    loop = asyncio.get_running_loop()
    started = loop.time()
    stop = asyncio.create_task(harness.stop_app())
    await asyncio.sleep(0)  # the stop begins...
    stopping.set()  # ...and the commit goes on
    budget = shutdown_budget_s(app.settings)
    done, _ = await asyncio.wait({stop}, timeout=budget)
    assert done, f"the stop hung past its budget of {budget:.0f}s (the consumer closed mid-commit)"
    await stop
    assert loop.time() - started < budget

    topic = topic_for("checkout.completed", harness.prefix)
    assert await _committed(harness, topic) == 1, "the delivered batch was not committed"
