"""`payments run` as a real process: JSON logs with context, redaction, SIGTERM.

The service runs as a child process (`service.testing.service_process.ServiceProcess`)
against the session's broker and MongoDB, with its own topic prefix and database
(from a `ServiceHarness`, which also produces the input and observes the output).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from service.entrypoints.app import shutdown_budget_s
from service.settings import load_settings
from service.testing import builders
from service.testing.harness import ServiceHarness
from service.testing.service_process import ServiceProcess

pytestmark = pytest.mark.integration

STRIPE_KEY = "sk_test_51Hq9ZbLkX0pQ7aBcDeFgHiJk"
"""Configured (in PAYMENTS_PROVIDER_OPTIONS): redacted as a known secret value."""
OTHER_KEY = "rk_live_51ZzYyXxWwVvUuTtSs"
"""Not configured anywhere: redacted by its shape."""
CARD = "4242 4242 4242 4242"
CARD_DIGITS = CARD.replace(" ", "")
ADMIN_SECRET = "ops-hmac-secret-9d2f61"


@pytest.fixture
async def harness(kafka_bootstrap: str, mongodb_url: str) -> AsyncIterator[ServiceHarness]:
    async with ServiceHarness(
        kafka_bootstrap,
        mongodb_url,
        start_service=False,
        admin_key=("ops", ADMIN_SECRET),
        log_level="DEBUG",
        log_format="json",
        provider_options={"stripe": {"api_key": STRIPE_KEY}},
    ) as h:
        yield h


def _service(harness: ServiceHarness, log_path: Path, **settings: Any) -> ServiceProcess:
    return ServiceProcess(
        {**harness.settings_overrides, **settings}, log_path=log_path, name="payments"
    )


def _json_lines(log_path: Path) -> list[dict[str, Any]]:
    """Every line the service wrote, parsed; the harness's start markers skipped."""
    lines = []
    for raw in log_path.read_text("utf-8").splitlines():
        if not raw.strip() or raw.startswith("===== "):
            continue
        try:
            lines.append(json.loads(raw))
        except json.JSONDecodeError as exc:
            raise AssertionError(f"not a JSON log line: {raw!r}") from exc
    return lines


async def test_json_logs_carry_context_and_no_secret(
    harness: ServiceHarness, tmp_path: Path
) -> None:
    log_path = tmp_path / "service.log"
    service = _service(harness, log_path)
    await service.start()
    try:
        cart = f"cart_{uuid.uuid4().hex[:12]}"
        checkout_id = await harness.publish(
            "checkout.completed",
            builders.checkout_completed(
                cart,
                3100,
                payment_method="pm_card_visa",
                context={"note": f"card {CARD}", "api_key": STRIPE_KEY},
            ),
        )
        authorized = await harness.await_event("payment.authorized", cart_id=cart, timeout=30)
        payment_id = authorized.data["payment_id"]
        # A message whose type echoes the input into the dead-letter reason, which
        # is logged: the card number and the key must be masked there.
        bad = builders.envelope("checkout.completed", {"cart_id": cart})
        bad["type"] = f"card {CARD} key {STRIPE_KEY} other {OTHER_KEY}"
        await harness.publish_raw("checkout.completed", builders.encode(bad), key=b"cart_echo")
        await harness.await_event("payments.dead_letter", predicate=lambda r: r.key == "cart_echo")
        capture_id = await harness.publish("admin.payment.capture", builders.capture(payment_id))
        await harness.await_event("payment.captured", cart_id=cart, timeout=30)
    finally:
        exit_code = await service.stop()
    assert exit_code == 0, service.log_tail()

    text = log_path.read_text("utf-8")
    for secret in (STRIPE_KEY, OTHER_KEY, CARD, CARD_DIGITS, ADMIN_SECRET):
        assert secret not in text, f"{secret!r} reached the log"
    lines = _json_lines(log_path)
    assert all({"event", "level", "timestamp", "logger"} <= line.keys() for line in lines)

    started = [line for line in lines if line["event"].startswith("payments service started")]
    assert len(started) == 1
    summary = started[0]["settings"]
    assert summary["provider_options"] == {"stripe": {"api_key": "[REDACTED]"}}
    assert summary["admin_key_ids"] == ["ops"]

    # One DEBUG line per handled message, with the message's context.
    handled = {
        line["event_id"]: line
        for line in lines
        if line["level"] == "debug" and line["event"].startswith("handled ")
    }
    checkout_line = handled[checkout_id]
    assert checkout_line["event"] == "handled checkout.completed: applied"
    assert checkout_line["cart_id"] == cart
    assert checkout_line["topic"] == f"{harness.prefix}checkout.completed"
    assert isinstance(checkout_line["partition"], int)
    assert isinstance(checkout_line["offset"], int)
    assert checkout_line["provider"] == "sandbox"
    assert checkout_line["payment_id"] == payment_id
    assert checkout_line["outcome"] == "applied"
    capture_line = handled[capture_id]
    assert capture_line["payment_id"] == payment_id
    assert capture_line["cart_id"] == cart
    assert capture_line["provider"] == "sandbox"
    assert capture_line["topic"] == f"{harness.prefix}admin.payment.capture"

    (dead,) = [line for line in lines if line["event"].startswith("dead-lettering")]
    assert dead["level"] == "warning"
    assert "****4242" in dead["event"]
    assert "key [REDACTED] other rk_live_[REDACTED]" in dead["event"]
    assert dead["topic"] == f"{harness.prefix}checkout.completed"
    assert "offset" in dead

    assert any(line["event"] == "payments service stopped" for line in lines)
    # Libraries log through the same pipeline (uvicorn, FastStream, aiokafka ...).
    assert {line["logger"].split(".")[0] for line in lines} - {"service", "payments"}


async def test_sigterm_mid_stream_loses_nothing(harness: ServiceHarness, tmp_path: Path) -> None:
    carts = [f"cart_{i:03d}_{uuid.uuid4().hex[:8]}" for i in range(120)]
    log_path = tmp_path / "service.log"
    service = _service(harness, log_path, log_level="INFO")
    await service.start()

    async def stream() -> None:
        for cart in carts:
            await harness.publish("checkout.completed", builders.checkout_completed(cart, 1000))
            await asyncio.sleep(0.02)

    streaming = asyncio.create_task(stream())
    try:
        # SIGTERM once part of the stream was answered, while the rest keeps coming.
        await harness.await_event("payment.authorized", count=20, timeout=60)
        stopped_at = time.monotonic()
        exit_code = await service.stop(timeout=120)
        stop_seconds = time.monotonic() - stopped_at
        assert exit_code == 0, service.log_tail()
        budget = shutdown_budget_s(load_settings(**harness.settings_overrides))
        assert stop_seconds < budget, f"graceful stop took {stop_seconds:.1f}s"
        answered_before_restart = len(harness.events("payment.authorized"))
        assert answered_before_restart < len(carts), "the stream ended before SIGTERM"
        await streaming
        await service.start()
        await harness.await_event("payment.authorized", count=len(carts), timeout=120)
        await harness.settle(quiet_s=1.5)
    finally:
        streaming.cancel()
        await service.stop()

    ids_by_cart: dict[str, set[str]] = defaultdict(set)
    for received in harness.events("payment.authorized"):
        ids_by_cart[received.data["cart_id"]].add(received.id)
    missing = [c for c in carts if c not in ids_by_cart]
    assert not missing, f"{len(missing)} checkouts never answered, e.g. {missing[:3]}"
    renamed = {c: ids for c, ids in ids_by_cart.items() if len(ids) != 1}
    assert not renamed, f"duplicates with a new id: {renamed}"
    assert not harness.events("payment.failed")
    assert not harness.events("payments.dead_letter")
    # The provider's ledger: exactly one authorization per cart.
    per_cart: dict[str, int] = defaultdict(int)
    for entry in await harness.ledger(operation="authorize"):
        per_cart[entry["cart_id"]] += 1
    assert {per_cart[c] for c in carts} == {1}
    log = log_path.read_text("utf-8")
    assert log.count('"payments service stopped"') == 2
