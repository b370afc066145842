"""Processing a batch of inbound Kafka records, the whole at-least-once cycle.

parse → authenticate (admin) → handle per cart, carts concurrently, one cart's
events in partition order → publish stored events and dead letters, then one
wait → mark the outbox sent → the caller commits the offsets.

The containment rule (contract promise 5: bad input never stops a consumer).
Every step that touches one record — reading its headers, checking its
signature, extracting its trace context, binding its log context, parsing,
handling, building and publishing its dead letter — runs inside that record's
boundary (`_admit`, `_contain`, `_publish_dead_letters`), and a record leaves
its boundary in one of three ways only:

- applied (or recognized as a duplicate, or ignored by the rules);
- dead-lettered with a kind: bad input at once, an unexpected exception after a
  bounded number of attempts (`processing_failed`); a letter always fits the
  broker's message limit (`schemas.dead_letter`), and one the broker still refuses
  is sent again without the original;
- retried in place because shared infrastructure (MongoDB, the broker) is down:
  never dead-lettered, since the outage is not the message's fault.

So an exception from one record's step can never fail the batch. The batch fails
only when the broker or MongoDB is unreachable; it is then fetched again, and a
batch that keeps failing is reported as a stall (`StallMonitor`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from structlog.contextvars import bound_contextvars

from schemas.dead_letter import DeadLetterKind, build_dead_letter_data
from schemas.inbound import ProviderWebhook
from schemas.outbound_event import SERVICE_SOURCE, event_payload
from schemas.parse import Rejection, parse_event
from schemas.topics import PAYMENTS_DEAD_LETTER, event_type_for_topic
from service.admin_auth import AdminAuthenticator
from service.bus import Guard, Inbound, Route, dispatch, route_for
from service.domain import derived_ids as ids
from service.domain.backoff import Backoff
from service.domain.events import outbox_entry
from service.domain.model import OutboxEvent, PaymentCollection
from service.handlers import HandleResult, PaymentService, utcnow
from service.metrics import Metrics, StageClock
from service.observability.tracing import MessageTracer, inbound_context, publishing_causes
from service.outbox import EventsNotPublished, Outbox, Progress
from service.ports.publisher import EventPublisher, EventsRefused
from service.ports.store import CollectionStore, OrphanOutcome, StoreBatch, StoreUnavailable
from service.retry import retry_on_types, retrying

log = logging.getLogger(__name__)

#: aiokafka's `timestamp_type` of a record stamped by its producer (1 is the broker's
#: LogAppendTime, which says nothing about how long the record waited).
CREATE_TIME = 0

INFRASTRUCTURE_ERRORS: tuple[type[BaseException], ...] = (StoreUnavailable,)
"""Errors that are the infrastructure's, not the message's: waited out, never
dead-lettered (the ports' own errors: no driver type reaches this layer)."""


@dataclass(frozen=True, slots=True)
class Record:
    """One raw Kafka record, independent of the client library."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes | None]]
    #: When the producer created it (Kafka CreateTime, ms since the epoch); None when
    #: the broker stamped it (LogAppendTime) or it is unknown.
    created_ms: int | None = None

    @classmethod
    def from_consumer_record(cls, record: Any) -> Record:
        return cls(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            value=record.value,
            headers=tuple(record.headers or ()),
            created_ms=record.timestamp if record.timestamp_type == CREATE_TIME else None,
        )


@dataclass(slots=True)
class Job:
    """One admitted record: its registry entry and its validated event."""

    record: Record
    route: Route[Any, Any]
    event: Any
    """The parsed CloudEvent (`schemas.inbound`), whose `data` is of `route.data`."""
    key_id: str | None
    trace_context: Any = None
    """The OpenTelemetry context of the record's span (tracing on): its outbound
    events are published in it, so they continue the inbound trace."""

    @property
    def event_type(self) -> str:
        return self.route.event_type

    @property
    def inbound(self) -> Inbound[Any]:
        return Inbound(self.event.id, self.event.data, self.key_id)

    @property
    def ordering_key(self) -> str:
        return self.route.order(self.event.data)

    @property
    def claim(self) -> tuple[str, str] | None:
        """The idempotency claim taken up front for the batch (admin commands)."""
        return None if self.route.claim is None else self.route.claim(self.inbound)


def _log_context(job: Job) -> dict[str, Any]:
    """What every log line about this message carries (structlog contextvars)."""
    record = job.record
    context: dict[str, Any] = {
        "event_id": job.event.id,
        "event_type": job.event_type,
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
    }
    if getattr(job.event, "causationid", None):
        context["causationid"] = job.event.causationid
    data = job.event.data
    for attribute, name in (
        ("cart_id", "cart_id"),
        ("payment_id", "payment_id"),
        ("provider_id", "provider"),
    ):
        value = getattr(data, attribute, None)
        if value:
            context[name] = value
    return context


def _result_context(result: HandleResult, seconds: float) -> dict[str, Any]:
    context: dict[str, Any] = {"outcome": result.status, "seconds": round(seconds, 6)}
    if result.note:
        context["note"] = result.note
    if result.cart_id:
        context["cart_id"] = result.cart_id
    if result.saved:
        collection = result.saved[-1][0]
        if collection.payment is not None:
            context["payment_id"] = collection.payment.id
            context["provider"] = collection.payment.provider_id
        elif collection.selected_provider_id:
            context["provider"] = collection.selected_provider_id
    return context


#: A `too_large` value is kept only up to this many bytes: the whole of it would
#: not fit in a dead letter under the broker's message size limit either.
TOO_LARGE_KEPT_BYTES = 64 * 1024
#: Room left below the producer's `max_request_size` for the Kafka record around
#: the letter's JSON (record and batch framing, the key, the content-type header).
LETTER_MARGIN_BYTES = 64 * 1024
#: Room for the envelope around the letter's `data` (id, type, time, subject).
ENVELOPE_BYTES = 8 * 1024
#: A letter's subject and Kafka key keep at most this many characters of the key.
LETTER_KEY_CHARS = 256


def letter_budget(max_request_size: int) -> int:
    """The largest encoded letter (its JSON value) for a producer's request size."""
    return max_request_size - LETTER_MARGIN_BYTES


def _letter_key(record: Record, cause: str) -> str:
    if not record.key:
        return cause
    return record.key[: LETTER_KEY_CHARS * 4].decode("utf-8", "replace")[:LETTER_KEY_CHARS]


def dead_letter_event(
    record: Record,
    kind: str,
    detail: str,
    now: datetime,
    *,
    max_bytes: int,
) -> OutboxEvent:
    """The `payments.dead_letter` event for a record; its id is stable per record.

    Its JSON value is at most `max_bytes`, whatever the record holds: the original
    key, headers and value are cut to fit, and the letter says so.
    """
    data = build_dead_letter_data(
        record.topic,
        record.partition,
        record.offset,
        record.key,
        record.value,
        record.headers,
        DeadLetterKind(kind),
        detail,
        now,
        max_encoded_bytes=max_bytes - ENVELOPE_BYTES,
        keep_value_bytes=TOO_LARGE_KEPT_BYTES if kind == DeadLetterKind.TOO_LARGE else None,
    )
    cause = f"{record.topic}:{record.partition}:{record.offset}"
    event_id = ids.event_id(cause, PAYMENTS_DEAD_LETTER, "dlq")
    key = _letter_key(record, cause)
    payload = event_payload(data, event_id=event_id, source=SERVICE_SOURCE, time=now, subject=key)
    return outbox_entry(payload, key=key, causation_id=cause, now=now)


def bare_record(record: Record) -> Record:
    """The record without what a producer chose (key, value, headers): a letter of
    it can always be built and sent."""
    return Record(record.topic, record.partition, record.offset, None, None, ())


class BatchProcessor:
    def __init__(
        self,
        service: PaymentService,
        store: CollectionStore,
        publisher: EventPublisher,
        authenticator: AdminAuthenticator,
        metrics: Metrics,
        *,
        # Limits come from `Settings` (the app passes them), never from defaults here.
        topic_prefix: str,
        max_concurrency: int,
        max_attempts: int,
        max_letter_bytes: int,
        retry_backoff: Backoff,
        clock: Callable[[], datetime] = utcnow,
        tracer: MessageTracer | None = None,
        webhook_verifier: Callable[[ProviderWebhook], str | None] | None = None,
    ) -> None:
        self.service = service
        self.tracer = tracer
        self.store = store
        self.publisher = publisher
        self.outbox = Outbox(store, publisher, metrics)
        self.authenticator = authenticator
        self.metrics = metrics
        self.prefix = topic_prefix
        self.semaphore = asyncio.Semaphore(max_concurrency)
        self.max_attempts = max_attempts
        self.retry_backoff = retry_backoff
        self.clock = clock
        self.max_letter_bytes = max_letter_bytes
        self.webhook_verifier = webhook_verifier
        """Checks a provider webhook's signature again where it is applied: None when
        it verifies, else why it is refused (dead-lettered `unauthorized`)."""
        self.stopping = False

    # -- parse ---------------------------------------------------------------------

    def _admit(self, record: Record) -> Job | OutboxEvent:
        """A record's first boundary: a job to handle, or its dead letter. Never raises."""
        try:
            return self._classify(record)
        except Exception as exc:
            # A bug on some input (no input is bad enough to excuse an exception):
            # the record is dead-lettered, the batch goes on.
            return self._contained(record, "admit", exc)

    def _classify(self, record: Record) -> Job | OutboxEvent:
        self.metrics.events_consumed.labels(record.topic).inc()
        event_type = event_type_for_topic(record.topic, self.prefix) or record.topic
        parsed = parse_event(record.value, event_type)
        if isinstance(parsed, Rejection):
            return self._dead_letter(record, parsed.kind, parsed.detail)
        route = route_for(event_type)
        key_id: str | None = None
        if route.guard is Guard.ADMIN_SIGNATURE:
            verdict = self.authenticator.verify(record.value, record.headers)
            if not verdict.ok:
                return self._dead_letter(record, "unauthorized", verdict.detail)
            key_id = verdict.key_id
        elif route.guard is Guard.PROVIDER_SIGNATURE and self.webhook_verifier is not None:
            refused = self.webhook_verifier(cast(ProviderWebhook, parsed.data))
            if refused is not None:
                return self._dead_letter(record, "unauthorized", refused)
        return Job(record, route, parsed, key_id)

    def _contained(self, record: Record, step: str, exc: BaseException) -> OutboxEvent:
        self.metrics.contained_errors.labels(record.topic, step).inc()
        log.error(
            "unexpected error at step %s for %s[%d]@%d; dead-lettering it",
            step,
            record.topic,
            record.partition,
            record.offset,
            exc_info=exc,
        )
        return self._dead_letter(
            record, "processing_failed", f"{step}: {type(exc).__name__}: {exc}"
        )

    def _dead_letter(self, record: Record, kind: str, detail: str) -> OutboxEvent:
        """The record's dead letter; never raises (a letter that cannot be built with
        the original is built without it)."""
        self.metrics.dead_letters.labels(record.topic, kind).inc()
        self.metrics.events_outcome.labels(record.topic, "dead_lettered").inc()
        with bound_contextvars(
            topic=record.topic, partition=record.partition, offset=record.offset
        ):
            log.warning(
                "dead-lettering %s[%d]@%d: %s: %s",
                record.topic,
                record.partition,
                record.offset,
                kind,
                detail[:300],
            )
        now = self.clock()
        try:
            return dead_letter_event(record, kind, detail, now, max_bytes=self.max_letter_bytes)
        except Exception as exc:
            log.error("building the dead letter failed; sending it without the original: %r", exc)
            detail = f"{detail} (original dropped: {type(exc).__name__})"
            return dead_letter_event(
                bare_record(record), kind, detail, now, max_bytes=self.max_letter_bytes
            )

    # -- handle --------------------------------------------------------------------

    async def _contain(self, job: Job, service: PaymentService) -> HandleResult | OutboxEvent:
        """A job's boundary: its outcome, or its dead letter. Raises only CancelledError
        (an outage is retried inside, in `_handle_job`)."""
        try:
            return await self._handle(job, service)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return self._contained(job.record, "handle", exc)

    async def _handle(self, job: Job, service: PaymentService) -> HandleResult | OutboxEvent:
        """Handle one message with its log context bound (and in its span, tracing on)."""
        with bound_contextvars(**_log_context(job)):
            if self.tracer is None:
                return await self._handle_job(job, service)
            record = job.record
            with self.tracer.process(
                record.topic,
                record.headers,
                {
                    "messaging.destination.name": record.topic,
                    "messaging.kafka.destination.partition": record.partition,
                    "messaging.kafka.message.offset": record.offset,
                    "messaging.message.id": job.event.id,
                    "cloudevents.event_type": job.event_type,
                },
            ) as context:
                job.trace_context = context
                return await self._handle_job(job, service)

    async def _handle_job(self, job: Job, service: PaymentService) -> HandleResult | OutboxEvent:
        topic = job.record.topic
        failures = 0
        # Every exception raised out of an attempt is tried again (a cancellation
        # never is); the attempt itself decides when the message has had enough.
        async for attempt in retrying(self.retry_backoff, retry_on_types(Exception), attempts=None):
            with attempt:
                started = time.perf_counter()
                try:
                    result = await dispatch(service, job.event_type, job.inbound)
                except INFRASTRUCTURE_ERRORS as exc:
                    # Not the message's fault: wait for the store to come back, however
                    # long; it does not use up the message's attempts.
                    self.metrics.processing_retries.labels(topic).inc()
                    log.warning("store unavailable handling %s: %s; retrying", topic, exc)
                    raise
                except Exception as exc:
                    failures += 1
                    if failures >= self.max_attempts:
                        log.exception("handling %s failed %d times", topic, failures)
                        return self._dead_letter(
                            job.record, "processing_failed", f"{type(exc).__name__}: {exc}"
                        )
                    self.metrics.processing_retries.labels(topic).inc()
                    log.warning("handling %s failed (attempt %d): %r", topic, failures, exc)
                    raise
                elapsed = time.perf_counter() - started
                self.metrics.handler_latency.labels(topic).observe(elapsed)
                self.metrics.events_outcome.labels(topic, result.status).inc()
                if log.isEnabledFor(logging.DEBUG):  # per-message lines only at DEBUG
                    log.debug(
                        "handled %s: %s",
                        job.event_type,
                        result.status,
                        extra=_result_context(result, elapsed),
                    )
                return result
        raise AssertionError("unreachable: the retry loop has no limit")

    async def _handle_in_order(
        self, jobs: list[Job], service: PaymentService
    ) -> list[HandleResult | OutboxEvent]:
        async with self.semaphore:
            return [await self._contain(job, service) for job in jobs]

    @staticmethod
    async def _prefetch(batch: StoreBatch, groups: dict[str, list[Job]]) -> None:
        """A few queries for the whole batch instead of a few per event.

        The collections of every cart (cart events) and of every payment (admin
        commands) in one query each; the admin commands' idempotency claims in one
        insert (plus one read of the fingerprints of those claimed before) and
        their orphan answers in one read. Each handler still loads and claims
        through the batch's store, which answers from these instead of a round trip
        per event.
        """
        jobs = [job for group in groups.values() for job in group]
        cart_ids = [
            job.route.prefetch_cart(job.event.data) for job in jobs if job.route.prefetch_cart
        ]
        payment_ids = [
            job.route.prefetch_payment(job.event.data) for job in jobs if job.route.prefetch_payment
        ]
        # In record order (per partition): the first claim of a command id wins,
        # as it would handled one by one.
        in_order = sorted(
            jobs, key=lambda job: (job.record.topic, job.record.partition, job.record.offset)
        )
        claims = [claim for job in in_order if (claim := job.claim) is not None]

        async def prefetch(what: str, count: int, query: Awaitable[None]) -> None:
            try:
                await query
            except Exception as exc:
                # Only an optimization: the handlers load, claim (and retry) one by one.
                log.warning("prefetching %d %s failed: %s", count, what, exc)

        queries = []
        if cart_ids:
            queries.append(prefetch("carts", len(cart_ids), batch.prefetch_by_cart(cart_ids)))
        if payment_ids:
            queries.append(
                prefetch("payments", len(payment_ids), batch.prefetch_by_payment(payment_ids))
            )
        if claims:
            queries.append(prefetch("commands", len(claims), batch.prefetch_commands(claims)))
        if queries:
            await asyncio.gather(*queries)

    async def _publish_dead_letters(
        self, letters: list[OutboxEvent], batch: Sequence[Record]
    ) -> None:
        """Publish the batch's letters. A letter the broker refuses as such (too large
        for a broker configured below our producer, say) is sent again without the
        original; any other failure is an outage and fails the batch."""
        if not letters:
            return
        records = {_cause(r): r for r in batch}
        try:
            await self.publisher.publish(letters)
        except EventsRefused as refused:
            log.error("the broker refused %d dead letters: %s", len(refused.event_ids), refused)
            again = []
            for letter in letters:
                record = records.get(letter.causation_id)
                if letter.id in refused.event_ids and record is not None:
                    letter = dead_letter_event(
                        bare_record(record),
                        str(letter.payload["data"]["error"]["kind"]),
                        f"{letter.payload['data']['error']['detail']} "
                        f"(original dropped: the broker refused the letter: {refused})",
                        self.clock(),
                        max_bytes=self.max_letter_bytes,
                    )
                again.append(letter)
            await self.publisher.publish(again)

    # -- the batch -----------------------------------------------------------------

    async def process(
        self, records: Sequence[Record], commit: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        """Handle a batch, then deliver it: returns once every outcome is stored and
        published, and `commit` (the consumer's offset commit, if given) has returned.
        See :meth:`handle` and :meth:`deliver`."""
        await self.deliver(await self.handle(records), commit)

    async def handle(self, records: Sequence[Record]) -> HandledBatch:
        """Admit, prefetch and handle a batch: when this returns, every outcome is
        stored (with its events, in the outbox) and only the delivery is left.

        Raises only when MongoDB or the broker is down for good (a record's own
        trouble is contained): the caller must then fetch the batch again.
        """
        clock = self.metrics.batch_clock()
        self.metrics.observe_record_waits(r.created_ms for r in records)
        groups, dead_letters = self._admit_all(records)
        batch = self.store.batch()  # the batch's handlers share one view of the store
        await self._prefetch(batch, groups)
        clock.lap("prefetch")
        service = self.service.using(batch)
        results = await asyncio.gather(
            *(self._handle_in_order(g, service) for g in groups.values())
        )
        clock.lap("handle")
        saved, orphans = _stored(results, dead_letters)
        return HandledBatch(
            records, dead_letters, saved, orphans, self._trace_contexts(records, groups), clock
        )

    async def deliver(
        self,
        handled: HandledBatch,
        commit: Callable[[], Awaitable[None]] | None = None,
        *,
        progress: Progress | None = None,
    ) -> None:
        """Publish a handled batch's dead letters and events, mark them sent, commit.

        Raises when dead letters could not be published, or when marking the
        published events sent or the commit failed: the caller must then not
        commit, and re-deliver the batch (handled events de-duplicate). Events that
        could not be published are stored, so not lost: the relay publishes them
        with their ids, and the batch is committed. `progress` tells a batch pipelined
        behind this one when it may read the store, and whether this one failed.
        """
        clock = handled.clock
        progress = progress or Progress()
        try:
            with publishing_causes(handled.trace_contexts):
                await self._publish_dead_letters(handled.dead_letters, handled.records)
                try:
                    await self.outbox.deliver(
                        handled.saved,
                        handled.orphans,
                        path="direct",
                        alongside=commit,
                        clock=clock,
                        progress=progress,
                    )
                except EventsNotPublished:
                    log.warning(
                        "publishing the batch's events failed; left to the relay", exc_info=True
                    )
                    progress.done()  # nothing to mark: the relay publishes them
                    if commit is not None:
                        await clock.timed("commit", commit())
        except BaseException as exc:
            progress.done(exc)
            raise

    def _admit_all(
        self, records: Sequence[Record]
    ) -> tuple[dict[str, list[Job]], list[OutboxEvent]]:
        """The batch's jobs by ordering key, in record order, and its dead letters."""
        groups: dict[str, list[Job]] = defaultdict(list)
        dead_letters: list[OutboxEvent] = []
        for record in records:
            item = self._admit(record)
            if isinstance(item, OutboxEvent):
                dead_letters.append(item)
            else:
                groups[item.ordering_key].append(item)
        return groups, dead_letters

    def _trace_contexts(
        self, records: Sequence[Record], groups: dict[str, list[Job]]
    ) -> dict[str, Any]:
        """The inbound trace each outbound event continues (tracing on), by its cause."""
        if self.tracer is None:
            return {}
        contexts = {_cause(r): inbound_context(r.headers) for r in records}
        for jobs in groups.values():
            for job in jobs:
                if job.trace_context is not None:
                    contexts[job.event.id] = job.trace_context
                    contexts[_cause(job.record)] = job.trace_context
        return contexts


@dataclass(slots=True)
class HandledBatch:
    """A batch whose outcomes are stored: what is left is to deliver them."""

    records: Sequence[Record]
    dead_letters: list[OutboxEvent]
    saved: list[tuple[PaymentCollection, int]]
    orphans: list[OrphanOutcome]
    trace_contexts: dict[str, Any]
    clock: StageClock


def _cause(record: Record) -> str:
    """A record's place, the cause its dead letter names."""
    return f"{record.topic}:{record.partition}:{record.offset}"


def _stored(
    results: list[list[HandleResult | OutboxEvent]], dead_letters: list[OutboxEvent]
) -> tuple[list[tuple[PaymentCollection, int]], list[OrphanOutcome]]:
    """The latest stored version of each collection the batch wrote, and its orphan
    answers; dead letters of the handling are added to `dead_letters`."""
    saved: dict[str, tuple[PaymentCollection, int]] = {}
    orphans: list[OrphanOutcome] = []
    for group in results:
        for result in group:
            if isinstance(result, OutboxEvent):
                dead_letters.append(result)
                continue
            for collection, version in result.saved:
                previous = saved.get(collection.id)
                if previous is None or previous[1] <= version:
                    saved[collection.id] = (collection, version)
            orphans.extend(result.orphans)
    return list(saved.values()), orphans


class StallMonitor:
    """Makes a consumer that cannot move on visible instead of silent.

    A batch fails only when the broker or MongoDB is unreachable (a record's own
    trouble is contained); it is then fetched again. When the same batch (the same
    first offset of each partition) has failed `threshold` times in a row, an error
    names its topics, partitions and offsets, `payments_consumer_stalled_batches`
    counts it, the gauge `payments_consumer_stalled` is 1 and `/readyz` answers 503
    with `progressing: false`, until a batch succeeds.
    """

    def __init__(self, threshold: int, metrics: Metrics) -> None:
        self.threshold = threshold
        self.metrics = metrics
        self._batch: frozenset[tuple[str, int, int]] = frozenset()
        self._failures = 0
        self.stalled = False

    @staticmethod
    def _positions(records: Sequence[Record]) -> frozenset[tuple[str, int, int]]:
        first: dict[tuple[str, int], int] = {}
        for record in records:
            key = (record.topic, record.partition)
            first[key] = min(first.get(key, record.offset), record.offset)
        return frozenset((topic, partition, offset) for (topic, partition), offset in first.items())

    def failed(self, records: Sequence[Record]) -> int:
        """Count a failure of this batch; return how many times in a row it failed."""
        self.metrics.batch_failures.inc()
        positions = self._positions(records)
        if positions and positions == self._batch:
            self._failures += 1
        else:
            self._batch, self._failures = positions, 1
        if self._failures >= self.threshold:
            where = ", ".join(f"{t}[{p}]@{o}" for t, p, o in sorted(self._batch))
            log.error(
                "consumer stalled: the batch at %s failed %d times in a row", where, self._failures
            )
            if self._failures == self.threshold:
                for topic, partition, _ in self._batch:
                    self.metrics.stalled_batches.labels(topic, str(partition)).inc()
            self.stalled = True
            self.metrics.consumer_stalled.set(1)
        return self._failures

    def succeeded(self) -> None:
        if self.stalled:
            log.warning("consumer moving again after a stall")
        self._batch, self._failures, self.stalled = frozenset(), 0, False
        self.metrics.consumer_stalled.set(0)
