"""Tracing: the trace a storefront starts travels through the service in Kafka headers.

The service is started with the tracing test hook (an in-memory span exporter),
which turns tracing on exactly as `PAYMENTS_OTLP_ENDPOINT` does, minus the network.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from service.entrypoints.app import PaymentsApp
from service.testing import builders
from service.testing.harness import ServiceHarness

pytestmark = pytest.mark.integration


@pytest.fixture
async def traced(
    kafka_bootstrap: str, mongodb_url: str
) -> AsyncIterator[tuple[ServiceHarness, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    async with ServiceHarness(kafka_bootstrap, mongodb_url, start_service=False) as harness:
        harness.app = PaymentsApp(harness.settings(), span_exporter=exporter)
        await harness.app.start()
        yield harness, exporter


def _traceparent() -> tuple[str, str, str]:
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


async def test_outbound_event_continues_the_inbound_trace(
    traced: tuple[ServiceHarness, InMemorySpanExporter],
) -> None:
    harness, exporter = traced
    cart = f"cart_{uuid.uuid4().hex[:12]}"
    header, trace_id, parent_span_id = _traceparent()
    await harness.publish(
        "checkout.completed",
        builders.checkout_completed(cart, 2500),
        headers=[("traceparent", header.encode())],
    )
    authorized = await harness.await_event("payment.authorized", cart_id=cart)

    outbound = authorized.headers.get("traceparent")
    assert outbound is not None, f"no traceparent on {authorized.headers}"
    version, out_trace_id, out_span_id, flags = outbound.split("-")
    assert (version, flags) == ("00", "01")
    assert out_trace_id == trace_id
    assert out_span_id != parent_span_id

    # The spans: one CONSUMER span for the record, child of the storefront's span,
    # and the publish of payment.authorized below it, all in the storefront's trace.
    spans = [s for s in exporter.get_finished_spans() if f"{s.context.trace_id:032x}" == trace_id]
    process = [
        s
        for s in spans
        if s.name == f"{harness.prefix}checkout.completed process" and s.kind == SpanKind.CONSUMER
    ]
    assert len(process) == 1, [s.name for s in spans]
    assert process[0].parent is not None
    assert f"{process[0].parent.span_id:016x}" == parent_span_id
    assert process[0].attributes is not None
    assert process[0].attributes["messaging.message.id"] == authorized.event["causationid"]
    assert process[0].links, "the record's span links the batch span"
    publishes = [s for s in spans if s.kind == SpanKind.PRODUCER and "payment.authorized" in s.name]
    assert publishes, [s.name for s in spans]
    assert f"{out_span_id}" in {f"{s.context.span_id:016x}" for s in publishes}


async def test_dead_letter_and_untraced_input(
    traced: tuple[ServiceHarness, InMemorySpanExporter],
) -> None:
    harness, _ = traced
    header, trace_id, _ = _traceparent()
    await harness.publish_raw(
        "checkout.completed",
        b"{broken",
        key=b"cart_traced_bad",
        headers=[("traceparent", header.encode())],
    )
    dead = await harness.await_event(
        "payments.dead_letter", predicate=lambda r: r.key == "cart_traced_bad"
    )
    assert dead.headers["traceparent"].split("-")[1] == trace_id

    # Input without a trace context still gets one: a new trace starts here.
    cart = f"cart_{uuid.uuid4().hex[:12]}"
    await harness.publish("checkout.completed", builders.checkout_completed(cart, 100))
    authorized = await harness.await_event("payment.authorized", cart_id=cart)
    fresh = authorized.headers["traceparent"].split("-")[1]
    assert fresh != trace_id and int(fresh, 16) != 0
