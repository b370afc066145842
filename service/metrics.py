"""Prometheus metrics of one service instance (served on `GET /metrics`).

Each instance owns its registry, so several services in one test process do not
share counters.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Iterable, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from schemas.topics import PAYMENT_AUTHORIZED, PAYMENT_CAPTURED, PAYMENT_DISPUTED, PAYMENT_REFUNDED
from service.domain.calls import ProviderCall
from service.domain.model import OutboxEvent
from service.domain.outcomes import ProviderOutcome

AMOUNT_EVENT_TYPES = frozenset({PAYMENT_AUTHORIZED, PAYMENT_CAPTURED, PAYMENT_REFUNDED})
"""Events whose `amount` is money moved (a failed or pending one moved nothing)."""

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.events_consumed = Counter(
            "payments_events_consumed", "Inbound messages consumed", ["topic"], registry=r
        )
        self.events_outcome = Counter(
            "payments_events_handled",
            "Inbound messages by outcome (applied, duplicate, ignored, rejected, dead_lettered)",
            ["topic", "outcome"],
            registry=r,
        )
        self.dead_letters = Counter(
            "payments_dead_letters",
            "Messages dead-lettered, by kind",
            ["topic", "kind"],
            registry=r,
        )
        self.handler_latency = Histogram(
            "payments_handler_seconds",
            "Time to handle one inbound message",
            ["topic"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.record_wait = Histogram(
            "payments_record_wait_seconds",
            "Time from a record's produce (its CreateTime) to the start of its batch's handling",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_stage = Histogram(
            "payments_batch_stage_seconds",
            "Wall time of each stage of a consumer batch (prefetch, handle, publish, "
            "mark_sent, commit)",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.provider_latency = Histogram(
            "payments_provider_call_seconds",
            "Provider call latency",
            ["provider", "operation", "outcome"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.provider_retries = Counter(
            "payments_provider_retries",
            "Provider calls retried",
            ["provider", "operation"],
            registry=r,
        )
        self.processing_retries = Counter(
            "payments_processing_retries",
            "Handler attempts retried after an error",
            ["topic"],
            registry=r,
        )
        self.outbox_published = Counter(
            "payments_outbox_published",
            "Outbound events published",
            ["type", "path"],
            registry=r,
        )
        self.outbox_backlog = Gauge(
            "payments_outbox_backlog", "Collections with stored but unsent events", registry=r
        )
        self.relay_lag = Gauge(
            "payments_relay_lag_seconds",
            "Age of the oldest unsent event the relay found",
            registry=r,
        )
        self.reconciler_runs = Counter("payments_reconciler_runs", "Reconciler passes", registry=r)
        self.reconciled = Counter(
            "payments_reconciled_sessions", "Collections settled by the reconciler", registry=r
        )
        self.payments = Counter(
            "payments_payment_events",
            "Payment outcomes published",
            ["type", "reason"],
            registry=r,
        )
        self.batch_failures = Counter(
            "payments_consumer_batch_failures",
            "Inbound batches that failed and were fetched again (broker or MongoDB down)",
            registry=r,
        )
        self.stalled_batches = Counter(
            "payments_consumer_stalled_batches",
            "Inbound batches that failed more than the stall threshold in a row",
            ["topic", "partition"],
            registry=r,
        )
        self.consumer_stalled = Gauge(
            "payments_consumer_stalled",
            "1 while the batch in hand has failed more than the stall threshold in a row",
            registry=r,
        )
        self.contained_errors = Counter(
            "payments_contained_errors",
            "Unexpected errors confined to one record (dead-lettered processing_failed)",
            ["topic", "step"],
            registry=r,
        )
        self.disputes = Counter(
            "payments_disputes",
            "payment.disputed events published: disputes opened and decided",
            ["status", "reason"],
            registry=r,
        )
        self.consumer_lag = Gauge(
            "payments_consumer_lag",
            "Records behind the end of each inbound partition, after this instance's last batch",
            ["topic", "partition"],
            registry=r,
        )
        self.reconcile_backlog = Gauge(
            "payments_reconcile_backlog",
            "Collections due for reconciliation at the reconciler's last pass",
            registry=r,
        )
        self.needs_attention = Gauge(
            "payments_needs_attention",
            "Operations whose outcome cannot be known without a person (promise 9), last counted",
            registry=r,
        )
        self.needs_attention_raised = Counter(
            "payments_needs_attention_raised",
            "Operations that entered needs_attention",
            ["provider", "operation"],
            registry=r,
        )
        self.provider_audit_runs = Counter(
            "payments_provider_audit_runs", "Passes of the provider audit sweep", registry=r
        )
        self.provider_audit_corrections = Counter(
            "payments_provider_audit_corrections",
            "Differences between the books and the provider's objects the audit applied as facts",
            ["provider", "kind"],
            registry=r,
        )
        self.payment_amounts = Counter(
            "payments_payment_amount_minor_units",
            "Amounts moved, in minor units",
            ["type", "currency"],
            registry=r,
        )

        for metric in vars(self).values():
            if getattr(metric, "_labelnames", ()):
                _cache_children(metric)

    def batch_clock(self) -> StageClock:
        """Times the stages of one consumer batch into `payments_batch_stage_seconds`."""
        return StageClock(self.batch_stage)

    def observe_record_waits(self, created_ms: Iterable[int | None]) -> None:
        """How long each record of a batch waited, from its producer to its handling:
        in the broker, in the fetch, and behind the batch before it. A clock behind
        the producer's counts as no wait; a negative time (Kafka's -1: none) is none."""
        now_ms = time.time() * 1000
        for created in created_ms:
            if created is not None and created >= 0:
                self.record_wait.observe(max(0.0, now_ms - created) / 1000)

    def observe_provider_call(
        self, call: ProviderCall, outcome: ProviderOutcome, seconds: float, method: str = ""
    ) -> None:
        """`operation` is the provider method called: a status query asked on behalf
        of an authorization is `get_status`, not a second `authorize`."""
        self.provider_latency.labels(
            call.provider_id, method or call.operation, outcome.kind.value
        ).observe(seconds)

    def observe_retry(self, call: ProviderCall, outcome: ProviderOutcome) -> None:
        self.provider_retries.labels(call.provider_id, call.operation).inc()

    def observe_published(self, events: Sequence[OutboxEvent], path: str) -> None:
        """Count outbound events once the broker acknowledged them.

        Every path that publishes (the consumer directly, the relay, the
        reconciler) calls this, so payment outcomes and amounts are counted
        whichever path sent them. Dead letters are counted in `dead_letters`.
        """
        for event in events:
            self.outbox_published.labels(event.type, path).inc()
            if not event.type.startswith("payment."):
                continue
            data = event.payload.get("data")
            data = data if isinstance(data, dict) else {}
            reason = str(data.get("reason") or "")
            self.payments.labels(event.type, reason).inc()
            if reason == "needs_attention":
                self.needs_attention_raised.labels(
                    str(data.get("provider_id") or ""), str(data.get("operation") or "")
                ).inc()
            if event.type == PAYMENT_DISPUTED:
                self.disputes.labels(
                    str(data.get("status") or ""), str(data.get("reason") or "")
                ).inc()
            amount = data.get("amount")
            if isinstance(amount, int) and event.type in AMOUNT_EVENT_TYPES:
                self.payment_amounts.labels(event.type, str(data.get("currency_code") or "")).inc(
                    amount
                )

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _cache_children(metric: Any) -> None:
    """Answer `metric.labels(...)` from a dict after the first time: prometheus_client
    checks and converts the label values on every call, on the hot path of each record
    and provider call (the children themselves it keeps already)."""
    children: dict[tuple[Any, ...], Any] = {}
    original = metric.labels

    def labels(*values: Any) -> Any:
        child = children.get(values)
        if child is None:
            child = children[values] = original(*values)
        return child

    metric.labels = labels


class StageClock:
    """Wall time between laps, each observed under the lap's stage name."""

    __slots__ = ("_histogram", "_last")

    def __init__(self, histogram: Histogram) -> None:
        self._histogram = histogram
        self._last = time.perf_counter()

    async def timed(self, stage: str, step: Awaitable[None]) -> None:
        """Await `step`, observing its own wall time (steps awaited together overlap)."""
        start = time.perf_counter()
        try:
            await step
        finally:
            self._histogram.labels(stage).observe(time.perf_counter() - start)

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self._histogram.labels(stage).observe(now - self._last)
        self._last = now
