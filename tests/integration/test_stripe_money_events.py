"""Every money-moving Stripe event, applied through the aggregate (issue 13).

The service runs against the embedded broker and MongoDB with Stripe as
localstripe. What a merchant does in Stripe's dashboard (cancel, refund) is done
at localstripe directly; Stripe's webhook about it is the event around the object
as localstripe then holds it — with the fields localstripe leaves out filled in
from Stripe's API reference — signed with this test's secret and POSTed to the
service. Disputes, which localstripe lacks, come from the reference fixture
`dispute_needs_response.json` around a real PaymentIntent.

Refunds and disputes made outside the service carry no metadata of ours: the
service finds the cart from the PaymentIntent they name.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from service.domain.statuses import CollectionStatus
from service.testing import builders
from service.testing.harness import ServiceHarness
from service.tools.inspection import Inspection
from tests.fixtures.stripe.kit import event, load, sign, stripe_service
from tests.support.localstripe import TEST_API_KEY, LocalStripe

pytestmark = pytest.mark.integration

SECRET = "whsec_money_events_test"


@pytest.fixture(scope="module")
async def harness(
    kafka_bootstrap: str, mongodb_url: str, localstripe: LocalStripe
) -> AsyncIterator[ServiceHarness]:
    async with stripe_service(
        kafka_bootstrap, mongodb_url, localstripe, webhook_secret=SECRET
    ) as h:
        yield h


async def _dashboard(localstripe: LocalStripe, path: str, **form: str) -> dict[str, Any]:
    """A request the merchant's dashboard makes at Stripe (not through the service)."""
    async with httpx.AsyncClient(
        base_url=localstripe.api_base,
        headers={"Authorization": f"Bearer {TEST_API_KEY}"},
        timeout=10.0,
    ) as client:
        response = await client.post(path, data=form)
        response.raise_for_status()
        answer: dict[str, Any] = response.json()
        return answer


async def _stripe_sends(harness: ServiceHarness, event_type: str, obj: dict[str, Any]) -> str:
    body = json.dumps(event(event_type, obj, event_id=f"evt_{uuid.uuid4().hex[:24]}")).encode()
    async with httpx.AsyncClient(timeout=10.0) as client:
        answer = await client.post(
            f"http://127.0.0.1:{harness.app.http_port}/webhooks/stripe",
            content=body,
            headers={"content-type": "application/json", "Stripe-Signature": sign(body, SECRET)},
        )
    assert answer.status_code == 200, answer.text
    return str(answer.json()["id"])


async def _authorized(harness: ServiceHarness, cart: str) -> tuple[str, str]:
    await harness.publish("cart.updated", builders.cart_updated(cart, 5000, region_id="eu"))
    await harness.publish(
        "checkout.completed",
        builders.checkout_completed(
            cart, 5000, provider_id="stripe", region_id="eu", payment_method="pm_card_visa"
        ),
    )
    authorized = await harness.await_event("payment.authorized", cart_id=cart, timeout=30)
    collection = await harness.collection(cart)
    assert collection is not None and collection.payment is not None
    return authorized.data["payment_id"], str(collection.payment.data["id"])


async def _captured(harness: ServiceHarness, cart: str) -> tuple[str, str]:
    payment_id, intent_id = await _authorized(harness, cart)
    await harness.publish("admin.payment.capture", builders.capture(payment_id))
    await harness.await_event("payment.captured", cart_id=cart, timeout=30)
    return payment_id, intent_id


def _cart() -> str:
    return f"cart_{uuid.uuid4().hex[:12]}"


async def test_authorization_canceled_at_stripe_cancels_the_payment(
    harness: ServiceHarness, localstripe: LocalStripe
) -> None:
    cart = _cart()
    payment_id, intent_id = await _authorized(harness, cart)
    # Canceled in the dashboard (or expired after 7 days: the same event).
    intent = await _dashboard(localstripe, f"/v1/payment_intents/{intent_id}/cancel")
    assert intent["status"] == "canceled"

    webhook_id = await _stripe_sends(harness, "payment_intent.canceled", intent)

    canceled = await harness.await_event("payment.canceled", cart_id=cart, timeout=30)
    assert canceled.event["causationid"] == webhook_id
    assert canceled.data["payment_id"] == payment_id
    collection = await harness.collection(cart)
    assert collection is not None and collection.status == CollectionStatus.CANCELED
    await _stripe_sends(harness, "payment_intent.canceled", intent)  # Stripe's retry
    await harness.settle(quiet_s=1.0)
    assert len(harness.events("payment.canceled", cart_id=cart)) == 1


async def test_dashboard_refund_is_booked_once_and_its_failure_reverses_it(
    harness: ServiceHarness, localstripe: LocalStripe
) -> None:
    cart = _cart()
    payment_id, intent_id = await _captured(harness, cart)
    refund = await _dashboard(localstripe, "/v1/refunds", payment_intent=intent_id, amount="1200")
    refund.setdefault("status", "succeeded")
    assert refund.get("metadata") in ({}, None)  # nothing of ours on it

    pending = {**refund, "status": "pending"}
    await _stripe_sends(harness, "refund.created", pending)
    await harness.settle(quiet_s=1.0)
    assert harness.events("payment.refunded", cart_id=cart) == []  # pending is not done

    webhook_id = await _stripe_sends(harness, "refund.updated", refund)
    refunded = await harness.await_event("payment.refunded", cart_id=cart, timeout=30)
    assert refunded.event["causationid"] == webhook_id
    assert (refunded.data["amount"], refunded.data["refunded_total"]) == (1200, 1200)
    assert refunded.data["payment_id"] == payment_id
    await _stripe_sends(harness, "charge.refund.updated", refund)  # same refund, older name
    await harness.settle(quiet_s=1.0)
    assert len(harness.events("payment.refunded", cart_id=cart)) == 1

    failed_refund = {**refund, "status": "failed", "failure_reason": "lost_or_stolen_card"}
    await _stripe_sends(harness, "refund.failed", failed_refund)
    failed = await harness.await_event("payment.failed", cart_id=cart, timeout=30)
    assert failed.data["operation"] == "refund"
    assert failed.data["amount"] == 1200
    assert "lost_or_stolen_card" in failed.data["message"]
    collection = await harness.collection(cart)
    assert collection is not None and collection.payment is not None
    assert collection.payment.refunded_total == 0  # refundable again

    # An admin refund of everything now passes the refunded ≤ captured check.
    await harness.publish("admin.payment.refund", builders.refund(payment_id, 5000))
    again = await harness.await_event("payment.refunded", cart_id=cart, timeout=30, count=2)
    assert again.data["refunded_total"] == 5000


async def test_disputes_are_recorded_published_counted_and_inspected(
    harness: ServiceHarness, localstripe: LocalStripe
) -> None:
    cart = _cart()
    payment_id, intent_id = await _captured(harness, cart)
    intent = await localstripe.payment_intent(intent_id)
    charge = str(intent.get("latest_charge") or "ch_unknown")
    opened = load("dispute_needs_response.json", payment_intent=intent_id, charge=charge)

    opened_id = await _stripe_sends(harness, "charge.dispute.created", opened)
    first = await harness.await_event("payment.disputed", cart_id=cart, timeout=30)
    assert first.event["causationid"] == opened_id
    assert first.data["payment_id"] == payment_id
    assert (first.data["dispute_id"], first.data["status"]) == (opened["id"], "open")
    assert first.data["reason"] == "fraudulent"
    assert first.data["amount"] == 5000
    assert first.data["evidence_due_by"].startswith("2025-01-14")

    # Evidence submitted: Stripe's status changes, the contract's does not.
    await _stripe_sends(harness, "charge.dispute.updated", {**opened, "status": "under_review"})
    await _stripe_sends(harness, "charge.dispute.closed", {**opened, "status": "won"})
    won = await harness.await_event("payment.disputed", cart_id=cart, timeout=30, count=2)
    assert won.data["status"] == "won"
    await harness.settle(quiet_s=1.0)
    assert [e.data["status"] for e in harness.events("payment.disputed", cart_id=cart)] == [
        "open",
        "won",
    ]

    collection = await harness.collection(cart)
    assert collection is not None and collection.payment is not None
    (dispute,) = collection.payment.disputes
    assert (dispute.status, dispute.provider_status) == ("won", "won")
    summary = Inspection("cart", cart, 0, collection).summary()
    assert summary["disputes"] == [
        {"id": opened["id"], "status": "won", "amount": 5000, "reason": "fraudulent"}
    ]
    metrics = harness.app.metrics.render().decode()
    assert 'payments_disputes_total{reason="fraudulent",status="won"}' in metrics
    assert 'payments_disputes_total{reason="fraudulent",status="open"}' in metrics


async def test_partial_capture_in_the_dashboard_is_booked_once(
    harness: ServiceHarness, localstripe: LocalStripe
) -> None:
    cart = _cart()
    payment_id, intent_id = await _authorized(harness, cart)
    intent = await localstripe.capture(intent_id, 2000)  # in the dashboard
    charge: dict[str, Any] = dict(intent["latest_charge"])  # localstripe expands it
    # As Stripe's Charge object has them (localstripe shows the released rest as a
    # refund instead, and leaves `amount_captured` out).
    charge.update(
        amount_captured=2000,
        amount_refunded=0,
        captured=True,
        payment_intent=intent_id,
        metadata={},
        refunds={"object": "list", "data": [], "has_more": False},
    )

    webhook_id = await _stripe_sends(harness, "charge.captured", charge)
    captured = await harness.await_event("payment.captured", cart_id=cart, timeout=30)
    assert captured.event["causationid"] == webhook_id
    assert captured.data["payment_id"] == payment_id
    assert (captured.data["amount"], captured.data["captured_total"]) == (2000, 2000)
    # A dashboard capture is final: Stripe released the rest (issue 22).
    assert (captured.data["fully_captured"], captured.data["released_amount"]) == (True, 3000)

    # The intent's own event about the same capture books nothing more.
    intent.update(amount_received=2000, amount_capturable=0, latest_charge=charge["id"])
    await _stripe_sends(harness, "payment_intent.succeeded", intent)
    await harness.settle(quiet_s=1.0)
    assert len(harness.events("payment.captured", cart_id=cart)) == 1
    collection = await harness.collection(cart)
    assert collection is not None and collection.payment is not None
    assert [(c.amount, c.source) for c in collection.payment.captures] == [(2000, "webhook")]
