"""OpenTelemetry tracing: off unless `PAYMENTS_OTLP_ENDPOINT` is set.

Why per-record spans on top of FastStream's middleware: the service consumes in
batches, and FastStream's `KafkaTelemetryMiddleware` gives a batch one new root
span (it cannot continue several producers' traces at once). The trace that
matters to a reader is the business one: storefront → `checkout.completed` →
`payment.authorized`. So :class:`MessageTracer` opens one span per record,
child of the `traceparent` the record arrived with and linked to the batch span,
and the outbound events that record caused are published inside that span's
context: the middleware's publish span, and the `traceparent` header it
injects, then belong to the inbound trace.

The link between "event handled" and "event published" is the outbound event's
`causation_id` (the inbound event's id): the consumer hands the publisher a
cause → context map through :func:`publishing_causes`, and the publisher looks
each event's context up with :func:`context_for_cause`. Events the relay sends
later (after a crash) carry no inbound context; they get a fresh trace.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

    from service.settings import Settings

TRACEPARENT = "traceparent"

_PROPAGATOR = TraceContextTextMapPropagator()


def build_tracer_provider(
    settings: Settings, *, exporter: SpanExporter | None = None
) -> TracerProvider | None:
    """The SDK tracer provider for this instance, or None when tracing is off.

    `exporter` is the test hook: spans go to it synchronously (e.g. an
    `InMemorySpanExporter`), whatever the settings say. Otherwise spans are
    batched to the OTLP/HTTP endpoint of `PAYMENTS_OTLP_ENDPOINT`.
    """
    if exporter is None and not settings.otlp_endpoint:
        return None
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBasedTraceIdRatio

    provider = TracerProvider(
        resource=Resource.create(
            {"service.name": settings.otel_service_name, "service.namespace": "payments"}
        ),
        sampler=ParentBasedTraceIdRatio(settings.otel_sample_ratio),
    )
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        return provider
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    assert settings.otlp_endpoint is not None
    headers = (
        _parse_headers(settings.otlp_headers.get_secret_value())
        if settings.otlp_headers is not None
        else None
    )
    provider.add_span_processor(
        BatchSpanProcessor(
            OTLPSpanExporter(endpoint=traces_endpoint(settings.otlp_endpoint), headers=headers)
        )
    )
    return provider


def traces_endpoint(endpoint: str) -> str:
    """`http://collector:4318` → `http://collector:4318/v1/traces`; full URLs kept."""
    stripped = endpoint.rstrip("/")
    scheme_and_host = stripped.split("://", 1)[-1]
    return stripped if "/" in scheme_and_host else f"{stripped}/v1/traces"


def _parse_headers(raw: str) -> dict[str, str]:
    pairs = (item.split("=", 1) for item in raw.split(",") if "=" in item)
    return {k.strip(): v.strip() for k, v in pairs}


def header_carrier(headers: Sequence[tuple[str, bytes | None]]) -> dict[str, str]:
    return {k.lower(): (v or b"").decode("latin-1") for k, v in headers}


class MessageTracer:
    """One CONSUMER span per inbound record, continuing the record's trace."""

    def __init__(self, provider: trace.TracerProvider) -> None:
        self.tracer = provider.get_tracer("service.consumer")

    @contextlib.contextmanager
    def process(
        self,
        topic: str,
        headers: Sequence[tuple[str, bytes | None]],
        attributes: Mapping[str, Any],
    ) -> Iterator[Context]:
        """Run the block in a span for one record; yields the span's context."""
        inbound = _PROPAGATOR.extract(header_carrier(headers))
        batch_span = trace.get_current_span()
        links = (
            [Link(batch_span.get_span_context())]
            if batch_span.get_span_context().is_valid
            else None
        )
        parent = inbound if len(inbound) else None  # no traceparent: child of the batch
        with self.tracer.start_as_current_span(
            f"{topic} process",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes={"messaging.system": "kafka", **attributes},
            links=links,
        ):
            yield otel_context.get_current()


def inbound_context(headers: Sequence[tuple[str, bytes | None]]) -> Context | None:
    """The trace context a record arrived with (for its dead letter), if any."""
    extracted = _PROPAGATOR.extract(header_carrier(headers))
    return extracted if len(extracted) else None


_CAUSES: contextvars.ContextVar[Mapping[str, Context] | None] = contextvars.ContextVar(
    "payments_publishing_causes", default=None
)


@contextlib.contextmanager
def publishing_causes(contexts: Mapping[str, Context]) -> Iterator[None]:
    """Publish the block's events in the trace of the inbound event that caused them."""
    token = _CAUSES.set(contexts)
    try:
        yield
    finally:
        _CAUSES.reset(token)


def context_for_cause(causation_id: str) -> Context | None:
    contexts = _CAUSES.get()
    return None if contexts is None else contexts.get(causation_id)


@contextlib.contextmanager
def attached(ctx: Context | None) -> Iterator[None]:
    """Make `ctx` current for the block (no-op for None)."""
    if ctx is None:
        yield
        return
    token = otel_context.attach(ctx)
    try:
        yield
    finally:
        otel_context.detach(token)
