"""A batch that keeps failing is reported, not silent (issue 11, item 5).

Records never fail a batch on their own; only an outage does (here: the broker
refusing every send, forced by wrapping the publisher). After `stall_threshold`
failures in a row the service logs an error naming topic, partition and offset,
counts it, and `/readyz` answers 503 with `progressing: false`; once the outage
ends the batch goes through and the service is ready again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence

import httpx
import pytest

from service.domain.model import OutboxEvent
from service.testing.harness import ServiceHarness

pytestmark = pytest.mark.integration


class Outage:
    """Wraps the service's publisher: every send fails while `down` is set."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.down = True

    async def publish(self, events: Sequence[OutboxEvent]) -> None:
        if self.down and events:
            raise ConnectionError("forced outage: the broker refuses every send")
        await self.inner.publish(events)  # type: ignore[attr-defined]


@pytest.fixture
async def harness(kafka_bootstrap: str, mongodb_url: str) -> AsyncIterator[ServiceHarness]:
    async with ServiceHarness(kafka_bootstrap, mongodb_url, stall_threshold=2) as h:
        yield h


async def _until(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:  # noqa: ASYNC110 (polls state)
        await asyncio.sleep(0.2)


def _metric(harness: ServiceHarness, name: str, **labels: str) -> float:
    value = harness.app.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else float(value)


async def _readyz(harness: ServiceHarness) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.get(f"http://127.0.0.1:{harness.app.http_port}/readyz")


async def test_a_batch_failing_again_and_again_is_logged_counted_and_not_ready(
    harness: ServiceHarness, caplog: pytest.LogCaptureFixture
) -> None:
    outage = Outage(harness.app.processor.publisher)
    harness.app.processor.publisher = outage
    caplog.set_level(logging.ERROR, logger="service.consumer")
    partition, offset = await harness.publish_raw("cart.updated", b"not json", key="stall")

    await _until(lambda: harness.app.stalls.stalled, 60)
    assert harness.app.stalls.stalled, "the failing batch was never reported"

    topic = f"{harness.prefix}cart.updated"
    assert f"{topic}[{partition}]@{offset}" in caplog.text
    assert _metric(harness, "payments_consumer_stalled") == 1
    assert (
        _metric(
            harness,
            "payments_consumer_stalled_batches_total",
            topic=topic,
            partition=str(partition),
        )
        == 1
    )
    assert _metric(harness, "payments_consumer_batch_failures_total") >= 2
    response = await _readyz(harness)
    assert response.status_code == 503
    assert response.json()["checks"]["progressing"] is False
    assert "progressing" in response.json()["failed"]

    outage.down = False  # the outage ends: the same batch goes through
    await harness.await_event("payments.dead_letter", predicate=lambda r: r.key == "stall")
    await _until(lambda: not harness.app.stalls.stalled, 30)
    assert not harness.app.stalls.stalled
    assert _metric(harness, "payments_consumer_stalled") == 0
