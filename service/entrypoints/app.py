"""The composition root: wires settings, MongoDB, Kafka, providers and HTTP.

`PaymentsApp` owns the lifecycle: `start()` connects and begins consuming;
`stop()` shuts down gracefully (stop fetching, let the batch in flight finish,
flush the outbox, commit, close), which is what SIGTERM triggers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from pymongo import AsyncMongoClient

from schemas.topics import ALL_TOPICS, INBOUND_TOPICS, topic_for
from service.adapters.kafka_publisher import KafkaEventPublisher
from service.adapters.mongo_store import MongoCollectionStore
from service.adapters.providers import ProviderRegistry
from service.admin_auth import AdminAuthenticator
from service.consumer import BatchProcessor, Record
from service.embedded import ensure_topics
from service.entrypoints.http import EmbeddedServer, build_http_app
from service.handlers import PaymentService
from service.metrics import Metrics
from service.provider_calls import ProviderCaller, RetryPolicy
from service.relay import OutboxRelay, Reconciler
from service.settings import Settings
from service.webhooks import WebhookIntake

log = logging.getLogger(__name__)


class PaymentsApp:
    def __init__(
        self,
        settings: Settings,
        *,
        after_store: Callable[[], Awaitable[None]] | None = None,
        serve_http: bool = True,
    ) -> None:
        if settings.kafka_bootstrap_servers is None or settings.mongodb_url is None:
            raise ValueError(
                "PAYMENTS_KAFKA_BOOTSTRAP_SERVERS and PAYMENTS_MONGODB_URL are required "
                "(or set neither and use `payments run`, which starts embedded ones)"
            )
        self.settings = settings
        self.serve_http = serve_http
        self.metrics = Metrics()
        self.mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            settings.mongodb_url.get_secret_value(), tz_aware=True, uuidRepresentation="standard"
        )
        self.database = self.mongo[settings.mongodb_database]
        self.store = MongoCollectionStore(self.database)
        self.providers = ProviderRegistry(settings, self.database)
        self.caller = ProviderCaller(
            RetryPolicy(
                timeout_s=settings.provider_timeout_s,
                max_attempts=settings.provider_max_attempts,
                base_delay_s=settings.retry_base_delay_s,
                max_delay_s=settings.retry_max_delay_s,
            ),
            observe=self.metrics.observe_provider_call,
            on_retry=self.metrics.observe_retry,
        )
        self.service = PaymentService(self.store, self.providers, self.caller)
        self.broker = KafkaBroker(
            settings.kafka_bootstrap_servers,
            client_id="payments-service",
            log_level=logging.DEBUG,  # no per-message INFO lines on the hot path
            linger_ms=5,
            enable_idempotence=False,
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
            retry_base_delay_s=settings.retry_base_delay_s,
            after_store=after_store,
        )
        self.relay = OutboxRelay(self.store, self.publisher, self.metrics)
        self.reconciler = Reconciler(self.service, self.relay, self.metrics)
        self.webhooks = WebhookIntake(self.providers, self.broker, settings.topic_prefix)
        self.subscriber = self.broker.subscriber(
            *(topic_for(t, settings.topic_prefix) for t in INBOUND_TOPICS),
            group_id=settings.consumer_group,
            batch=True,
            max_records=settings.batch_max_records,
            batch_timeout_ms=settings.batch_timeout_ms,
            ack_policy=AckPolicy.MANUAL,
            auto_offset_reset="earliest",
        )
        self.subscriber(self._on_batch)
        self._tasks: list[asyncio.Task[None]] = []
        self._http: EmbeddedServer | None = None
        self._nacks = 0
        self.started = False

    async def _on_batch(self, message: KafkaMessage) -> None:
        raw = message.raw_message
        records = [
            Record.from_consumer_record(r) for r in (raw if isinstance(raw, tuple) else (raw,))
        ]
        try:
            await self.processor.process(records)
        except asyncio.CancelledError:
            raise
        except Exception:
            # Dead letters could not be published (broker trouble): do not commit;
            # rewind and re-deliver after a pause. Handled events de-duplicate.
            self._nacks += 1
            log.warning("batch of %d failed; re-delivering", len(records), exc_info=True)
            await asyncio.sleep(min(5.0, 0.2 * 2 ** min(self._nacks, 5)))
            await message.nack()
            return
        self._nacks = 0
        await message.ack()

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        settings = self.settings
        await self.store.create_indexes()
        await self.providers.record_installed()
        if settings.create_topics:
            assert settings.kafka_bootstrap_servers is not None
            await ensure_topics(
                settings.kafka_bootstrap_servers,
                [topic_for(t, settings.topic_prefix) for t in ALL_TOPICS],
                settings.topic_partitions,
            )
        await self.broker.start()
        # Crash recovery first: whatever a previous run stored but did not send.
        await self.relay.run_once()
        self._tasks.append(
            asyncio.create_task(
                self.relay.run_forever(
                    settings.relay_interval_s, timedelta(seconds=settings.relay_interval_s)
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
        if self.serve_http:
            await self._start_http()
        self.started = True
        log.info("payments service started (group %s)", settings.consumer_group)

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
        consumer = getattr(self.subscriber, "consumer", None)
        checks["consumers"] = bool(self.started and consumer is not None)
        checks["relay"] = any(t.get_name() == "outbox-relay" and not t.done() for t in self._tasks)
        return checks

    async def stop(self) -> None:
        """Graceful shutdown: stop fetching, finish the batch in flight, flush, close."""
        if self._http is not None:
            self._http.should_exit = True
        # Stopping the subscriber waits for the handler in flight, which commits.
        with contextlib.suppress(Exception):
            await self.subscriber.stop()
        for task in self._tasks:
            if task.get_name() != "http":
                task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.relay.run_once(), 10)
        with contextlib.suppress(Exception):
            await self.broker.stop()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)
        await self.providers.close()
        await self.mongo.close()
        self.started = False
        log.info("payments service stopped")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
