"""Issue 22, end to end over Kafka: the books follow Stripe, whatever its webhooks say
and in whatever order they come.

The service runs on the session's broker and MongoDB-protocol server with the real
`stripe` adapter talking over HTTP to :class:`~tests.fixtures.stripe.faithful.FaithfulStripe`
(behind a :class:`~tests.fixtures.stripe.kit.ScriptedStripe`): a stateful Stripe that
emits an event for every state change. What Stripe does outside the service (a
customer finishing 3-D Secure late, a capture or refund in the dashboard) is done
at the fake; its events are signed with this module's secret and POSTed to the
service's ``/webhooks/stripe``, in the order each test chooses.

* Sequence 2: a hold finished late on a session that is not the payment is released
  at Stripe (the reconciler cancels it, or refunds it when Stripe captured it on
  confirmation), and the payment stays the one the shopper paid with.
* Sequence 3(a): a dashboard refund whose events come before the capture's ends
  at Stripe's totals, announced once.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

import httpx
import pytest

from service.domain.statuses import CollectionStatus
from service.testing import builders
from service.testing.harness import ServiceHarness
from service.tools.inspection import Inspection
from tests.fixtures.stripe.faithful import PM_AUTHENTICATION_REQUIRED, PM_VISA, FaithfulStripe
from tests.fixtures.stripe.kit import ScriptedStripe, stripe_service

pytestmark = pytest.mark.integration

SECRET = "whsec_provider_truth_test"
AMOUNT = 5000
WAIT_S = 90.0
"""Upper bound on each wait for a condition (a loaded machine is slow; a pass is fast)."""

T = TypeVar("T")


# -- Stripe and the service ------------------------------------------------------------------


@pytest.fixture(scope="module")
def scripted() -> Iterator[ScriptedStripe]:
    with ScriptedStripe() as server:
        yield server


@pytest.fixture(scope="module")
def stripe(scripted: ScriptedStripe) -> FaithfulStripe:
    return FaithfulStripe.serve(scripted)


@pytest.fixture(scope="module")
async def harness(
    kafka_bootstrap: str, mongodb_url: str, scripted: ScriptedStripe, stripe: FaithfulStripe
) -> AsyncIterator[ServiceHarness]:
    """Manual capture (Stripe's `requires_capture` holds)."""
    async with stripe_service(kafka_bootstrap, mongodb_url, scripted, webhook_secret=SECRET) as h:
        yield h


@pytest.fixture(scope="module")
async def capturing_harness(
    kafka_bootstrap: str, mongodb_url: str, scripted: ScriptedStripe, stripe: FaithfulStripe
) -> AsyncIterator[ServiceHarness]:
    """Automatic capture (`capture: true`): Stripe captures on confirmation."""
    async with stripe_service(
        kafka_bootstrap, mongodb_url, scripted, webhook_secret=SECRET, capture=True
    ) as h:
        yield h


def at_stripe(scripted: ScriptedStripe, act: Callable[[], T]) -> T:
    """Something happening at Stripe outside the service, atomic with the requests the
    service makes meanwhile (they are served on the fake's own threads)."""
    with scripted._lock:
        return act()


async def stripe_sends(harness: ServiceHarness, event: dict[str, Any]) -> str:
    """Stripe delivers `event` to the service's endpoint, signed; the envelope id."""
    headers, body = FaithfulStripe.signed(event, SECRET)
    async with httpx.AsyncClient(timeout=30.0) as client:
        answer = await client.post(
            f"http://127.0.0.1:{harness.http_port}/webhooks/stripe", content=body, headers=headers
        )
    assert answer.status_code == 200, answer.text
    return str(answer.json()["id"])


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Wait until `check` holds (a condition, not a duration); fail naming `what`."""
    deadline = time.monotonic() + WAIT_S
    while not await check():
        assert time.monotonic() < deadline, f"never happened within {WAIT_S}s: {what}"
        await asyncio.sleep(0.05)


def _cart() -> str:
    return f"cart_{uuid.uuid4().hex[:12]}"


def _intents_of(stripe: FaithfulStripe, cart: str) -> list[dict[str, Any]]:
    return [i for i in stripe.intents.values() if i["metadata"].get("cart_id") == cart]


def _refunds_of(stripe: FaithfulStripe, intent_id: str) -> list[dict[str, Any]]:
    return [r for r in stripe.refunds.values() if r["payment_intent"] == intent_id]


def _kept(stripe: FaithfulStripe, intent: dict[str, Any]) -> int:
    """What Stripe took on `intent` and did not give back."""
    refunded: int = sum(
        r["amount"] for r in _refunds_of(stripe, intent["id"]) if r["status"] == "succeeded"
    )
    return int(intent["amount_received"]) - refunded


def _live(stripe: FaithfulStripe, intent: dict[str, Any]) -> bool:
    """Money held on the card, or taken and not given back."""
    return intent["amount_capturable"] > 0 or _kept(stripe, intent) > 0


async def _summary(harness: ServiceHarness, cart: str) -> dict[str, Any]:
    """What `payments inspect cart <cart>` shows."""
    collection = await harness.collection(cart)
    assert collection is not None
    return Inspection("cart", cart, 0, collection).summary()


# -- sequence 2: a hold finished late on another session --------------------------------------


async def _three_d_secure_then_manual(
    harness: ServiceHarness, stripe: FaithfulStripe, cart: str
) -> tuple[str, str]:
    """A Stripe checkout stopped at 3-D Secure, then the shopper paid with `manual`
    under a new key: the Stripe intent (still `requires_action`) and the payment id."""
    await harness.publish("cart.updated", builders.cart_updated(cart, AMOUNT, region_id="eu"))
    await harness.publish(
        "checkout.completed",
        builders.checkout_completed(
            cart,
            AMOUNT,
            provider_id="stripe",
            region_id="eu",
            payment_method=PM_AUTHENTICATION_REQUIRED,
        ),
    )
    requires = await harness.await_event("payment.requires_action", cart_id=cart, timeout=WAIT_S)
    intent_id = str(requires.data["action"]["payment_intent_id"])
    assert stripe.intents[intent_id]["status"] == "requires_action"

    await harness.publish(
        "checkout.completed",
        builders.checkout_completed(cart, AMOUNT, provider_id="manual", region_id="eu"),
    )
    authorized = await harness.await_event("payment.authorized", cart_id=cart, timeout=WAIT_S)
    assert authorized.data["provider_id"] == "manual"
    return intent_id, str(authorized.data["payment_id"])


async def _assert_manual_payment_alone(
    harness: ServiceHarness, cart: str, payment_id: str, *, captured: int
) -> None:
    collection = await harness.collection(cart)
    assert collection is not None and collection.payment is not None
    assert (collection.payment.id, collection.payment.provider_id) == (payment_id, "manual")
    assert collection.payment.amount == AMOUNT
    assert collection.payment.captured_total == captured
    assert collection.status in (CollectionStatus.AUTHORIZED, CollectionStatus.COMPLETED)
    assert collection.voids == []  # nothing left to release
    assert collection.parked == []
    assert [e.data["payment_id"] for e in harness.events("payment.authorized", cart_id=cart)] == [
        payment_id
    ]
    assert harness.events("payment.canceled", cart_id=cart) == []
    assert harness.events("payment.refunded", cart_id=cart) == []


async def test_a_hold_finished_late_on_another_session_is_canceled_at_stripe(
    harness: ServiceHarness, scripted: ScriptedStripe, stripe: FaithfulStripe
) -> None:
    cart = _cart()
    intent_id, payment_id = await _three_d_secure_then_manual(harness, stripe, cart)

    # The shopper finishes the challenge anyway: Stripe now holds 5000 on the card.
    mark = len(stripe.events)
    at_stripe(scripted, lambda: stripe.authenticate(intent_id))
    assert stripe.intents[intent_id]["status"] == "requires_capture"
    (held,) = [e for e in stripe.events[mark:] if e["data"]["object"]["id"] == intent_id]
    assert held["type"] == "payment_intent.amount_capturable_updated"
    assert held["data"]["object"]["amount_capturable"] == AMOUNT
    await stripe_sends(harness, held)

    # The reconciler releases the hold AT STRIPE, naming the intent.
    async def canceled_at_stripe() -> bool:
        return bool(stripe.intents[intent_id]["status"] == "canceled")

    await eventually(canceled_at_stripe, f"the late hold {intent_id} canceled at Stripe")

    async def released_booked() -> bool:
        collection = await harness.collection(cart)
        return collection is not None and not collection.voids and bool(collection.released_holds)

    await eventually(released_booked, "the release booked")
    intent = stripe.intents[intent_id]
    assert (intent["amount_capturable"], intent["amount_received"]) == (0, 0)
    cancels = scripted.sent("POST", f"/v1/payment_intents/{intent_id}/cancel")
    assert len({r.idempotency_key for r in cancels}) == 1, cancels  # one release, maybe retried
    assert [i["id"] for i in _intents_of(stripe, cart) if _live(stripe, i)] == []
    collection = await harness.collection(cart)
    assert collection is not None
    (released,) = collection.released_holds
    assert (released.reference, released.how, released.amount) == (intent_id, "cancel", AMOUNT)

    # Stripe's own events about the release, and a redelivery of the hold's, change
    # nothing: the payment is still the manual one, nothing is released twice.
    for event in [*stripe.events[mark:], held]:
        await stripe_sends(harness, event)
    await harness.settle(quiet_s=1.5)
    await _assert_manual_payment_alone(harness, cart, payment_id, captured=0)
    assert len(scripted.sent("POST", f"/v1/payment_intents/{intent_id}/cancel")) == len(cancels)
    summary = await _summary(harness, cart)
    assert (summary["holds_to_release"], summary["released_holds"]) == (0, 1)
    assert summary["needs_attention"] == []


async def test_a_charge_finished_late_on_another_session_is_refunded_at_stripe(
    capturing_harness: ServiceHarness, scripted: ScriptedStripe, stripe: FaithfulStripe
) -> None:
    harness = capturing_harness
    cart = _cart()
    intent_id, payment_id = await _three_d_secure_then_manual(harness, stripe, cart)

    # The challenge finished late with automatic capture: Stripe charged the card.
    mark = len(stripe.events)
    at_stripe(scripted, lambda: stripe.authenticate(intent_id))
    intent = stripe.intents[intent_id]
    assert (intent["status"], intent["amount_received"]) == ("succeeded", AMOUNT)
    emitted = stripe.events[mark:]
    assert [e["type"] for e in emitted] == ["charge.captured", "payment_intent.succeeded"]
    # Both of Stripe's events, the intent's first (Stripe guarantees no order).
    for event in reversed(emitted):
        await stripe_sends(harness, event)

    async def refunded_at_stripe() -> bool:
        return any(r["status"] == "succeeded" for r in _refunds_of(stripe, intent_id))

    await eventually(refunded_at_stripe, f"the late charge on {intent_id} refunded at Stripe")

    async def released_booked() -> bool:
        collection = await harness.collection(cart)
        return collection is not None and not collection.voids and bool(collection.released_holds)

    await eventually(released_booked, "the release booked")
    (refund,) = _refunds_of(stripe, intent_id)
    assert refund["amount"] == AMOUNT
    assert [i["id"] for i in _intents_of(stripe, cart) if _live(stripe, i)] == []
    collection = await harness.collection(cart)
    assert collection is not None
    (released,) = collection.released_holds
    assert (released.reference, released.how, released.amount) == (intent_id, "refund", AMOUNT)

    # Redeliveries of the charge's events and the refund's own events: no second refund.
    for event in [*emitted, *stripe.events[mark + len(emitted) :]]:
        await stripe_sends(harness, event)
    await harness.settle(quiet_s=1.5)
    assert len(_refunds_of(stripe, intent_id)) == 1
    # `capture: true` is the Stripe adapter's option: the manual payment only holds.
    await _assert_manual_payment_alone(harness, cart, payment_id, captured=0)
    summary = await _summary(harness, cart)
    assert (summary["holds_to_release"], summary["released_holds"]) == (0, 1)
    assert summary["needs_attention"] == []


# -- sequence 3(a): a dashboard refund before its capture -----------------------------------


async def test_a_dashboard_refund_delivered_before_the_capture_ends_at_stripes_totals(
    harness: ServiceHarness, scripted: ScriptedStripe, stripe: FaithfulStripe
) -> None:
    cart = _cart()
    await harness.publish("cart.updated", builders.cart_updated(cart, AMOUNT, region_id="eu"))
    await harness.publish(
        "checkout.completed",
        builders.checkout_completed(
            cart, AMOUNT, provider_id="stripe", region_id="eu", payment_method=PM_VISA
        ),
    )
    authorized = await harness.await_event("payment.authorized", cart_id=cart, timeout=WAIT_S)
    payment_id = authorized.data["payment_id"]
    (intent,) = _intents_of(stripe, cart)
    intent_id = intent["id"]

    # In the dashboard: the payment captured, then 1800 refunded (pending, then
    # succeeded). Nothing of ours is on the refund: the service looks the cart up.
    mark = len(stripe.events)

    def dashboard() -> str:
        status, _ = stripe.capture(intent_id)
        assert status == 200
        status, refund = stripe.refund(intent_id, 1800, status="pending")
        assert status == 200
        stripe.settle_refund(refund["id"], "succeeded")
        return str(refund["id"])

    refund_id = at_stripe(scripted, dashboard)
    emitted = stripe.events[mark:]
    assert [e["type"] for e in emitted] == [
        "charge.captured",
        "payment_intent.succeeded",
        "refund.created",
        "refund.updated",
        "charge.refund.updated",
        "charge.refunded",
    ]
    captured_at_stripe = stripe.intents[intent_id]["amount_received"]
    refunded_at_stripe = sum(
        r["amount"] for r in _refunds_of(stripe, intent_id) if r["status"] == "succeeded"
    )
    assert (captured_at_stripe, refunded_at_stripe) == (AMOUNT, 1800)

    # Delivered in reverse: every refund event before the capture's, the refund's
    # `pending` after its `succeeded`. The refund cannot apply before its capture is
    # booked: it is kept (not consumed and dropped) until the capture's events come.
    refund_events, capture_events = emitted[2:], emitted[:2]
    for event in reversed(refund_events):
        await stripe_sends(harness, event)

    async def refund_kept() -> bool:
        return bool((await _summary(harness, cart))["facts_kept"])

    await eventually(refund_kept, "the refund kept until its capture is booked")
    summary = await _summary(harness, cart)
    assert (summary["captured_total"], summary["refunded_total"]) == (0, 0)
    for event in reversed(capture_events):
        await stripe_sends(harness, event)

    async def at_stripes_totals() -> bool:
        collection = await harness.collection(cart)
        payment = collection.payment if collection is not None else None
        return payment is not None and (payment.captured_total, payment.refunded_total) == (
            captured_at_stripe,
            refunded_at_stripe,
        )

    await eventually(
        at_stripes_totals, f"books at Stripe's totals ({AMOUNT} captured, 1800 refunded)"
    )
    refunded = await harness.await_event("payment.refunded", cart_id=cart, timeout=WAIT_S)
    assert refunded.data["payment_id"] == payment_id
    assert (refunded.data["amount"], refunded.data["refunded_total"]) == (1800, 1800)

    # Stripe redelivers everything, in its own order this time: nothing changes.
    for event in emitted:
        await stripe_sends(harness, event)
    await harness.settle(quiet_s=1.5)
    assert len(harness.events("payment.refunded", cart_id=cart)) == 1
    captures = harness.events("payment.captured", cart_id=cart)
    assert [(c.data["amount"], c.data["captured_total"]) for c in captures] == [(AMOUNT, AMOUNT)]
    assert harness.events("payment.failed", cart_id=cart) == []
    collection = await harness.collection(cart)
    assert collection is not None and collection.payment is not None
    assert [r.amount for r in collection.payment.refunds] == [1800]
    summary = await _summary(harness, cart)
    assert {
        k: summary[k]
        for k in (
            "payment_id",
            "authorized_amount",
            "captured_total",
            "refunded_total",
            "pending_operations",
            "facts_kept",
            "needs_attention",
        )
    } == {
        "payment_id": payment_id,
        "authorized_amount": AMOUNT,
        "captured_total": captured_at_stripe,
        "refunded_total": refunded_at_stripe,
        "pending_operations": 0,
        "facts_kept": 0,
        "needs_attention": [],
    }
    assert stripe.refunds[refund_id]["status"] == "succeeded"
