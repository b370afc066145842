"""Stripe webhooks over HTTP, end to end: signature → `payment.provider_webhook` → effect.

Bodies are Stripe events built from the fixtures and the real PaymentIntents in
localstripe, signed with Stripe's scheme (``kit.sign``: HMAC-SHA256 of
``"<t>.<body>"``), and POSTed to the running service. The last test has localstripe
itself deliver a signed event, so the verification also accepts a signer that is
not ours.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from schemas.topics import PAYMENT_PROVIDER_WEBHOOK, topic_for
from service.domain.statuses import CollectionStatus
from service.testing import builders
from service.testing.harness import ServiceHarness
from service.tools.kafka_io import stop_consumer, topic_partitions
from tests.fixtures.stripe.kit import event, load, sign
from tests.support.localstripe import TEST_API_KEY, LocalStripe

pytestmark = pytest.mark.integration

SECRET = "whsec_test"
REGIONS = {"eu": ["manual", "stripe"]}


def _harness(kafka_bootstrap: str, mongodb_url: str, localstripe: LocalStripe) -> ServiceHarness:
    return ServiceHarness(
        kafka_bootstrap,
        mongodb_url,
        providers=["manual", "stripe"],
        region_providers=REGIONS,
        provider_options={
            "stripe": {
                "api_key": TEST_API_KEY,
                "api_base": localstripe.api_base,
                "webhook_secret": SECRET,
            }
        },
    )


@pytest.fixture(scope="module")
async def harness(
    kafka_bootstrap: str, mongodb_url: str, localstripe: LocalStripe
) -> AsyncIterator[ServiceHarness]:
    async with _harness(kafka_bootstrap, mongodb_url, localstripe) as h:
        yield h


# -- helpers ------------------------------------------------------------------------------


def _cart() -> str:
    return f"cart_{uuid.uuid4().hex[:12]}"


def _url(harness: ServiceHarness, provider_id: str = "stripe") -> str:
    return f"http://127.0.0.1:{harness.app.http_port}/webhooks/{provider_id}"


async def _post(
    harness: ServiceHarness, body: bytes, headers: dict[str, str], provider_id: str = "stripe"
) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10.0) as client:
        return await client.post(
            _url(harness, provider_id),
            content=body,
            headers={"content-type": "application/json", **headers},
        )


def _signed(
    payload: dict[str, Any], *, timestamp: int | None = None
) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(payload, indent=2).encode()
    return body, {"Stripe-Signature": sign(body, SECRET, timestamp)}


async def _webhook_topic_size(harness: ServiceHarness) -> int:
    """Records ever written to this harness's `payment.provider_webhook` topic."""
    topic = topic_for(PAYMENT_PROVIDER_WEBHOOK, harness.prefix)
    consumer = AIOKafkaConsumer(bootstrap_servers=harness.kafka_bootstrap, group_id=None)
    await consumer.start()
    try:
        # Asks the broker: the consumer's own metadata cache stays empty on Apache Kafka.
        partitions = await topic_partitions(consumer, topic)
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
        return sum(ends.values())
    finally:
        await stop_consumer(consumer)


async def _webhook_payloads(harness: ServiceHarness, expected: int) -> list[str]:
    """The raw payloads on the webhook topic, once at least `expected` are there."""
    topic = topic_for(PAYMENT_PROVIDER_WEBHOOK, harness.prefix)
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=harness.kafka_bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    payloads: list[str] = []
    try:
        deadline = time.monotonic() + 20
        while len(payloads) < expected and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=300)).values():
                payloads.extend(json.loads(r.value)["data"]["payload"] for r in records)
    finally:
        await stop_consumer(consumer)
    return payloads


async def _authorized(
    harness: ServiceHarness, cart: str, amount: int = 5000
) -> tuple[str, str, str]:
    """A stripe payment authorized at localstripe: payment id, session id, intent id."""
    await harness.publish("cart.updated", builders.cart_updated(cart, amount, region_id="eu"))
    await harness.publish(
        "checkout.completed",
        builders.checkout_completed(
            cart, amount, provider_id="stripe", region_id="eu", payment_method="pm_card_visa"
        ),
    )
    authorized = await harness.await_event("payment.authorized", cart_id=cart, timeout=30)
    return (
        authorized.data["payment_id"],
        authorized.data["session_id"],
        str((await harness.collection(cart)).session_for("stripe").data["id"]),  # type: ignore[union-attr]
    )


def _succeeded_event(cart: str, session_id: str, intent_id: str, received: int) -> dict[str, Any]:
    """The `payment_intent.succeeded` Stripe sends once `received` is captured."""
    intent = load("payment_intent_succeeded.json", session_id=session_id, cart_id=cart)
    intent.update(id=intent_id, amount=5000, amount_received=received, amount_capturable=0)
    return event("payment_intent.succeeded", intent, event_id=f"evt_{uuid.uuid4().hex[:24]}")


def _captures(harness: ServiceHarness, cart: str) -> list[Any]:
    """The distinct `payment.captured` events of `cart`: delivery is at least once, so
    the relay may publish an event the consumer published too (same id, same
    capture) on a loaded machine; a second capture would be a second id."""
    distinct = {r.id: r for r in harness.events("payment.captured", cart_id=cart)}
    return list(distinct.values())


# -- tests --------------------------------------------------------------------------------


async def test_signed_succeeded_webhook_captures_once_and_repeats_change_nothing(
    harness: ServiceHarness, localstripe: LocalStripe
) -> None:
    cart = _cart()
    payment_id, session_id, intent_id = await _authorized(harness, cart)
    # Captured at Stripe outside the service (e.g. in the dashboard): only the
    # webhook tells the service.
    await localstripe.capture(intent_id)
    body, headers = _signed(_succeeded_event(cart, session_id, intent_id, 5000))

    answer = await _post(harness, body, headers)

    assert answer.status_code == 200, answer.text
    webhook_event_id = answer.json()["id"]
    captured = await harness.await_event("payment.captured", cart_id=cart, timeout=30)
    assert captured.event["causationid"] == webhook_event_id
    assert captured.data["payment_id"] == payment_id
    assert (captured.data["amount"], captured.data["captured_total"]) == (5000, 5000)
    assert captured.data["fully_captured"] is True
    collection = await harness.collection(cart)
    assert collection is not None and collection.payment is not None
    assert collection.status == CollectionStatus.COMPLETED
    assert [(c.amount, c.source) for c in collection.payment.captures] == [(5000, "webhook")]

    # The same delivery again, and Stripe's retry of it (same body, new signature
    # timestamp): accepted, published, and without effect.
    again = await _post(harness, body, headers)
    retried_body, retried_headers = _signed(json.loads(body), timestamp=int(time.time()) + 1)
    assert retried_body == body
    retried = await _post(harness, retried_body, retried_headers)
    assert again.status_code == retried.status_code == 200
    assert again.json()["id"] == retried.json()["id"] == webhook_event_id
    payloads = await _webhook_payloads(harness, expected=3)
    assert sum(intent_id in p for p in payloads) == 3
    await harness.settle(quiet_s=1.0)
    assert len(_captures(harness, cart)) == 1
    collection = await harness.collection(cart)
    assert collection is not None and collection.payment is not None
    assert collection.payment.captured_total == 5000


@pytest.mark.parametrize("webhook_first", [True, False])
async def test_webhook_racing_an_admin_capture_yields_one_capture(
    harness: ServiceHarness, localstripe: LocalStripe, webhook_first: bool
) -> None:
    """Each interleaving, several times over: a dashboard capture's webhook against
    an admin capture of the same payment (Stripe refuses the second capture)."""
    carts = [_cart() for _ in range(3)]
    setups = await asyncio.gather(*(_authorized(harness, cart) for cart in carts))

    async def race(cart: str, setup: tuple[str, str, str], delay: float) -> None:
        payment_id, session_id, intent_id = setup
        await localstripe.capture(intent_id)
        body, headers = _signed(_succeeded_event(cart, session_id, intent_id, 5000))

        async def webhook() -> None:
            await asyncio.sleep(0 if webhook_first else delay)
            assert (await _post(harness, body, headers)).status_code == 200

        async def admin() -> None:
            await asyncio.sleep(delay if webhook_first else 0)
            await harness.publish("admin.payment.capture", builders.capture(payment_id))

        await asyncio.gather(webhook(), admin())

    await asyncio.gather(
        *(
            race(cart, setup, d)
            for cart, setup, d in zip(carts, setups, (0.0, 0.05, 0.3), strict=True)
        )
    )

    for cart in carts:
        await harness.await_event("payment.captured", cart_id=cart, timeout=30)
    await harness.settle(quiet_s=1.5)
    for cart, (_, _, intent_id) in zip(carts, setups, strict=True):
        captures = _captures(harness, cart)
        assert len(captures) == 1, [c.data for c in captures]
        assert captures[0].data["captured_total"] == 5000
        collection = await harness.collection(cart)
        assert collection is not None and collection.payment is not None
        assert collection.payment.captured_total == 5000
        assert collection.payment.pending == []
        assert collection.status == CollectionStatus.COMPLETED
        # The admin capture either lost to the webhook (nothing left to capture) or
        # reached Stripe after the dashboard (refused) — never a second capture.
        for failed in harness.events("payment.failed", cart_id=cart):
            assert failed.data["operation"] == "capture"
            assert failed.data["reason"] in ("amount_exceeds_authorized", "provider_error")
        assert (await localstripe.payment_intent(intent_id))["status"] == "succeeded"


async def test_webhook_for_our_own_capture_arriving_with_its_answer_yields_one_capture(
    harness: ServiceHarness, localstripe: LocalStripe
) -> None:
    """Stripe sends the webhook as soon as the capture happens, racing the service's
    storing of the capture call's answer."""
    cart = _cart()
    payment_id, session_id, intent_id = await _authorized(harness, cart)
    body, headers = _signed(_succeeded_event(cart, session_id, intent_id, 5000))

    await harness.publish("admin.payment.capture", builders.capture(payment_id))
    deadline = time.monotonic() + 30
    while (await localstripe.payment_intent(intent_id))["status"] != "succeeded":
        assert time.monotonic() < deadline, "the admin capture never reached Stripe"
        await asyncio.sleep(0.005)
    assert (await _post(harness, body, headers)).status_code == 200

    await harness.await_event("payment.captured", cart_id=cart, timeout=30)
    await _webhook_payloads(harness, expected=1)
    await harness.settle(quiet_s=1.5)
    assert len(_captures(harness, cart)) == 1
    assert harness.events("payment.failed", cart_id=cart) == []
    collection = await harness.collection(cart)
    assert collection is not None and collection.payment is not None
    assert (collection.payment.captured_total, collection.payment.pending) == (5000, [])


async def test_unverified_webhooks_get_400_or_404_and_publish_nothing(
    kafka_bootstrap: str, mongodb_url: str, localstripe: LocalStripe
) -> None:
    async with _harness(kafka_bootstrap, mongodb_url, localstripe) as fresh:
        pi = load("payment_intent_succeeded.json", session_id="ps_x", cart_id="cart_x")
        body, headers = _signed(event("payment_intent.succeeded", pi))
        stale_body, stale_headers = _signed(
            event("payment_intent.succeeded", pi), timestamp=int(time.time()) - 600
        )
        forged = {"Stripe-Signature": sign(body, "whsec_not_ours")}
        tampered = body.replace(b'"amount_received": 5000', b'"amount_received": 50000')
        assert tampered != body

        answers = {
            "wrong secret": await _post(fresh, body, forged),
            "tampered body": await _post(fresh, tampered, headers),
            "no signature": await _post(fresh, body, {}),
            "stale timestamp": await _post(fresh, stale_body, stale_headers),
            "manual has no webhooks": await _post(fresh, body, headers, provider_id="manual"),
            "unknown provider": await _post(fresh, body, headers, provider_id="paypal"),
        }

        assert {name: a.status_code for name, a in answers.items()} == {
            "wrong secret": 400,
            "tampered body": 400,
            "no signature": 400,
            "stale timestamp": 400,
            "manual has no webhooks": 400,
            "unknown provider": 404,
        }
        assert await _webhook_topic_size(fresh) == 0
        # The check can see a record: the correctly signed one is published.
        assert (await _post(fresh, body, headers)).status_code == 200
        assert await _webhook_topic_size(fresh) == 1
        await fresh.settle(quiet_s=0.5)
        assert fresh.received == []  # cart_x has no collection: nothing to apply


async def test_webhook_delivered_and_signed_by_localstripe_is_accepted(
    harness: ServiceHarness, localstripe: LocalStripe
) -> None:
    # Last in this module: from here on localstripe posts its events to the service.
    before = await _webhook_topic_size(harness)
    await localstripe.register_webhook(_url(harness), SECRET, ["payment_intent.succeeded"])
    cart = _cart()
    payment_id, _, intent_id = await _authorized(harness, cart)

    await harness.publish("admin.payment.capture", builders.capture(payment_id))
    await harness.await_event("payment.captured", cart_id=cart, timeout=30)

    payloads = await _webhook_payloads(harness, expected=before + 1)
    delivered = [json.loads(p) for p in payloads if intent_id in p]
    assert [d["type"] for d in delivered] == ["payment_intent.succeeded"]
    assert delivered[0]["data"]["object"]["metadata"]["cart_id"] == cart
    await harness.settle(quiet_s=1.0)
    assert len(_captures(harness, cart)) == 1
