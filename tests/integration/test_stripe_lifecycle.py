"""The payment lifecycle with `stripe` as the provider, end to end.

Kafka and MongoDB are the real embedded servers, Stripe is localstripe: events go
in through the broker, the service calls the official SDK over HTTP, and every
step is checked on three sides — the outbound events, the stored collection and
the PaymentIntent as localstripe holds it.

localstripe has one capture per PaymentIntent (a partial capture releases the
rest, as Stripe does without multicapture), so the second partial capture here
is Stripe's refusal; several partial captures with multicapture are covered at
the adapter boundary in ``test_stripe_adapter_recorded.py``.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from schemas.envelope import CLOUDEVENTS_CONTENT_TYPE
from service.domain.model import PaymentCollection
from service.domain.statuses import CollectionStatus, SessionStatus
from service.testing import builders
from service.testing.harness import ReceivedEvent, ServiceHarness
from tests.fixtures.stripe.kit import stripe_service
from tests.support.localstripe import TEST_API_KEY, LocalStripe

pytestmark = pytest.mark.integration

REGIONS = {"eu": ["manual", "stripe"]}
THREE_DS_CARD = "4000000000003220"


@pytest.fixture(scope="module")
async def harness(
    kafka_bootstrap: str, mongodb_url: str, localstripe: LocalStripe
) -> AsyncIterator[ServiceHarness]:
    async with stripe_service(
        kafka_bootstrap, mongodb_url, localstripe, regions=REGIONS, webhook_secret="whsec_test"
    ) as h:
        yield h


def _cart() -> str:
    return f"cart_{uuid.uuid4().hex[:12]}"


def _caused_by(event_id: str) -> Callable[[ReceivedEvent], bool]:
    return lambda r: r.event.get("causationid") == event_id


async def _collection(harness: ServiceHarness, cart: str, **expect: Any) -> PaymentCollection:
    """The stored collection once it matches `expect` (attribute → value)."""
    collection = None
    for _ in range(150):
        collection = await harness.collection(cart)
        if collection is not None and all(getattr(collection, k) == v for k, v in expect.items()):
            return collection
        await harness.settle(quiet_s=0.1, timeout=0.1)
    raise AssertionError(f"collection for {cart} never matched {expect}: {collection}")


def _stripe_session_data(collection: PaymentCollection) -> dict[str, Any]:
    session = collection.session_for("stripe")
    assert session is not None
    return dict(session.data)


def _assert_outbound(received: ReceivedEvent, cart: str, cause: str) -> None:
    assert received.key == cart
    assert received.headers.get("content-type") == CLOUDEVENTS_CONTENT_TYPE
    assert received.event["causationid"] == cause
    assert received.data["cart_id"] == cart
    assert received.data["provider_id"] == "stripe"


async def _authorized(
    harness: ServiceHarness, cart: str, amount: int = 5000, payment_method: str = "pm_card_visa"
) -> tuple[str, str]:
    """cart.updated + checkout with `payment_method`; the payment id and intent id."""
    await harness.publish("cart.updated", builders.cart_updated(cart, amount, region_id="eu"))
    await harness.publish(
        "checkout.completed",
        builders.checkout_completed(
            cart, amount, provider_id="stripe", region_id="eu", payment_method=payment_method
        ),
    )
    authorized = await harness.await_event("payment.authorized", cart_id=cart, timeout=30)
    collection = await _collection(harness, cart)
    return authorized.data["payment_id"], str(_stripe_session_data(collection)["id"])


async def test_lifecycle_update_authorize_capture_refund(
    harness: ServiceHarness, localstripe: LocalStripe
) -> None:
    cart = _cart()

    # cart.updated → one session per provider; the stripe one holds a tagged intent.
    await harness.publish(
        "cart.updated", builders.cart_updated(cart, 5000, region_id="eu", version=1)
    )
    collection = await _collection(harness, cart, status=CollectionStatus.AWAITING)
    assert sorted(s.provider_id for s in collection.sessions) == ["manual", "stripe"]
    data = _stripe_session_data(collection)
    intent_id = str(data["id"])
    assert data["client_secret"].startswith(intent_id)
    assert TEST_API_KEY not in repr(collection.model_dump())
    intent = await localstripe.payment_intent(intent_id)
    stripe_session = collection.session_for("stripe")
    assert stripe_session is not None
    assert intent["metadata"] == {"session_id": stripe_session.id, "cart_id": cart}
    assert intent["amount"] == 5000

    # A newer cart total updates the same intent.
    await harness.publish(
        "cart.updated", builders.cart_updated(cart, 7000, region_id="eu", version=2)
    )
    collection = await _collection(harness, cart, amount=7000)
    for _ in range(100):
        if int((await localstripe.payment_intent(intent_id))["amount"]) == 7000:
            break
        await harness.settle(quiet_s=0.1, timeout=0.1)
    assert int((await localstripe.payment_intent(intent_id))["amount"]) == 7000
    assert _stripe_session_data(await _collection(harness, cart))["id"] == intent_id

    # checkout → authorized at Stripe (manual capture) → payment.authorized.
    checkout = await harness.publish(
        "checkout.completed",
        builders.checkout_completed(
            cart, 7000, provider_id="stripe", region_id="eu", payment_method="pm_card_visa"
        ),
    )
    authorized = await harness.await_event("payment.authorized", cart_id=cart, timeout=30)
    _assert_outbound(authorized, cart, checkout)
    assert authorized.data["amount"] == 7000
    payment_id = authorized.data["payment_id"]
    assert (await localstripe.payment_intent(intent_id))["status"] == "requires_capture"
    collection = await _collection(harness, cart, status=CollectionStatus.AUTHORIZED)
    statuses = {s.provider_id: s.status for s in collection.sessions}
    assert statuses == {"stripe": SessionStatus.AUTHORIZED, "manual": SessionStatus.CANCELED}

    # Partial capture 3000 of 7000.
    cap1 = await harness.publish("admin.payment.capture", builders.capture(payment_id, 3000))
    captured = await harness.await_event(
        "payment.captured", cart_id=cart, predicate=_caused_by(cap1), timeout=30
    )
    _assert_outbound(captured, cart, cap1)
    assert (captured.data["amount"], captured.data["captured_total"]) == (3000, 3000)
    # Without multicapture Stripe's capture is final and releases the rest (issue 22):
    # nothing is left to capture.
    assert (captured.data["fully_captured"], captured.data["released_amount"]) == (True, 4000)
    intent = await localstripe.payment_intent(intent_id)
    assert intent["status"] == "succeeded"
    assert intent["latest_charge"]["captured"] is True

    # Partial refunds 1000 ("damaged": kept in metadata) and 500.
    ref1 = await harness.publish(
        "admin.payment.refund", builders.refund(payment_id, 1000, reason="damaged")
    )
    refunded = await harness.await_event(
        "payment.refunded", cart_id=cart, predicate=_caused_by(ref1), timeout=30
    )
    _assert_outbound(refunded, cart, ref1)
    assert (refunded.data["amount"], refunded.data["refunded_total"]) == (1000, 1000)
    assert refunded.data["reason"] == "damaged"
    ref2 = await harness.publish("admin.payment.refund", builders.refund(payment_id, 500))
    refunded2 = await harness.await_event(
        "payment.refunded", cart_id=cart, predicate=_caused_by(ref2), timeout=30
    )
    assert (refunded2.data["amount"], refunded2.data["refunded_total"]) == (500, 1500)

    # More than is left (3000 - 1500): refused by the service, Stripe never asked.
    ref3 = await harness.publish("admin.payment.refund", builders.refund(payment_id, 2000))
    failed = await harness.await_event(
        "payment.failed", cart_id=cart, predicate=_caused_by(ref3), timeout=30
    )
    assert (failed.data["operation"], failed.data["reason"]) == (
        "refund",
        "amount_exceeds_captured",
    )

    # A second partial capture: Stripe (without multicapture) released the rest, and
    # the books say so: refused by the service (issue 22), not by Stripe.
    cap2 = await harness.publish("admin.payment.capture", builders.capture(payment_id, 2000))
    refused = await harness.await_event(
        "payment.failed", cart_id=cart, predicate=_caused_by(cap2), timeout=30
    )
    assert (refused.data["operation"], refused.data["reason"]) == (
        "capture",
        "amount_exceeds_authorized",
    )

    # Books and Stripe agree.
    collection = await _collection(harness, cart)
    payment = collection.payment
    assert payment is not None
    assert (payment.captured_total, payment.refunded_total, payment.pending) == (3000, 1500, [])
    ours = [r for r in await localstripe.refunds(intent_id) if r["metadata"]]
    assert sorted(r["amount"] for r in ours) == [500, 1000]
    assert {r["metadata"]["payment_id"] for r in ours} == {payment_id}
    await harness.settle(quiet_s=0.5)
    assert len(harness.events("payment.authorized", cart_id=cart)) == 1
    assert len(harness.events("payment.captured", cart_id=cart)) == 1
    assert len(harness.events("payment.refunded", cart_id=cart)) == 2


async def test_full_capture_then_partial_refunds_to_zero(
    harness: ServiceHarness, localstripe: LocalStripe
) -> None:
    cart = _cart()
    payment_id, intent_id = await _authorized(harness, cart)

    cap = await harness.publish("admin.payment.capture", builders.capture(payment_id))
    captured = await harness.await_event(
        "payment.captured", cart_id=cart, predicate=_caused_by(cap), timeout=30
    )
    assert (captured.data["amount"], captured.data["fully_captured"]) == (5000, True)
    for amount, total in ((2000, 2000), (3000, 5000)):
        ref = await harness.publish("admin.payment.refund", builders.refund(payment_id, amount))
        refunded = await harness.await_event(
            "payment.refunded", cart_id=cart, predicate=_caused_by(ref), timeout=30
        )
        assert refunded.data["refunded_total"] == total
    ref = await harness.publish("admin.payment.refund", builders.refund(payment_id))
    failed = await harness.await_event(
        "payment.failed", cart_id=cart, predicate=_caused_by(ref), timeout=30
    )
    assert failed.data["reason"] == "amount_exceeds_captured"

    collection = await _collection(harness, cart, status=CollectionStatus.COMPLETED)
    assert collection.payment is not None and collection.payment.refunded_total == 5000
    ours = [r for r in await localstripe.refunds(intent_id) if r["metadata"]]
    assert sorted(r["amount"] for r in ours) == [2000, 3000]


async def test_declined_card(harness: ServiceHarness, localstripe: LocalStripe) -> None:
    cart = _cart()
    await harness.publish("cart.updated", builders.cart_updated(cart, 5000, region_id="eu"))
    checkout = await harness.publish(
        "checkout.completed",
        builders.checkout_completed(
            cart,
            5000,
            provider_id="stripe",
            region_id="eu",
            payment_method="pm_card_chargeCustomerFail",
        ),
    )

    failed = await harness.await_event("payment.failed", cart_id=cart, timeout=30)

    _assert_outbound(failed, cart, checkout)
    assert (failed.data["operation"], failed.data["reason"]) == ("authorize", "declined")
    assert failed.data["retryable"] is False
    assert "declined" in failed.data["message"]
    collection = await _collection(harness, cart, status=CollectionStatus.FAILED)
    session = collection.session_for("stripe")
    assert session is not None and session.status == SessionStatus.ERROR
    assert collection.payment is None
    intent = await localstripe.payment_intent(str(session.data["id"]))
    assert intent["status"] == "requires_payment_method"
    assert intent["last_payment_error"]["code"] == "card_declined"
    await harness.settle(quiet_s=0.5)
    assert harness.events("payment.authorized", cart_id=cart) == []


@pytest.mark.parametrize("passes", [True, False])
async def test_three_d_secure(
    harness: ServiceHarness, localstripe: LocalStripe, passes: bool
) -> None:
    cart = _cart()
    card = await localstripe.create_card_payment_method(THREE_DS_CARD)
    key = builders.new_id("idem")
    await harness.publish("cart.updated", builders.cart_updated(cart, 5000, region_id="eu"))
    first = await harness.publish(
        "checkout.completed",
        builders.checkout_completed(
            cart,
            5000,
            idempotency_key=key,
            provider_id="stripe",
            region_id="eu",
            payment_method=card,
        ),
    )

    action = await harness.await_event("payment.requires_action", cart_id=cart, timeout=30)
    _assert_outbound(action, cart, first)
    assert action.data["amount"] == 5000
    assert action.data["action"]["type"] == "use_stripe_sdk"
    collection = await _collection(harness, cart)
    session = collection.session_for("stripe")
    assert session is not None and session.status == SessionStatus.REQUIRES_MORE
    intent_id = str(session.data["id"])
    assert (await localstripe.payment_intent(intent_id))["status"] == "requires_action"

    # The customer completes (or fails) the challenge with Stripe.js; the storefront
    # re-sends the checkout with the same idempotency key.
    await localstripe.complete_authentication(
        intent_id, str(session.data["client_secret"]), success=passes
    )
    second = await harness.publish(
        "checkout.completed",
        builders.checkout_completed(
            cart,
            5000,
            idempotency_key=key,
            provider_id="stripe",
            region_id="eu",
            payment_method=card,
        ),
    )

    if passes:
        authorized = await harness.await_event("payment.authorized", cart_id=cart, timeout=30)
        _assert_outbound(authorized, cart, second)
        assert authorized.data["amount"] == 5000
        assert (await localstripe.payment_intent(intent_id))["status"] == "requires_capture"
    else:
        failed = await harness.await_event("payment.failed", cart_id=cart, timeout=30)
        _assert_outbound(failed, cart, second)
        assert failed.data["reason"] == "declined"
    await harness.settle(quiet_s=0.5)
    assert len(harness.events("payment.requires_action", cart_id=cart)) == 1


async def test_cancel_voids_the_authorization(
    harness: ServiceHarness, localstripe: LocalStripe
) -> None:
    cart = _cart()
    payment_id, intent_id = await _authorized(harness, cart)

    cmd = await harness.publish("admin.payment.cancel", builders.cancel(payment_id))

    canceled = await harness.await_event(
        "payment.canceled", cart_id=cart, predicate=_caused_by(cmd), timeout=30
    )
    _assert_outbound(canceled, cart, cmd)
    assert (await localstripe.payment_intent(intent_id))["status"] == "canceled"
    await _collection(harness, cart, status=CollectionStatus.CANCELED)


async def test_checkout_before_any_cart_update_authorizes_the_sessions_own_intent(
    harness: ServiceHarness, localstripe: LocalStripe
) -> None:
    # The contract lets checkout.completed come first: the session is created and
    # initiated in the same decision as the authorization, which must then confirm
    # the intent initiate created (not a second one, which Stripe's idempotency key
    # would hide and localstripe does not).
    cart = _cart()
    await harness.publish(
        "checkout.completed",
        builders.checkout_completed(
            cart, 5000, provider_id="stripe", region_id="eu", payment_method="pm_card_visa"
        ),
    )

    await harness.await_event("payment.authorized", cart_id=cart, timeout=30)

    collection = await _collection(harness, cart, status=CollectionStatus.AUTHORIZED)
    intent_id = str(_stripe_session_data(collection)["id"])
    assert collection.payment is not None and collection.payment.data["id"] == intent_id
    intent = await localstripe.payment_intent(intent_id)
    assert intent["status"] == "requires_capture"
    assert intent["metadata"]["cart_id"] == cart
    assert [pi["id"] for pi in await localstripe.payment_intents(cart_id=cart)] == [intent_id]
