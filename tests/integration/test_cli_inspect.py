"""`payments inspect`: a cart's and a payment's stored state, as tables and as JSON."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest
from cli_testkit import invoke, json_of, mongo_args, ok

from service.testing import builders
from service.testing.harness import ServiceHarness

# `store`: also proven on FerretDB (`make test-store`): it exercises store semantics.
pytestmark = [pytest.mark.integration, pytest.mark.store]


@pytest.fixture
async def harness(kafka_bootstrap: str, mongodb_url: str) -> AsyncIterator[ServiceHarness]:
    async with ServiceHarness(kafka_bootstrap, mongodb_url) as h:
        yield h


async def _until_stored(h: ServiceHarness, cart: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while await h.collection(cart) is None:
        assert time.monotonic() < deadline, f"cart {cart} was never stored"
        await asyncio.sleep(0.2)


async def test_inspect_cart_and_payment(harness: ServiceHarness) -> None:
    h = harness
    cart = f"cart_{uuid.uuid4().hex[:12]}"
    cart_event = await h.publish("cart.updated", builders.cart_updated(cart, 6000))
    # The two topics are not ordered against each other; let the cart land first so
    # it is in the inbox (after authorization a cart update changes nothing).
    await _until_stored(h, cart)
    checkout_event = await h.publish("checkout.completed", builders.checkout_completed(cart, 6000))
    authorized = await h.await_event("payment.authorized", cart_id=cart, timeout=30)
    payment_id = authorized.data["payment_id"]
    capture_id = await h.publish("admin.payment.capture", builders.capture(payment_id, 4000))
    captured = await h.await_event("payment.captured", cart_id=cart, timeout=30)
    refund_id = await h.publish(
        "admin.payment.refund", builders.refund(payment_id, 1000, reason="damaged")
    )
    refunded = await h.await_event("payment.refunded", cart_id=cart, timeout=30)

    by_cart = json_of(await invoke("inspect", "cart", cart, "--json", *mongo_args(h)))
    summary = by_cart["summary"]
    assert summary["cart_id"] == cart and summary["payment_id"] == payment_id
    assert summary["status"] == "partially_captured"
    assert (summary["authorized_amount"], summary["captured_total"], summary["refunded_total"]) == (
        6000,
        4000,
        1000,
    )
    assert summary["pending_operations"] == 0
    collection = by_cart["collection"]
    assert [s["provider_id"] for s in collection["sessions"] if s["status"] == "authorized"] == [
        "sandbox"
    ]
    payment = collection["payment"]
    assert [(c["amount"], c["command_id"]) for c in payment["captures"]] == [(4000, capture_id)]
    assert [(r["amount"], r["reason"]) for r in payment["refunds"]] == [(1000, "damaged")]
    assert {e["command_id"] for e in payment["history"]} >= {capture_id, refund_id}
    assert {p["id"] for p in collection["processed"]} >= {
        cart_event,
        checkout_event,
        capture_id,
        refund_id,
    }
    assert [e["id"] for e in collection["outbox"]] == [authorized.id, captured.id, refunded.id]

    by_payment = json_of(await invoke("inspect", "payment", payment_id, "--json", *mongo_args(h)))
    assert by_payment["looked_up"] == "payment"
    assert by_payment["collection"] == collection

    tables = ok(await invoke("inspect", "cart", cart, *mongo_args(h))).stdout
    for title in ("Payment collection", "Sessions", "Payment ", "Captures", "Refunds"):
        assert title in tables
    for title in ("Pending operations", "History", "Inbox", "Outbox"):
        assert title in tables
    assert "damaged" in tables and "4000 usd" in tables

    missing = await invoke("inspect", "cart", "cart_nobody", *mongo_args(h))
    assert missing.exit_code == 1 and "no payment collection for cart 'cart_nobody'" in (
        missing.stderr
    )
