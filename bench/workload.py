"""The benchmark's workload: N carts, each `cart.updated` then `checkout.completed`;
in the full flow (`--flow full`) also a signed `admin.payment.capture` of the whole
amount once the cart's `payment.authorized` is read and a signed
`admin.payment.refund` of part of it once its `payment.captured` is read, as a shop
runs them (`FollowUps`).

Messages are built and encoded before any timer starts, so the producer only
sends bytes. Cart ids are chosen per partition for the warm-up (one cart on every
partition proves every partition is assigned and served before timing starts).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.partitioner import murmur2

from service.testing import builders

CART_UPDATED = "cart.updated"
CHECKOUT_COMPLETED = "checkout.completed"
ADMIN_CAPTURE = "admin.payment.capture"
ADMIN_REFUND = "admin.payment.refund"
AUTHORIZED = "payment.authorized"
CAPTURED = "payment.captured"
REFUNDED = "payment.refunded"
#: The bench's admin signing key (the service under test is started with it).
ADMIN_KEY = ("bench", "bench-admin-secret")


@dataclass(slots=True)
class Cart:
    cart_id: str
    updated: bytes
    checkout: bytes
    amount: int = 0

    @property
    def refund_amount(self) -> int:
        """The part the full flow refunds: a third, at least one unit."""
        return max(1, self.amount // 3)


def partition_of(key: str, partitions: int) -> int:
    """The partition aiokafka's default partitioner picks for `key` (Java's murmur2)."""
    return int((murmur2(key.encode()) & 0x7FFFFFFF) % partitions)


def build_cart(cart_id: str, index: int, provider: str = "sandbox") -> Cart:
    amount = 1000 + (index * 37) % 90_000
    # The sandbox authorizes by test card; the manual provider takes no payment data.
    payment_method = "pm_card_visa" if provider == "sandbox" else None
    updated = builders.envelope(
        CART_UPDATED,
        builders.cart_updated(
            cart_id,
            amount,
            region_id="eu",
            email=f"shopper{index}@example.com",
            provider_id=provider,
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
            provider_id=provider,
            payment_method=payment_method,
            region_id="eu",
            context={"ip": "203.0.113.7"},
        ),
        source="/bench-storefront",
    )
    return Cart(cart_id, orjson.dumps(updated), orjson.dumps(checkout), amount)


def build_carts(run_id: str, n: int, *, tag: str = "c", provider: str = "sandbox") -> list[Cart]:
    return [build_cart(f"{run_id}-{tag}{i:06d}", i, provider) for i in range(n)]


def warmup_carts(run_id: str, partitions: int, provider: str = "sandbox") -> list[Cart]:
    """One cart per partition."""
    found: dict[int, Cart] = {}
    i = 0
    while len(found) < partitions:
        cart_id = f"{run_id}-w{i:05d}"
        p = partition_of(cart_id, partitions)
        if p not in found:
            found[p] = build_cart(cart_id, i, provider)
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
    #: Called with (topic, key, value, read at) for each first arrival.
    on_record: Callable[[str, str, bytes, float], None] | None = None
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
                    if self.on_record is not None:
                        self.on_record(tp.topic, key, record.value or b"", now)
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
                print(f"  … {done}/{len(wanted)} {topic.rsplit('.', 1)[-1]}", flush=True)
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


@dataclass
class FollowUps:
    """The shop's side of the full flow: capture what is authorized, refund part of it.

    The observer hands it every first `payment.authorized` and `payment.captured`
    it reads (`on_record`, in the observer's task: only a queue put there); a sender
    task produces the signed command, keyed by payment id, and notes when, so the
    latency of `payment.captured` and `payment.refunded` runs from the produce of
    the command that causes it to the read, like that of `payment.authorized` from
    the produce of the checkout.
    """

    producer: AIOKafkaProducer
    prefix: str
    carts: dict[str, Cart]
    key: tuple[str, str] = ADMIN_KEY
    #: When the cause of each outbound event was produced: event type → cart → time.
    sent_at: dict[str, dict[str, float]] = field(
        default_factory=lambda: {CAPTURED: {}, REFUNDED: {}}
    )
    #: What was asked per cart: (captured amount, refunded amount).
    asked: dict[str, list[int]] = field(default_factory=dict)
    _queue: asyncio.Queue[tuple[str, str, str, int]] = field(default_factory=asyncio.Queue)
    _task: asyncio.Task[None] | None = None
    _futures: list[asyncio.Future[object]] = field(default_factory=list)

    def on_record(self, topic: str, key: str, value: bytes, read_at: float) -> None:
        kind = topic[len(self.prefix) :]
        cart = self.carts.get(key)
        if cart is None or kind not in (AUTHORIZED, CAPTURED):
            return
        data = orjson.loads(value)["data"]
        if kind == AUTHORIZED:
            self._queue.put_nowait((ADMIN_CAPTURE, key, data["payment_id"], cart.amount))
        else:
            self._queue.put_nowait((ADMIN_REFUND, key, data["payment_id"], cart.refund_amount))

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            command, cart_id, payment_id, amount = await self._queue.get()
            event = builders.envelope(
                command,
                builders.capture(payment_id, amount, requested_by="bench@shop.example"),
                event_id=f"{command.rsplit('.', 1)[-1]}-{cart_id}",
                source="/bench-backoffice",
            )
            value = orjson.dumps(event)
            caused = CAPTURED if command == ADMIN_CAPTURE else REFUNDED
            self.sent_at[caused][cart_id] = time.perf_counter()
            self.asked.setdefault(cart_id, [0, 0])[int(caused == REFUNDED)] += amount
            self._futures.append(
                await self.producer.send(
                    self.prefix + command,
                    value,
                    key=payment_id.encode(),
                    headers=[builders.sign(value, *self.key)],
                )
            )

    async def stop(self) -> None:
        """Stop sending; raise if a command was not acknowledged by the broker."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await asyncio.gather(*self._futures)
