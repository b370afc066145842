"""`GET /metrics` over a real flow: every family is there and counts what happened.

Three service instances share one harness (topics, database, observer):

1. handles `cart.updated` for cart C (sessions initiated);
2. runs with a sandbox slower than the provider timeout, so C's authorization
   ends with an unknown outcome and is left to the reconciler;
3. the instance whose metrics are scraped: its reconciler settles C, and it
   handles a full lifecycle (cart.updated → flaky checkout → capture → refund),
   a declined checkout, an invalid message and a duplicate.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.testing import builders
from service.testing.harness import ServiceHarness

pytestmark = pytest.mark.integration

Families = dict[str, list[tuple[str, dict[str, str], float]]]


@pytest.fixture
async def harness(kafka_bootstrap: str, mongodb_url: str) -> AsyncIterator[ServiceHarness]:
    async with ServiceHarness(
        kafka_bootstrap,
        mongodb_url,
        start_service=False,
        # The periodic relay would race the direct publish on a slow machine and
        # make the per-path counts ambiguous; start-up and stop still run it.
        relay_interval_s=60,
    ) as h:
        yield h


def _cart(tag: str) -> str:
    return f"cart_{tag}_{uuid.uuid4().hex[:10]}"


async def _scrape(port: int) -> tuple[str, Families]:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(f"http://127.0.0.1:{port}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    families: Families = {}
    for family in text_string_to_metric_families(response.text):
        families[family.name] = [(s.name, dict(s.labels), s.value) for s in family.samples]
    return response.text, families


def _value(families: Families, family: str, sample: str, **labels: str) -> float:
    assert family in families, f"metric family {family} missing; have {sorted(families)}"
    matching = [
        value
        for name, sample_labels, value in families[family]
        if name == sample and all(sample_labels.get(k) == v for k, v in labels.items())
    ]
    return sum(matching)


async def _wait_for(predicate: Any, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def test_metrics_count_a_real_flow(harness: ServiceHarness) -> None:
    p = harness.prefix
    settled_cart = _cart("settled")

    # -- 1: cart C initiated ------------------------------------------------------------
    await harness.start_app()
    await harness.publish("cart.updated", builders.cart_updated(settled_cart, 700))

    async def initiated() -> bool:
        c = await harness.collection(settled_cart)
        return c is not None and any(s.provider_id == "sandbox" for s in c.sessions)

    await _wait_for(initiated, what="cart C initiated")
    await harness.stop_app()

    # -- 2: C's authorization times out: outcome unknown, left to the reconciler ---------
    await harness.start_app(
        provider_options={"sandbox": {"delay_s": 1.0}},
        provider_timeout_s=0.2,
        provider_max_attempts=1,
        reconcile_interval_s=60,
    )
    await harness.publish("checkout.completed", builders.checkout_completed(settled_cart, 700))

    async def unknown() -> bool:
        c = await harness.collection(settled_cart)
        return c is not None and c.needs_reconcile

    await _wait_for(unknown, what="C's authorization left unknown")
    await harness.stop_app()

    # -- 3: the instance under test ------------------------------------------------------
    app = await harness.start_app()
    assert app.http_port
    settled = await harness.await_event("payment.authorized", cart_id=settled_cart, timeout=30)
    assert settled.data["amount"] == 700

    cart = _cart("a")
    await harness.publish("cart.updated", builders.cart_updated(cart, 5000))

    async def collection_exists() -> bool:
        return await harness.collection(cart) is not None

    await _wait_for(collection_exists, what="cart A collection")
    checkout = builders.checkout_completed(cart, 5000, payment_method="pm_card_flaky")
    checkout_id = await harness.publish("checkout.completed", checkout)
    authorized = await harness.await_event("payment.authorized", cart_id=cart)
    payment_id = authorized.data["payment_id"]
    await harness.publish("admin.payment.capture", builders.capture(payment_id))
    await harness.await_event("payment.captured", cart_id=cart)
    await harness.publish("admin.payment.refund", builders.refund(payment_id, 2000))
    await harness.await_event("payment.refunded", cart_id=cart)

    declined_cart = _cart("declined")
    await harness.publish(
        "checkout.completed",
        builders.checkout_completed(declined_cart, 1234, payment_method="pm_card_chargeDeclined"),
    )
    failed = await harness.await_event("payment.failed", cart_id=declined_cart)
    assert failed.data["reason"] == "declined"

    await harness.publish_raw("checkout.completed", b"{not json", key=b"cart_bad")
    await harness.await_event("payments.dead_letter", predicate=lambda r: r.key == "cart_bad")

    # The same checkout event again (a redelivery): a duplicate, nothing new published.
    await harness.publish("checkout.completed", checkout, event_id=checkout_id)

    async def duplicate_counted() -> bool:
        _, families = await _scrape(app.http_port)
        return (
            _value(
                families,
                "payments_events_handled",
                "payments_events_handled_total",
                topic=f"{p}checkout.completed",
                outcome="duplicate",
            )
            == 1
        )

    await _wait_for(duplicate_counted, what="the duplicate to be counted")
    text, m = await _scrape(app.http_port)

    def v(family: str, suffix: str = "_total", **labels: str) -> float:
        return _value(m, family, family + suffix, **labels)

    cart_t, checkout_t = f"{p}cart.updated", f"{p}checkout.completed"
    capture_t, refund_t = f"{p}admin.payment.capture", f"{p}admin.payment.refund"

    # Inbound messages and their outcomes.
    assert v("payments_events_consumed", topic=cart_t) == 1
    assert v("payments_events_consumed", topic=checkout_t) == 4  # A, declined, bad, dup
    assert v("payments_events_consumed", topic=capture_t) == 1
    assert v("payments_events_consumed", topic=refund_t) == 1
    assert v("payments_events_handled", topic=cart_t, outcome="applied") == 1
    assert v("payments_events_handled", topic=checkout_t, outcome="applied") == 2
    assert v("payments_events_handled", topic=checkout_t, outcome="duplicate") == 1
    assert v("payments_events_handled", topic=checkout_t, outcome="dead_lettered") == 1
    assert v("payments_events_handled", topic=capture_t, outcome="applied") == 1
    assert v("payments_events_handled", topic=refund_t, outcome="applied") == 1
    assert v("payments_dead_letters", topic=checkout_t, kind="invalid_json") == 1
    assert v("payments_dead_letters") == 1
    assert v("payments_handler_seconds", "_count", topic=checkout_t) == 3
    assert v("payments_handler_seconds", "_count", topic=capture_t) == 1
    assert v("payments_handler_seconds", "_sum", topic=checkout_t) > 0

    # Provider calls: the flaky card fails twice (transient), is retried, then succeeds.
    sandbox_authorize = {"provider": "sandbox", "operation": "authorize"}
    assert v("payments_provider_call_seconds", "_count", **sandbox_authorize) == 4
    assert (
        v("payments_provider_call_seconds", "_count", outcome="transient", **sandbox_authorize) == 2
    )
    assert (
        v("payments_provider_call_seconds", "_count", outcome="succeeded", **sandbox_authorize) == 1
    )
    assert (
        v("payments_provider_call_seconds", "_count", outcome="declined", **sandbox_authorize) == 1
    )
    assert (
        v("payments_provider_call_seconds", "_count", provider="sandbox", operation="capture") == 1
    )
    assert (
        v("payments_provider_call_seconds", "_count", provider="sandbox", operation="refund") == 1
    )
    # The reconciler's question about C is a status query, not another authorization.
    assert (
        v(
            "payments_provider_call_seconds",
            "_count",
            provider="sandbox",
            operation="get_status",
            outcome="succeeded",
        )
        == 1
    )
    assert v("payments_provider_retries", provider="sandbox", operation="authorize") == 2
    assert v("payments_processing_retries") == 0
    assert "payments_processing_retries" in m  # declared even before the first retry

    # Outbound events, by the path that published them.
    assert v("payments_outbox_published", type="payment.authorized", path="direct") == 1
    assert v("payments_outbox_published", type="payment.authorized", path="reconciler") == 1
    assert v("payments_outbox_published", type="payment.captured", path="direct") == 1
    assert v("payments_outbox_published", type="payment.refunded", path="direct") == 1
    assert v("payments_outbox_published", type="payment.failed", path="direct") == 1
    assert v("payments_outbox_published", path="relay") == 0
    assert v("payments_outbox_backlog", "") == 0
    assert v("payments_relay_lag_seconds", "") == 0

    # Payment outcomes by reason, amounts by currency (minor units).
    assert v("payments_payment_events", type="payment.authorized", reason="") == 2
    assert v("payments_payment_events", type="payment.failed", reason="declined") == 1
    assert v("payments_payment_events", type="payment.captured") == 1
    assert v("payments_payment_events", type="payment.refunded") == 1
    amounts = "payments_payment_amount_minor_units"
    assert v(amounts, type="payment.authorized", currency="usd") == 5700
    assert v(amounts, type="payment.captured", currency="usd") == 5000
    assert v(amounts, type="payment.refunded", currency="usd") == 2000
    assert v(amounts, type="payment.failed") == 0  # a declined payment moved nothing

    # The reconciler: it ran, and it settled C.
    assert v("payments_reconciler_runs") >= 1
    assert v("payments_reconciled_sessions") == 1
    assert "# TYPE payments_relay_lag_seconds gauge" in text
