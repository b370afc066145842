"""Publishing outbound events through the FastStream Kafka broker.

All events of a batch are handed to the producer without waiting (it batches
them per partition), then awaited together: one wait per batch instead of one
broker round trip per message.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import orjson
from aiokafka.errors import (
    CorruptRecordException,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
)
from faststream.kafka import KafkaBroker

from schemas.envelope import CLOUDEVENTS_CONTENT_TYPE
from schemas.topics import topic_for
from service.adapters.driver_errors import describe
from service.domain.model import OutboxEvent
from service.observability.tracing import attached, context_for_cause
from service.ports.publisher import EventsRefused, PublisherUnavailable

REFUSALS: tuple[type[Exception], ...] = (
    MessageSizeTooLargeError,
    RecordTooLargeError,
    RecordListTooLargeError,
    CorruptRecordException,
)
"""What the producer or broker answers about an event itself, not about an outage."""


class KafkaEventPublisher:
    def __init__(self, broker: KafkaBroker, prefix: str, timeout_s: float = 30.0) -> None:
        self.broker = broker
        self.prefix = prefix
        self.timeout_s = timeout_s

    def topic(self, event_type: str) -> str:
        return topic_for(event_type, self.prefix)

    async def publish(self, events: Sequence[OutboxEvent]) -> None:
        """Send, then wait for every acknowledgement; only the port's errors leave here."""
        if not events:
            return
        try:
            await self._publish(events)
        except (EventsRefused, asyncio.CancelledError):
            raise
        except Exception as exc:  # aiokafka's and FastStream's errors, timeouts
            raise PublisherUnavailable(describe(exc)) from exc

    async def _publish(self, events: Sequence[OutboxEvent]) -> None:
        sends: list[tuple[OutboxEvent, Any]] = []
        refused: dict[str, Exception] = {}
        for event in events:
            # Tracing on: publish in the span of the inbound event that caused this
            # one, so the broker's telemetry middleware injects that trace's
            # `traceparent` header (see service.observability.tracing).
            with attached(context_for_cause(event.causation_id)):
                try:
                    future = await self.broker.publish(
                        orjson.dumps(event.payload),
                        self.topic(event.type),
                        key=event.key.encode(),
                        headers={"content-type": CLOUDEVENTS_CONTENT_TYPE},
                        no_confirm=True,
                    )
                except REFUSALS as exc:  # the producer checks the size before sending
                    refused[event.id] = exc
                    continue
            sends.append((event, future))
        results = await asyncio.wait_for(
            asyncio.gather(*(f for _, f in sends), return_exceptions=True), self.timeout_s
        )
        for (event, _), result in zip(sends, results, strict=True):
            if isinstance(result, REFUSALS):
                refused[event.id] = result
            elif isinstance(result, BaseException):
                raise result
        if refused:
            first = next(iter(refused.values()))
            raise EventsRefused(set(refused), describe(first))
