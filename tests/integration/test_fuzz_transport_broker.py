"""Hostile records over the real broker and MongoDB server, into a running service.

A few hundred records drawn by the same strategies as the fast fuzzer
(tests/support/hostile.py) are written to the inbound topics, interleaved with
valid checkouts. Afterwards every valid checkout is authorized, every record the
service cannot read is on `payments.dlq` with a kind (never `processing_failed`),
every letter fits the broker's message limit, and the service's committed offsets
reach the end of every partition written to: the consumer lag returns to 0.

`FUZZ_BROKER_RECORDS` sets the number of hostile records (`make fuzz` raises it).
"""

from __future__ import annotations

import asyncio
import os
import time

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from hypothesis import HealthCheck, Phase, given, settings

from schemas.dead_letter import DeadLetterKind
from schemas.topics import topic_for
from service.testing import builders
from service.testing.harness import ServiceHarness
from tests.support.hostile import HostileRecord, hostile_records

pytestmark = pytest.mark.integration

RECORDS = int(os.environ.get("FUZZ_BROKER_RECORDS", "200"))
VALID_EVERY = 10
LIMIT = 1024 * 1024

#: Values that are no readable event on any topic: each must be dead-lettered.
UNREADABLE = ("tombstone", "empty", "control characters", "180 KB", "over 1 MiB", "nested")


def _draw(count: int, admin_key: tuple[str, str]) -> list[HostileRecord]:
    drawn: list[HostileRecord] = []

    @settings(
        max_examples=count,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(hostile_records(admin_key, broker=True))
    def collect(record: HostileRecord) -> None:
        drawn.append(record)

    collect()
    return drawn


@pytest.fixture
async def harness(kafka_bootstrap: str, mongodb_url: str):  # type: ignore[no-untyped-def]
    async with ServiceHarness(kafka_bootstrap, mongodb_url) as h:
        yield h


async def _committed(harness: ServiceHarness, partitions: set[TopicPartition]) -> dict:  # type: ignore[type-arg]
    consumer = AIOKafkaConsumer(
        bootstrap_servers=harness.kafka_bootstrap,
        group_id=harness.settings_overrides["consumer_group"],
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        return {tp: await consumer.committed(tp) for tp in partitions}
    finally:
        await consumer.stop()


async def test_hostile_records_are_contained_and_the_lag_returns_to_zero(
    harness: ServiceHarness,
) -> None:
    hostile = _draw(RECORDS, harness.admin_key)
    assert len(hostile) >= RECORDS * 0.8, "Hypothesis drew too few records"
    sent: dict[tuple[str, int, int], HostileRecord] = {}
    last_offset: dict[TopicPartition, int] = {}
    carts: list[str] = []
    for n, record in enumerate(hostile):
        # A Kafka client needs a key or a value; a keyless tombstone gets an empty key.
        key = b"" if record.key is None and record.value is None else record.key
        partition, offset = await harness.publish_raw(
            record.event_type,
            record.value,
            key=key,
            headers=record.headers,
            timestamp_ms=record.timestamp_ms,
        )
        topic = topic_for(record.event_type, harness.prefix)
        sent[(topic, partition, offset)] = record
        last_offset[TopicPartition(topic, partition)] = offset
        if n % VALID_EVERY == 0:
            cart_id = builders.new_cart_id()
            carts.append(cart_id)
            await harness.publish("checkout.completed", builders.checkout_completed(cart_id))

    for cart_id in carts:
        await harness.await_event("payment.authorized", cart_id=cart_id, timeout=120)

    unreadable = {
        cause for cause, record in sent.items() if record.label.startswith(UNREADABLE)
    } | {cause for cause, record in sent.items() if "on the wrong topic" in record.label}
    assert len(unreadable) >= len(sent) // 10, "the strategies drew too few unreadable records"
    deadline = time.monotonic() + 120
    while True:
        letters = {
            (r.data["source_topic"], r.data["partition"], r.data["offset"]): r
            for r in harness.events("payments.dead_letter")
        }
        if unreadable <= set(letters) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    missing = {cause: sent[cause].label for cause in unreadable - set(letters)}
    assert not missing, f"not dead-lettered: {missing}"
    for cause, letter in letters.items():
        assert cause in sent, f"a letter for a record we did not send: {cause}"
        kind = letter.data["error"]["kind"]
        assert kind in {k.value for k in DeadLetterKind}
        assert kind != "processing_failed", (sent[cause].label, letter.data["error"])
        assert len(orjson.dumps(letter.event)) < LIMIT

    # The lag returns to 0: every partition written to is committed past its end.
    deadline = time.monotonic() + 60
    while True:
        committed = await _committed(harness, set(last_offset))
        behind = {
            tp: (committed[tp], end)
            for tp, end in last_offset.items()
            if (committed[tp] or 0) <= end
        }
        if not behind or time.monotonic() > deadline:
            break
        await asyncio.sleep(1.0)
    assert not behind, f"partitions not committed to their end: {behind}"
    print(f"{len(sent)} hostile records, {len(letters)} dead-lettered, {len(carts)} carts")
