"""The webhook topic is not proof: its consumer verifies Stripe's signature again.

A `payment.provider_webhook` event is written straight to the topic, as anything
with produce rights on it could (issue 13: a hand-made `payment_intent.succeeded`
with a cart's metadata used to publish `payment.authorized`/`payment.captured`
for an unpaid cart). A forged one becomes an `unauthorized` dead letter and
nothing else; a genuine one replayed later (new CloudEvent id, old signature,
long past the HTTP tolerance) verifies and, repeating what is recorded, changes
nothing.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from service.domain.statuses import CollectionStatus
from service.testing import builders
from service.testing.harness import ReceivedEvent, ServiceHarness
from tests.fixtures.stripe.kit import event, load, sign, stripe_service
from tests.support.localstripe import LocalStripe

pytestmark = pytest.mark.integration

SECRET = "whsec_topic_test_current"
OLD_SECRET = "whsec_topic_test_rotated_out"


@pytest.fixture(scope="module")
async def harness(
    kafka_bootstrap: str, mongodb_url: str, localstripe: LocalStripe
) -> AsyncIterator[ServiceHarness]:
    async with stripe_service(
        kafka_bootstrap,
        mongodb_url,
        localstripe,
        webhook_secret=SECRET,
        webhook_secrets=[OLD_SECRET],
    ) as h:
        yield h


def _z(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


async def _write_to_topic(
    harness: ServiceHarness, body: bytes, signature: str | None, *, received: datetime
) -> str:
    """A `payment.provider_webhook` event produced directly, bypassing HTTP."""
    headers = {"content-type": "application/json"}
    if signature is not None:
        headers["stripe-signature"] = signature
    return await harness.publish(
        "payment.provider_webhook",
        {
            "provider_id": "stripe",
            "received_at": _z(received),
            "headers": headers,
            "payload": body.decode(),
        },
        key="stripe",
    )


async def _authorized(harness: ServiceHarness, cart: str) -> tuple[str, str, str]:
    await harness.publish("cart.updated", builders.cart_updated(cart, 5000, region_id="eu"))
    await harness.publish(
        "checkout.completed",
        builders.checkout_completed(
            cart, 5000, provider_id="stripe", region_id="eu", payment_method="pm_card_visa"
        ),
    )
    authorized = await harness.await_event("payment.authorized", cart_id=cart, timeout=30)
    collection = await harness.collection(cart)
    assert collection is not None
    session = collection.session_for("stripe")
    assert session is not None
    return authorized.data["payment_id"], authorized.data["session_id"], str(session.data["id"])


def _letter_of(event_id: str) -> Callable[[ReceivedEvent], bool]:
    return lambda r: event_id in str(r.data.get("value", ""))


def _letters_for(harness: ServiceHarness, event_id: str) -> list[ReceivedEvent]:
    return [
        r
        for r in harness.events("payments.dead_letter")
        if event_id in str(r.data.get("value", ""))
    ]


async def test_forged_webhooks_on_the_topic_are_dead_lettered_and_change_nothing(
    harness: ServiceHarness, localstripe: LocalStripe
) -> None:
    cart = f"cart_{uuid.uuid4().hex[:12]}"
    _, session_id, intent_id = await _authorized(harness, cart)
    before = await harness.collection(cart)
    assert before is not None
    pi = load("payment_intent_succeeded.json", session_id=session_id, cart_id=cart)
    pi.update(id=intent_id, amount_received=5000)
    body = json.dumps(event("payment_intent.succeeded", pi)).encode()
    now = datetime.now(UTC)
    forgeries: dict[str, Any] = {
        "unsigned": (body, None),
        "attacker's secret": (body, sign(body, "whsec_attacker")),
        "genuine signature, other body": (
            body,
            sign(body.replace(intent_id.encode(), b"pi_other"), SECRET),
        ),
    }
    ids = {
        name: await _write_to_topic(harness, payload, signature, received=now)
        for name, (payload, signature) in forgeries.items()
    }

    for name, event_id in ids.items():
        letter = await harness.await_event(
            "payments.dead_letter", predicate=_letter_of(event_id), timeout=30
        )
        assert letter.data["error"]["kind"] == "unauthorized", name
        assert "does not verify" in letter.data["error"]["detail"], name
    await harness.settle(quiet_s=1.0)
    assert harness.events("payment.captured", cart_id=cart) == []
    after = await harness.collection(cart)
    assert after is not None and after.payment is not None
    assert after.status == CollectionStatus.AUTHORIZED
    assert after.payment.captures == []
    assert (await localstripe.payment_intent(intent_id))["status"] == "requires_capture"


async def test_replayed_genuine_webhook_verifies_and_has_no_effect(
    harness: ServiceHarness, localstripe: LocalStripe
) -> None:
    cart = f"cart_{uuid.uuid4().hex[:12]}"
    _, session_id, intent_id = await _authorized(harness, cart)
    await localstripe.capture(intent_id)  # in the dashboard
    pi = load("payment_intent_succeeded.json", session_id=session_id, cart_id=cart)
    pi.update(id=intent_id, amount_received=5000)
    body = json.dumps(event("payment_intent.succeeded", pi)).encode()
    # Signed two days ago with the secret since rotated out, and received then.
    signed_at = datetime.now(UTC) - timedelta(days=2)
    signature = sign(body, OLD_SECRET, int(signed_at.timestamp()))

    first = await _write_to_topic(harness, body, signature, received=signed_at)
    captured = await harness.await_event("payment.captured", cart_id=cart, timeout=30)
    assert captured.event["causationid"] == first  # verified, and applied once
    replay = await _write_to_topic(harness, body, signature, received=signed_at)

    await harness.settle(quiet_s=1.5)
    assert _letters_for(harness, first) == _letters_for(harness, replay) == []
    assert len(harness.events("payment.captured", cart_id=cart)) == 1
    collection = await harness.collection(cart)
    assert collection is not None and collection.payment is not None
    assert collection.payment.captured_total == 5000
