"""The composition root: wires settings, MongoDB, Kafka, providers and HTTP.

`PaymentsApp` owns the lifecycle: `start()` connects and begins consuming;
`stop()` shuts down gracefully (stop fetching, let the batch in flight finish,
flush the outbox, commit, close), which is what SIGTERM triggers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from aiokafka import TopicPartition
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaTimeoutError,
    NodeNotReadyError,
    RequestTimedOutError,
)
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from pymongo import AsyncMongoClient
from tenacity import RetryCallState

from schemas.topics import ALL_TOPICS, INBOUND_TOPICS, topic_for
from service.adapters.kafka_publisher import KafkaEventPublisher
from service.adapters.kafka_security import build_kafka_security, kafka_client_options
from service.adapters.kafka_topics import ensure_topics
from service.adapters.mongo_store import MongoCollectionStore
from service.adapters.providers import ProviderRegistry
from service.admin_auth import AdminAuthenticator
from service.auditor import Auditor
from service.consumer import BatchProcessor, HandledBatch, Record, StallMonitor, letter_budget
from service.entrypoints.http import EmbeddedServer, build_http_app
from service.entrypoints.raw_records import decode_nothing, parse_batch
from service.handlers import PaymentService
from service.metrics import Metrics
from service.observability.assignment_log import AssignmentSummary
from service.observability.redaction import register_secrets
from service.observability.tracing import MessageTracer, build_tracer_provider
from service.outbox import Progress
from service.outbox_relay import OutboxRelay
from service.ports.publisher import PublisherUnavailable
from service.ports.store import StoreUnavailable
from service.provider_calls import ProviderCaller, RetryPolicy
from service.reconciler import Reconciler
from service.retry import call_backoff, outage_backoff, pause, retry_on_types, retrying
from service.settings import Settings
from service.webhook_intake import WebhookIntake, WebhookVerifier

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

log = logging.getLogger(__name__)

RELAY_FLUSH_TIMEOUT_S = 10.0
"""On shutdown, how long the final outbox flush may take."""
TASKS_TIMEOUT_S = 5.0
"""On shutdown, how long background tasks may take to wind down."""
CLOSE_MARGIN_S = 5.0
"""Closing the broker, MongoDB and providers, and the exporter's last flush."""


STARTUP_UNAVAILABLE: tuple[type[BaseException], ...] = (
    KafkaConnectionError,
    KafkaTimeoutError,
    NodeNotReadyError,
    RequestTimedOutError,
    StoreUnavailable,  # MongoDB: the store adapter's and the provider registry's
    PublisherUnavailable,
    OSError,
)
"""Errors that mean "not reachable yet" at start-up: retried, not fatal."""


def shutdown_budget_s(settings: Settings) -> float:
    """The longest a graceful stop can take; a deployment's grace period must cover it
    (Kubernetes `terminationGracePeriodSeconds`, Docker `stop_grace_period`)."""
    return settings.shutdown_grace_s + RELAY_FLUSH_TIMEOUT_S + TASKS_TIMEOUT_S + CLOSE_MARGIN_S


class PaymentsApp:
    def __init__(
        self,
        settings: Settings,
        *,
        serve_http: bool = True,
        span_exporter: SpanExporter | None = None,
    ) -> None:
        """`span_exporter` is the tracing test hook: spans go there (e.g. an
        `InMemorySpanExporter`) even without `PAYMENTS_OTLP_ENDPOINT`."""
        if settings.kafka_bootstrap_servers is None or settings.mongodb_url is None:
            raise ValueError(
                "PAYMENTS_KAFKA_BOOTSTRAP_SERVERS and PAYMENTS_MONGODB_URL are required "
                "(or set neither and use `payments run`, which starts embedded ones)"
            )
        self.settings = settings
        self.serve_http = serve_http
        # Before anything can log: the redactor must know the configured secrets.
        register_secrets(settings.secret_values())
        self.tracer_provider = build_tracer_provider(settings, exporter=span_exporter)
        self.metrics = Metrics()
        self.mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            settings.mongodb_url.get_secret_value(), tz_aware=True, uuidRepresentation="standard"
        )
        self.database = self.mongo[settings.mongodb_database]
        self.store = MongoCollectionStore(self.database, archive_ttl_s=settings.event_archive_ttl_s)
        self.providers = ProviderRegistry(settings, self.database)
        self.caller = ProviderCaller(
            RetryPolicy.from_settings(settings),
            observe=self.metrics.observe_provider_call,
            on_retry=self.metrics.observe_retry,
        )
        self.service = PaymentService(self.store, self.providers, self.caller)
        middlewares: list[Any] = []
        if self.tracer_provider is not None:
            from faststream.kafka.opentelemetry import KafkaTelemetryMiddleware

            middlewares.append(KafkaTelemetryMiddleware(tracer_provider=self.tracer_provider))
        self.broker = KafkaBroker(
            settings.kafka_bootstrap_servers,
            client_id="payments-service",
            security=build_kafka_security(settings),
            middlewares=middlewares,
            # FastStream's lines go through our structured logging, not its own handler.
            logger=_framework_logger(),
            log_level=logging.DEBUG,  # no per-message INFO lines on the hot path
            graceful_timeout=settings.shutdown_grace_s,
            linger_ms=settings.kafka_linger_ms,
            # Explicit, because dead letters are cut to fit below it.
            max_request_size=settings.kafka_max_request_size,
            enable_idempotence=settings.kafka_idempotence,
            acks="all",
        )
        self.publisher = KafkaEventPublisher(self.broker, settings.topic_prefix)
        self.processor = BatchProcessor(
            self.service,
            self.store,
            self.publisher,
            AdminAuthenticator(
                {k: v.get_secret_value() for k, v in settings.admin_keys.items()},
                required=settings.admin_signature_required,
            ),
            self.metrics,
            topic_prefix=settings.topic_prefix,
            max_concurrency=settings.max_concurrency,
            max_attempts=settings.processing_max_attempts,
            retry_backoff=call_backoff(settings.retry_base_delay_s, settings.retry_max_delay_s),
            tracer=(
                MessageTracer(self.tracer_provider) if self.tracer_provider is not None else None
            ),
            max_letter_bytes=letter_budget(settings.kafka_max_request_size),
            webhook_verifier=WebhookVerifier(self.providers),
        )
        self.stalls = StallMonitor(settings.stall_threshold, self.metrics)
        self.outage_backoff = outage_backoff(
            settings.outage_retry_initial_s, settings.outage_retry_max_delay_s
        )
        self.relay = OutboxRelay(self.store, self.publisher, self.metrics)
        self.reconciler = Reconciler(self.service, self.relay, self.metrics)
        self.auditor = Auditor(
            self.service,
            self.relay,
            self.metrics,
            window=timedelta(seconds=settings.audit_window_s),
            batch=settings.audit_batch,
        )
        self.webhooks = WebhookIntake(self.providers, self.publisher)
        self.subscriber = self.broker.subscriber(
            *(topic_for(t, settings.topic_prefix) for t in INBOUND_TOPICS),
            group_id=settings.consumer_group,
            batch=True,
            max_records=settings.batch_max_records,
            batch_timeout_ms=settings.batch_timeout_ms,
            fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
            ack_policy=AckPolicy.MANUAL,
            parser=parse_batch,
            decoder=decode_nothing,
            auto_offset_reset="earliest",
            session_timeout_ms=settings.kafka_session_timeout_ms,
            heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
        )
        self.subscriber(self._on_batch)
        self._delivery: _Delivery | None = None
        """The batch being delivered while the next one is fetched and handled."""
        self._tasks: list[asyncio.Task[None]] = []
        self._http: EmbeddedServer | None = None
        self.started = False
        self.stopping = False
        self._stop_deadline = float("inf")
        """When a graceful stop gives up on the batch being delivered."""

    async def _on_batch(self, message: KafkaMessage) -> None:
        """One fetched batch, pipelined behind the one before it.

        The batch is handled (every outcome stored) while the previous batch is still
        being delivered (published, marked sent, committed); it reads the store only
        once the previous one's events are marked sent, and is delivered in the
        background while the next batch is fetched. Per-key order holds (a key's
        next event is read after the last one is stored), events go out in batch
        order, and each batch's offsets are committed (explicitly, its own) only
        after its outcomes are stored and published.
        """
        raw = message.raw_message
        records = [
            Record.from_consumer_record(r) for r in (raw if isinstance(raw, tuple) else (raw,))
        ]
        previous = self._delivery
        if previous is not None:
            await previous.progress.marked.wait()
            if previous.progress.error is not None:
                # The delivery rewinds its own records (and pauses) even when no batch
                # follows; this batch was fetched past them, so it is fetched again too.
                self._delivery = None
                await previous.task
                _rewind(message, [*previous.records, *records])
                return
        try:
            handled = await self.processor.handle(records)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._refetch(message, records, exc)
            return
        self._delivery = _Delivery.start(
            self.processor,
            handled,
            _committer(message, records),
            delivered=self.stalls.succeeded,
            failed=lambda error: self._refetch(message, records, error),
        )
        self._observe_lag(message, records)
        if self.stopping:
            # Stopping the subscriber waits for this handler, then closes the consumer:
            # the delivery must have committed by then.
            await self._drain()

    async def _refetch(
        self, message: KafkaMessage, records: list[Record], error: BaseException
    ) -> None:
        """The broker or MongoDB is down (a record's own trouble never gets here): do
        not commit; rewind to the earliest of these records and fetch them again after
        a pause. Handled events de-duplicate. A batch that keeps failing is reported as
        a stall."""
        failures = self.stalls.failed(records)
        log.warning(
            "batch of %d failed (%d in a row); re-delivering",
            len(records),
            failures,
            exc_info=error,
        )
        await pause(self.outage_backoff, failures)
        _rewind(message, records)

    async def _drain(self) -> None:
        """Wait for the batch being delivered (graceful stop), until `shutdown_grace_s`
        after the stop began at most: then it is abandoned uncommitted (its records are
        fetched again by whoever takes the partition, and de-duplicate)."""
        delivery, self._delivery = self._delivery, None
        if delivery is None:
            return
        remaining = max(0.0, self._stop_deadline - time.monotonic())
        done, _ = await asyncio.wait({delivery.task}, timeout=remaining)
        if not done:
            log.warning("delivering the last batch took too long; left uncommitted")
            delivery.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await delivery.task

    def _observe_lag(self, message: KafkaMessage, records: list[Record]) -> None:
        """Records behind the end of each partition the batch came from, as the
        consumer's last fetch saw that end (`payments_consumer_lag`)."""
        consumer = getattr(message, "consumer", None)
        highwater = getattr(consumer, "highwater", None)
        if highwater is None:
            return
        last: dict[tuple[str, int], int] = {}
        for record in records:
            key = (record.topic, record.partition)
            last[key] = max(last.get(key, -1), record.offset)
        for (topic, partition), offset in last.items():
            end = highwater(TopicPartition(topic, partition))
            if isinstance(end, int):
                self.metrics.consumer_lag.labels(topic, str(partition)).set(
                    max(0, end - offset - 1)
                )

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Connect and begin consuming; waits (retrying) while a dependency is down.

        A broker or MongoDB that is unreachable at start-up is an outage to wait
        out, as it is later on; exiting would only turn it into a crash loop.
        HTTP comes up first, so `/healthz` says alive and `/readyz` says what is
        missing while it waits.
        """
        if self.serve_http:
            await self._start_http()
        async for attempt in retrying(
            self.outage_backoff,
            retry_on_types(*STARTUP_UNAVAILABLE),
            attempts=None,
            before_sleep=_log_unreachable,
        ):
            with attempt:
                await self._connect()
        self._start_background_tasks()
        self.started = True
        log.info(
            "payments service started (group %s)",
            self.settings.consumer_group,
            extra={"settings": self.settings.public_summary()},
        )

    async def _connect(self) -> None:
        settings = self.settings
        await self.store.create_indexes()
        await self.providers.record_installed()
        if settings.create_topics:
            assert settings.kafka_bootstrap_servers is not None
            await ensure_topics(
                settings.kafka_bootstrap_servers,
                [topic_for(t, settings.topic_prefix) for t in ALL_TOPICS],
                settings.topic_partitions,
                client_options=kafka_client_options(settings),
            )
        # Crash recovery first, before joining the consumer group (which can take
        # seconds): publish whatever a previous run stored but did not send.
        await self.broker.connect()
        await self.relay.run_once()
        await self.broker.start()

    def _start_background_tasks(self) -> None:
        settings = self.settings
        self._tasks.append(
            asyncio.create_task(
                self.relay.run_forever(
                    settings.relay_interval_s, timedelta(seconds=settings.relay_min_age_s)
                ),
                name="outbox-relay",
            )
        )
        self._tasks.append(
            asyncio.create_task(
                self.reconciler.run_forever(
                    settings.reconcile_interval_s,
                    timedelta(seconds=settings.reconcile_min_age_s),
                ),
                name="reconciler",
            )
        )
        self._tasks.append(
            asyncio.create_task(
                self.auditor.run_forever(settings.audit_interval_s), name="provider-audit"
            )
        )

    async def _start_http(self) -> None:
        import uvicorn

        app = build_http_app(
            self.readiness,
            lambda: (self.metrics.render(), self.metrics.content_type),
            self.webhooks.receive,
        )
        config = uvicorn.Config(
            app,
            host=self.settings.http_host,
            port=self.settings.http_port,
            log_level="warning",
            log_config=None,  # keep uvicorn's loggers on our structured handler
            access_log=False,
            lifespan="off",
        )
        self._http = EmbeddedServer(config)
        self._tasks.append(asyncio.create_task(self._http.serve(), name="http"))
        for _ in range(200):
            if self._http.started:
                break
            await asyncio.sleep(0.01)

    @property
    def http_port(self) -> int | None:
        if self._http is None or not self._http.servers:
            return None
        sockets = self._http.servers[0].sockets
        return int(sockets[0].getsockname()[1]) if sockets else None

    async def readiness(self) -> dict[str, bool]:
        """Which dependencies work; `/readyz` answers 503 naming the failed ones.

        `consumers`: the Kafka consumer joined its group and holds partitions (an
        instance beyond the partition count holds none yet is healthy: it joined).
        `accepting`: false from the moment a graceful stop begins.
        `progressing`: false while a batch has failed `stall_threshold` times in a row.
        """
        checks: dict[str, bool] = {}
        try:
            await asyncio.wait_for(self.mongo.admin.command("ping"), 2.0)
            checks["mongodb"] = True
        except Exception:
            checks["mongodb"] = False
        try:
            checks["broker"] = bool(await self.broker.ping(timeout=2.0))
        except Exception:
            checks["broker"] = False
        checks["consumers"] = self.started and self._consumer_joined()
        checks["relay"] = any(t.get_name() == "outbox-relay" and not t.done() for t in self._tasks)
        checks["accepting"] = not self.stopping
        checks["progressing"] = not self.stalls.stalled
        return checks

    def _consumer_joined(self) -> bool:
        consumer = getattr(self.subscriber, "consumer", None)
        if consumer is None:
            return False
        try:
            if consumer.assignment():
                return True
        except Exception:
            return False
        # No partitions: joined (generation >= 0) with nothing assigned is still
        # healthy, e.g. more replicas than partitions. aiokafka keeps this private.
        coordinator = getattr(consumer, "_coordinator", None)
        generation = getattr(coordinator, "generation", -1)
        return isinstance(generation, int) and generation >= 0

    async def stop(self) -> None:
        """Graceful shutdown: stop fetching, finish the batch in flight, flush, close.

        Takes at most :func:`shutdown_budget_s`: the batch in flight gets
        `shutdown_grace_s` (then it is abandoned uncommitted and re-delivered
        elsewhere, which de-duplicates), the outbox flush ten seconds.
        """
        self.stopping = True
        self._stop_deadline = time.monotonic() + self.settings.shutdown_grace_s
        if self._http is not None:
            self._http.should_exit = True
        # The batch being delivered commits while the consumer is still open; the
        # handler in flight (which stopping the subscriber waits for) delivers its own
        # batch before it returns, since `stopping` is set. Stopping the subscriber
        # closes the consumer: a commit still in flight then would never complete.
        await self._drain()
        with contextlib.suppress(Exception):
            await self.subscriber.stop()
        await self._drain()
        for task in self._tasks:
            if task.get_name() != "http":
                task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.relay.run_once(), RELAY_FLUSH_TIMEOUT_S)
        with contextlib.suppress(Exception):
            await self.broker.stop()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=TASKS_TIMEOUT_S)
        await self.providers.close()
        await self.mongo.close()
        if self.tracer_provider is not None:
            provider = self.tracer_provider
            with contextlib.suppress(Exception):
                await asyncio.to_thread(provider.force_flush, 3000)
                await asyncio.to_thread(provider.shutdown)
        self.started = False
        log.info("payments service stopped")


@dataclass(slots=True)
class _Delivery:
    """A handled batch being delivered in the background."""

    records: list[Record]
    progress: Progress
    task: asyncio.Task[None]

    @classmethod
    def start(
        cls,
        processor: BatchProcessor,
        handled: HandledBatch,
        commit: Callable[[], Awaitable[None]],
        *,
        delivered: Callable[[], None],
        failed: Callable[[BaseException], Awaitable[None]],
    ) -> _Delivery:
        progress = Progress()
        task = asyncio.create_task(
            _deliver(processor, handled, commit, progress, delivered, failed),
            name="batch-delivery",
        )
        return cls(list(handled.records), progress, task)


async def _deliver(
    processor: BatchProcessor,
    handled: HandledBatch,
    commit: Callable[[], Awaitable[None]],
    progress: Progress,
    delivered: Callable[[], None],
    failed: Callable[[BaseException], Awaitable[None]],
) -> None:
    try:
        await processor.deliver(handled, commit, progress=progress)
    except Exception as exc:
        if progress.error is not None:
            # Before the marking: nothing of this batch is committed, so it is fetched
            # again (after a pause, counted towards a stall) whether or not another
            # batch follows it.
            await failed(exc)
        else:
            # The commit failed after the marking: the offsets are committed with the
            # next batch's, or fetched again by whoever takes the partition.
            log.warning("committing a delivered batch failed", exc_info=True)
        return
    delivered()


def _committer(message: KafkaMessage, records: list[Record]) -> Callable[[], Awaitable[None]]:
    """Commit exactly this batch's offsets: the consumer has fetched further meanwhile."""
    offsets: dict[TopicPartition, int] = {}
    for record in records:
        partition = TopicPartition(record.topic, record.partition)
        offsets[partition] = max(offsets.get(partition, 0), record.offset + 1)

    consumer: Any = message.consumer  # the aiokafka consumer behind FastStream's message

    async def commit() -> None:
        await consumer.commit(offsets)

    return commit


def _rewind(message: KafkaMessage, records: list[Record]) -> None:
    """Seek each partition back to the earliest of `records`, to fetch them again."""
    earliest: dict[TopicPartition, int] = {}
    for record in records:
        partition = TopicPartition(record.topic, record.partition)
        earliest[partition] = min(earliest.get(partition, record.offset), record.offset)
    consumer: Any = message.consumer
    for partition, offset in earliest.items():
        consumer.seek(partition, offset)


def _log_unreachable(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome is not None else None
    log.warning(
        "broker or MongoDB unreachable at start-up (attempt %d: %s: %s); retrying in %.1fs",
        state.attempt_number,
        type(exc).__name__,
        exc,
        state.upcoming_sleep,
    )


def _framework_logger() -> logging.Logger:
    logger = logging.getLogger("faststream.kafka.payments")
    if not any(isinstance(f, AssignmentSummary) for f in logger.filters):
        logger.addFilter(AssignmentSummary())
    return logger
