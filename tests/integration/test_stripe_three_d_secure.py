"""3-D Secure as a storefront finishes it, from the published event only.

The storefront sees `payment.requires_action` and nothing else of ours: with its
`action` (`type`, `payment_intent_id`, `client_secret`) it has Stripe.js finish
the challenge (here: localstripe's authentication endpoint, which is what
Stripe.js calls), and Stripe tells the service by webhook —
`payment_intent.amount_capturable_updated` for a manual-capture intent — which
the service turns into `payment.authorized`. The webhook body is Stripe's event
around the PaymentIntent as localstripe holds it, with the fields localstripe
leaves out (`amount_capturable`) filled in as Stripe's API reference documents
them, signed with this test's secret, and POSTed to the service's HTTP endpoint.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from service.testing import builders
from service.testing.harness import ServiceHarness
from tests.fixtures.stripe.kit import event, sign, stripe_service
from tests.support.localstripe import LocalStripe

pytestmark = pytest.mark.integration

SECRET = "whsec_three_d_secure_test"
THREE_DS_CARD = "4000000000003220"


@pytest.fixture(scope="module")
async def harness(
    kafka_bootstrap: str, mongodb_url: str, localstripe: LocalStripe
) -> AsyncIterator[ServiceHarness]:
    async with stripe_service(
        kafka_bootstrap, mongodb_url, localstripe, webhook_secret=SECRET
    ) as h:
        yield h


async def _stripe_sends(harness: ServiceHarness, event_type: str, intent: dict[str, Any]) -> None:
    body = json.dumps(event(event_type, intent, event_id=f"evt_{uuid.uuid4().hex[:24]}")).encode()
    async with httpx.AsyncClient(timeout=10.0) as client:
        answer = await client.post(
            f"http://127.0.0.1:{harness.app.http_port}/webhooks/stripe",
            content=body,
            headers={"content-type": "application/json", "Stripe-Signature": sign(body, SECRET)},
        )
    assert answer.status_code == 200, answer.text


async def test_storefront_finishes_3ds_with_the_published_action_only(
    harness: ServiceHarness, localstripe: LocalStripe
) -> None:
    cart = f"cart_{uuid.uuid4().hex[:12]}"
    card = await localstripe.create_card_payment_method(THREE_DS_CARD)
    await harness.publish("cart.updated", builders.cart_updated(cart, 7300, region_id="eu"))
    await harness.publish(
        "checkout.completed",
        builders.checkout_completed(
            cart, 7300, provider_id="stripe", region_id="eu", payment_method=card
        ),
    )

    # -- the storefront's side: only what `payment.requires_action` says --------------
    requires = await harness.await_event("payment.requires_action", cart_id=cart, timeout=30)
    action = requires.data["action"]
    assert action["type"] == "use_stripe_sdk"  # in-page 3-D Secure: Stripe.js needs…
    intent_id = action["payment_intent_id"]  # …the intent
    client_secret = action["client_secret"]  # …and its client secret
    assert client_secret.startswith(f"{intent_id}_secret_")
    assert requires.data["amount"] == 7300
    await localstripe.complete_authentication(intent_id, client_secret, success=True)

    # -- Stripe's side: the intent is authorized, and Stripe says so by webhook -------
    intent = await localstripe.payment_intent(intent_id)
    assert intent["status"] == "requires_capture"
    assert intent["metadata"]["cart_id"] == cart
    intent.setdefault("amount_capturable", intent["amount"])
    intent.setdefault("amount_received", 0)
    await _stripe_sends(harness, "payment_intent.amount_capturable_updated", intent)

    authorized = await harness.await_event("payment.authorized", cart_id=cart, timeout=30)
    assert authorized.data["amount"] == 7300
    assert authorized.data["session_id"] == requires.data["session_id"]
    assert authorized.data["provider_id"] == "stripe"
    collection = await harness.collection(cart)
    assert collection is not None and collection.payment is not None
    assert collection.payment.data["id"] == intent_id

    # Stripe retries the delivery; nothing new happens.
    await _stripe_sends(harness, "payment_intent.amount_capturable_updated", intent)
    await harness.settle(quiet_s=1.0)
    assert len(harness.events("payment.authorized", cart_id=cart)) == 1
    assert harness.events("payment.failed", cart_id=cart) == []


async def test_storefront_3ds_failure_reaches_the_storefront_as_failed(
    harness: ServiceHarness, localstripe: LocalStripe
) -> None:
    cart = f"cart_{uuid.uuid4().hex[:12]}"
    card = await localstripe.create_card_payment_method(THREE_DS_CARD)
    await harness.publish("cart.updated", builders.cart_updated(cart, 2500, region_id="eu"))
    await harness.publish(
        "checkout.completed",
        builders.checkout_completed(
            cart, 2500, provider_id="stripe", region_id="eu", payment_method=card
        ),
    )
    action = (await harness.await_event("payment.requires_action", cart_id=cart, timeout=30)).data[
        "action"
    ]
    await localstripe.complete_authentication(
        action["payment_intent_id"], action["client_secret"], success=False
    )
    intent = await localstripe.payment_intent(action["payment_intent_id"])
    assert intent["status"] == "requires_payment_method"
    if not intent.get("last_payment_error"):  # Stripe sets it on a failed authentication
        intent["last_payment_error"] = {
            "type": "card_error",
            "code": "payment_intent_authentication_failure",
            "message": "We are unable to authenticate your payment method.",
        }
    await _stripe_sends(harness, "payment_intent.payment_failed", intent)

    failed = await harness.await_event("payment.failed", cart_id=cart, timeout=30)
    assert failed.data["operation"] == "authorize"
    assert harness.events("payment.authorized", cart_id=cart) == []
