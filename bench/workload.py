"""The benchmark's workload: N carts, each `cart.updated` then `checkout.completed`.

Messages are built and encoded before any timer starts, so the producer only
sends bytes. Cart ids are chosen per partition for the warm-up (one cart on every
partition proves every partition is assigned and served before timing starts).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.partitioner import murmur2

from service.testing import builders

CART_UPDATED = "cart.updated"
CHECKOUT_COMPLETED = "checkout.completed"


@dataclass(slots=True)
class Cart:
    cart_id: str
    updated: bytes
    checkout: bytes


def partition_of(key: str, partitions: int) -> int:
    """The partition aiokafka's default partitioner picks for `key` (Java's murmur2)."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


def build_cart(cart_id: str, index: int) -> Cart:
    amount = 1000 + (index * 37) % 90_000
    updated = builders.envelope(
        CART_UPDATED,
        builders.cart_updated(
            cart_id,
            amount,
            region_id="eu",
            email=f"shopper{index}@example.com",
            provider_id="sandbox",
            context={"ip": "203.0.113.7", "locale": "en-US"},
        ),
        source="/bench-storefront",
    )
    checkout = builders.envelope(
        CHECKOUT_COMPLETED,
        builders.checkout_completed(
            cart_id,
            amount,
            idempotency_key=f"idem-{cart_id}",
            provider_id="sandbox",
            payment_method="pm_card_visa",
            region_id="eu",
            context={"ip": "203.0.113.7"},
        ),
        source="/bench-storefront",
    )
    return Cart(cart_id, orjson.dumps(updated), orjson.dumps(checkout))


def build_carts(run_id: str, n: int, *, tag: str = "c") -> list[Cart]:
    return [build_cart(f"{run_id}-{tag}{i:06d}", i) for i in range(n)]


def warmup_carts(run_id: str, partitions: int) -> list[Cart]:
    """One cart per partition."""
    found: dict[int, Cart] = {}
    i = 0
    while len(found) < partitions:
        cart_id = f"{run_id}-w{i:05d}"
        p = partition_of(cart_id, partitions)
        if p not in found:
            found[p] = build_cart(cart_id, i)
        i += 1
    return list(found.values())


async def new_producer(bootstrap: str) -> AIOKafkaProducer:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        linger_ms=5,
        max_batch_size=256 * 1024,
        enable_idempotence=False,
        acks=1,
    )
    await producer.start()
    return producer


async def produce(
    producer: AIOKafkaProducer,
    prefix: str,
    carts: Sequence[Cart],
    *,
    rate: float = 0.0,
    chunk: int = 500,
    sent_at: dict[str, float] | None = None,
) -> tuple[float, float]:
    """Send every cart's `cart.updated` then `checkout.completed` (keyed by cart id).

    Sends are not awaited one by one: one wait per chunk. `rate` > 0 paces the
    checkouts (carts per second) instead of sending as fast as possible.
    Returns (first send, last acknowledged) on the `time.perf_counter` clock.
    """
    updated_topic = prefix + CART_UPDATED
    checkout_topic = prefix + CHECKOUT_COMPLETED
    if rate > 0:
        chunk = max(1, min(chunk, int(rate / 50)))  # paced in 20 ms steps
    start = time.perf_counter()
    for offset in range(0, len(carts), chunk):
        part = carts[offset : offset + chunk]
        if rate > 0:
            due = start + offset / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        futures = []
        for cart in part:
            key = cart.cart_id.encode()
            futures.append(await producer.send(updated_topic, cart.updated, key=key))
            if sent_at is not None:
                sent_at[cart.cart_id] = time.perf_counter()
            futures.append(await producer.send(checkout_topic, cart.checkout, key=key))
        await asyncio.gather(*futures)
    return start, time.perf_counter()


@dataclass
class Observer:
    """Consumes outbound topics with its own group; first arrival per cart and type."""

    bootstrap: str
    topics: Iterable[str]
    group: str
    arrivals: dict[str, dict[str, float]] = field(default_factory=dict)
    duplicates: int = 0
    sizes: dict[str, list[int]] = field(default_factory=dict)
    _consumer: AIOKafkaConsumer | None = None
    _task: asyncio.Task[None] | None = None
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            *self.topics,
            bootstrap_servers=self.bootstrap,
            group_id=self.group,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            fetch_max_wait_ms=50,
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        await self._consumer.start()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        assert self._consumer is not None
        while True:
            batches = await self._consumer.getmany(timeout_ms=200, max_records=5000)
            now = time.perf_counter()
            for tp, records in batches.items():
                topic_arrivals = self.arrivals.setdefault(tp.topic, {})
                sizes = self.sizes.setdefault(tp.topic, [0, 0])
                for record in records:
                    key = record.key.decode() if record.key else ""
                    if key in topic_arrivals:
                        self.duplicates += 1
                        continue
                    topic_arrivals[key] = now
                    sizes[0] += 1
                    sizes[1] += len(record.value or b"")
            if batches:
                self._changed.set()

    def count(self, topic: str) -> int:
        return len(self.arrivals.get(topic, {}))

    def mean_size(self, topic: str) -> int:
        n, total = self.sizes.get(topic, [0, 0])
        return total // n if n else 0

    async def wait_for(
        self,
        topic: str,
        keys: Iterable[str],
        timeout: float,
        *,
        stall_timeout: float = 60.0,
        progress: bool = False,
    ) -> bool:
        """Wait until every key arrived on `topic`; False on timeout or a stall."""
        wanted = set(keys)
        deadline = time.perf_counter() + timeout
        last_count, last_change = -1, time.perf_counter()
        next_report = time.perf_counter() + 5
        while True:
            arrived = self.arrivals.get(topic, {})
            done = sum(1 for k in wanted if k in arrived)
            if done == len(wanted):
                return True
            now = time.perf_counter()
            if done != last_count:
                last_count, last_change = done, now
            if now > deadline or now - last_change > stall_timeout:
                return False
            if progress and now >= next_report:
                print(f"  … {done}/{len(wanted)} authorized", flush=True)
                next_report = now + 5
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), 0.5)
            await asyncio.sleep(0.05)  # at most 20 checks a second

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()
