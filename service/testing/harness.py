"""An integration harness: a running service, publish helpers and `await_event`.

For our own tests and for downstream teams' tests:

    async with ServiceHarness(kafka_bootstrap, mongodb_url) as h:
        await h.publish("cart.updated", builders.cart_updated("cart-1"))
        event = await h.await_event("payment.authorized", cart_id="cart-1")

Each harness uses its own topic prefix and database, so harnesses never see each
other's events. An observer consumes every outbound topic and the dead-letter
topic from the beginning and keeps what arrived.

Two ways to run the service: `mode="in-process"` (default: fast, same event loop,
`harness.app` is the `PaymentsApp`) and `mode="subprocess"` (`payments run` in a
child process configured by environment variables, ready when `/readyz` says so:
the service exactly as deployed). `embedded()` starts embedded Kafka and MongoDB
first when no addresses are given. Downstream pytest suites get all of this as
fixtures from `service.testing.pytest_plugin`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pymongo import AsyncMongoClient

from schemas.topics import (
    ADMIN_COMMAND_TYPES,
    CART_UPDATED,
    CHECKOUT_COMPLETED,
    DLQ_TOPIC,
    OUTBOUND_TOPICS,
    PAYMENT_PROVIDER_WEBHOOK,
    topic_for,
)
from service.adapters.mongo_store import ARCHIVE
from service.adapters.stored_document import archived_event, read_document
from service.domain.model import OutboxEvent, PaymentCollection
from service.embedded import ensure_topics
from service.settings import load_settings
from service.testing import builders
from service.testing.infrastructure import unique_database_name, unique_topic_prefix
from service.tools.connection import ToolError
from service.tools.kafka_io import (
    MAX_REQUEST_BYTES,
    broker_is_tansu,
    stop_consumer,
    topic_partitions,
)

DEFAULT_ADMIN_KEY = ("harness", "harness-secret")


@dataclass(frozen=True, slots=True)
class ReceivedEvent:
    topic: str
    key: str | None
    headers: dict[str, str]
    event: dict[str, Any]

    @property
    def type(self) -> str:
        return str(self.event.get("type"))

    @property
    def id(self) -> str:
        return str(self.event.get("id"))

    @property
    def data(self) -> dict[str, Any]:
        data = self.event.get("data")
        return data if isinstance(data, dict) else {}


def caused_by(event_id: str) -> Callable[[ReceivedEvent], bool]:
    """An `await_event` predicate: the event caused by inbound event `event_id`."""
    return lambda received: received.event.get("causationid") == event_id


class EventNotReceived(AssertionError):
    pass


HarnessMode = Literal["in-process", "subprocess"]


class ServiceHarness:
    def __init__(
        self,
        kafka_bootstrap: str,
        mongodb_url: str,
        *,
        prefix: str | None = None,
        database: str | None = None,
        admin_key: tuple[str, str] = DEFAULT_ADMIN_KEY,
        start_service: bool = True,
        mode: HarnessMode = "in-process",
        **settings: Any,
    ) -> None:
        if mode not in ("in-process", "subprocess"):
            raise ValueError(f"mode must be 'in-process' or 'subprocess', not {mode!r}")
        self.mode: HarnessMode = mode
        self.process: Any = None
        """The `ServiceProcess` running `payments run` (subprocess mode)."""
        self.kafka_bootstrap = kafka_bootstrap
        self.mongodb_url = mongodb_url
        self.prefix = prefix if prefix is not None else unique_topic_prefix()
        self.database_name = database or unique_database_name()
        self.admin_key = admin_key
        self.start_service = start_service
        self.settings_overrides: dict[str, Any] = {
            "kafka_bootstrap_servers": kafka_bootstrap,
            "mongodb_url": mongodb_url,
            "mongodb_database": self.database_name,
            "topic_prefix": self.prefix,
            "http_port": 0,
            "admin_keys": {admin_key[0]: admin_key[1]},
            "consumer_group": f"payments-{self.prefix.rstrip('.')}",
            "relay_interval_s": 0.5,
            "relay_min_age_s": 1.0,
            "reconcile_interval_s": 0.5,
            "reconcile_min_age_s": 0.5,
            "retry_base_delay_s": 0.01,
            **settings,
        }
        self.app: Any = None
        self.received: list[ReceivedEvent] = []
        self._producer: AIOKafkaProducer | None = None
        self._observer: AIOKafkaConsumer | None = None
        self._observer_task: asyncio.Task[None] | None = None
        self._new_event = asyncio.Event()
        self.mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongodb_url, tz_aware=True)
        self.database = self.mongo[self.database_name]

    # -- lifecycle ---------------------------------------------------------------

    async def __aenter__(self) -> ServiceHarness:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def settings(self) -> Any:
        return load_settings(**self.settings_overrides)

    async def start(self) -> None:
        await ensure_topics(
            self.kafka_bootstrap,
            [
                topic_for(t, self.prefix)
                for t in (
                    *OUTBOUND_TOPICS,
                    DLQ_TOPIC,
                    CART_UPDATED,
                    CHECKOUT_COMPLETED,
                    *ADMIN_COMMAND_TYPES,
                    PAYMENT_PROVIDER_WEBHOOK,
                )
            ],
        )
        # The idempotent producer wherever the broker has it (Apache Kafka, not Tansu).
        self.settings_overrides.setdefault(
            "kafka_idempotence", not await broker_is_tansu(self.kafka_bootstrap)
        )
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.kafka_bootstrap, linger_ms=2, max_request_size=4 * 1024 * 1024
        )
        await self._producer.start()
        # The observer takes every partition itself (assign, no group): it commits
        # nothing and needs no group join, which costs seconds on Tansu.
        self._observer = AIOKafkaConsumer(
            bootstrap_servers=self.kafka_bootstrap,
            group_id=None,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            max_partition_fetch_bytes=MAX_REQUEST_BYTES,
        )
        await self._observer.start()
        self._observer.assign(await self._observed_partitions())
        self._observer_task = asyncio.create_task(self._observe())
        if self.start_service:
            await self.start_app()

    async def _observed_partitions(self, timeout: float = 30.0) -> list[TopicPartition]:
        """Every partition of the outbound and dead-letter topics, once the broker's
        metadata lists them (a topic just created may take a moment to appear)."""
        assert self._observer is not None
        deadline = time.monotonic() + timeout
        partitions: list[TopicPartition] = []
        for topic_type in (*OUTBOUND_TOPICS, DLQ_TOPIC):
            topic = topic_for(topic_type, self.prefix)
            while True:
                try:
                    numbers = await topic_partitions(self._observer, topic)
                    break
                except ToolError:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.1)
            partitions.extend(TopicPartition(topic, n) for n in numbers)
        return partitions

    async def start_app(self, **overrides: Any) -> Any:
        """Start the service (again), optionally with changed settings.

        Returns the `PaymentsApp` in-process, the `ServiceProcess` in subprocess mode.
        """
        settings = {**self.settings_overrides, **overrides}
        if self.mode == "subprocess":
            from service.testing.service_process import ServiceProcess

            load_settings(**settings)  # a typo fails here, not as a child's exit code
            self.process = ServiceProcess(settings)
            await self.process.start()
            return self.process
        from service.entrypoints.app import PaymentsApp

        self.app = PaymentsApp(load_settings(**settings))
        await self.app.start()
        return self.app

    async def stop_app(self) -> None:
        if self.app is not None:
            await self.app.stop()
            self.app = None
        if self.process is not None:
            process, self.process = self.process, None
            await process.stop()
            process.cleanup()

    @property
    def http_port(self) -> int | None:
        """The service's HTTP port (health, readiness, metrics, webhooks), if running."""
        if self.process is not None:
            return int(self.process.http_port)
        return None if self.app is None else self.app.http_port

    @property
    def base_url(self) -> str | None:
        port = self.http_port
        return None if port is None else f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        await self.stop_app()
        if self._observer_task is not None:
            self._observer_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._observer_task
        if self._observer is not None:
            await stop_consumer(self._observer)
        if self._producer is not None:
            await self._producer.stop()
        await self.mongo.close()

    async def _observe(self) -> None:
        assert self._observer is not None
        while True:
            batches = await self._observer.getmany(timeout_ms=200)
            for records in batches.values():
                for record in records:
                    try:
                        event = orjson.loads(record.value) if record.value else {}
                    except orjson.JSONDecodeError:
                        event = {"undecodable": True}
                    self.received.append(
                        ReceivedEvent(
                            topic=record.topic,
                            key=record.key.decode() if record.key else None,
                            headers={
                                k: (v or b"").decode("utf-8", "replace") for k, v in record.headers
                            },
                            event=event,
                        )
                    )
            if batches:
                self._new_event.set()

    # -- publishing ----------------------------------------------------------------

    async def publish_raw(
        self,
        topic_type: str,
        value: bytes | None,
        *,
        key: str | bytes | None = None,
        headers: Sequence[tuple[str, bytes | None]] = (),
        timestamp_ms: int | None = None,
    ) -> tuple[int, int]:
        """Send one record as given, byte for byte (with `timestamp_ms` as its
        CreateTime, if given); return its (partition, offset)."""
        assert self._producer is not None
        raw_key = key.encode() if isinstance(key, str) else key
        metadata = await self._producer.send_and_wait(
            topic_for(topic_type, self.prefix),
            value,
            key=raw_key,
            headers=list(headers),
            timestamp_ms=timestamp_ms,
        )
        return metadata.partition, metadata.offset

    async def publish(
        self,
        event_type: str,
        data: dict[str, Any],
        *,
        event_id: str | None = None,
        key: str | None = None,
        sign: bool = True,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> str:
        """Publish a valid event (admin commands signed with the harness key); return its id."""
        event = builders.envelope(event_type, data, event_id=event_id)
        value = builders.encode(event)
        all_headers = list(headers)
        if event_type in ADMIN_COMMAND_TYPES and sign:
            all_headers.append(builders.sign(value, *self.admin_key))
        if key is None:
            key = str(data.get("cart_id") or data.get("payment_id") or "")
        await self.publish_raw(event_type, value, key=key, headers=all_headers)
        return str(event["id"])

    # -- observing -------------------------------------------------------------------

    def events(
        self,
        event_type: str | None = None,
        *,
        cart_id: str | None = None,
        predicate: Callable[[ReceivedEvent], bool] | None = None,
    ) -> list[ReceivedEvent]:
        result = []
        for received in self.received:
            if event_type is not None and received.type != event_type:
                continue
            if (
                cart_id is not None
                and received.data.get("cart_id") != cart_id
                and (received.key != cart_id)
            ):
                continue
            if predicate is not None and not predicate(received):
                continue
            result.append(received)
        return result

    async def await_event(
        self,
        event_type: str,
        *,
        cart_id: str | None = None,
        predicate: Callable[[ReceivedEvent], bool] | None = None,
        timeout: float = 60.0,
        count: int = 1,
    ) -> ReceivedEvent:
        """The `count`-th matching event, or fail listing what did arrive.

        The deadline is generous on purpose (a loaded machine, a group re-join on
        Tansu takes ~18 s): a passing test returns as soon as the event is there."""
        deadline = time.monotonic() + timeout
        while True:
            matching = self.events(event_type, cart_id=cart_id, predicate=predicate)
            if len(matching) >= count:
                return matching[count - 1]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                arrived = [f"{r.type} key={r.key} data={r.data}" for r in self.received[-20:]]
                raise EventNotReceived(
                    f"no {event_type} (#{count}) for cart {cart_id!r} within {timeout}s; "
                    f"arrived ({len(self.received)} total, last 20):\n  " + "\n  ".join(arrived)
                )
            self._new_event.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new_event.wait(), min(remaining, 0.2))

    async def settle(self, quiet_s: float = 1.0, timeout: float = 20.0) -> None:
        """Wait until no new event arrived for `quiet_s` seconds."""
        deadline = time.monotonic() + timeout
        seen = -1
        while time.monotonic() < deadline:
            if len(self.received) == seen:
                return
            seen = len(self.received)
            await asyncio.sleep(quiet_s)

    # -- state -----------------------------------------------------------------------

    async def collection(self, cart_id: str) -> PaymentCollection | None:
        """The cart's stored payment collection; its `outbox` holds the events not
        sent yet (sent ones leave it: :meth:`stored_events`)."""
        document = await self.database["payment_collections"].find_one({"cart_id": cart_id})
        return None if document is None else read_document(document)[0]

    async def stored_events(self, cart_id: str) -> list[OutboxEvent]:
        """Every outbound event the service stored for a cart, oldest first: those
        sent (kept in the archive, `sent: true`) and those not sent yet."""
        document = await self.database["payment_collections"].find_one({"cart_id": cart_id})
        if document is None:
            return []
        unsent = read_document(document)[0].outbox
        query = {"key": cart_id, "collection_id": document["_id"]}
        sent = [archived_event(e) async for e in self.database[ARCHIVE].find(query)]
        known = {e.id for e in unsent}
        sent = sorted((e for e in sent if e.id not in known), key=lambda e: e.created_at)
        return [*sent, *unsent]

    async def ledger(self, **query: Any) -> list[dict[str, Any]]:
        return [d async for d in self.database["sandbox_ledger"].find(query)]


@asynccontextmanager
async def embedded(
    kafka_bootstrap: str | None = None,
    mongodb_url: str | None = None,
    **harness_options: Any,
) -> AsyncIterator[ServiceHarness]:
    """A started harness; embedded Kafka and/or MongoDB are started for what is not given.

    For quick experiments and downstream suites without infrastructure of their own:

        async with embedded() as h:
            await h.publish("cart.updated", builders.cart_updated("cart-1"))

    The embedded servers are stopped on exit (and die with the process anyway).
    """
    from service.embedded import EmbeddedKafka, EmbeddedMongo

    started: list[EmbeddedKafka | EmbeddedMongo] = []
    try:
        if kafka_bootstrap is None:
            kafka = EmbeddedKafka()
            await asyncio.to_thread(kafka.start)
            started.append(kafka)
            kafka_bootstrap = kafka.bootstrap_servers
        if mongodb_url is None:
            mongo = EmbeddedMongo()
            await asyncio.to_thread(mongo.start)
            started.append(mongo)
            mongodb_url = mongo.url
        async with ServiceHarness(kafka_bootstrap, mongodb_url, **harness_options) as harness:
            yield harness
    finally:
        for server in reversed(started):
            await asyncio.to_thread(server.stop)
