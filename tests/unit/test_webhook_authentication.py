"""Webhooks authenticated where they are applied, secret rotation, the body limit.

The consumer of `payment.provider_webhook` re-verifies each event with
:class:`service.webhook_intake.WebhookVerifier` (the topic is not proof); the HTTP side
refuses bodies over the limit with 413 before it verifies or publishes anything.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from schemas.inbound import ProviderWebhook
from service.adapters.providers import ProviderConfigError
from service.adapters.providers.manual import ManualProvider
from service.adapters.providers.stripe import StripeProvider
from service.entrypoints.http import build_http_app
from service.ports.providers import WebhookVerificationError
from service.webhook_intake import WebhookVerifier
from tests.fixtures.stripe.kit import event, load, sign

OLD = "whsec_old_secret"
NEW = "whsec_new_secret"


def _body() -> bytes:
    pi = load("payment_intent_succeeded.json", session_id="ps_1", cart_id="cart_1")
    return json.dumps(event("payment_intent.succeeded", pi), indent=2).encode()


def _webhook(
    body: bytes, signature: str | None, *, provider_id: str = "stripe", received_days_ago: int = 0
) -> ProviderWebhook:
    received = datetime.now(UTC) - timedelta(days=received_days_ago)
    headers = {"content-type": "application/json"}
    if signature is not None:
        headers["stripe-signature"] = signature
    return ProviderWebhook.model_validate(
        {
            "provider_id": provider_id,
            "received_at": received.isoformat().replace("+00:00", "Z"),
            "headers": headers,
            "payload": body.decode(),
        }
    )


@pytest.fixture
async def stripe_provider() -> AsyncIterator[StripeProvider]:
    built = StripeProvider(
        {"api_key": "sk_test_x", "webhook_secret": NEW, "webhook_secrets": [OLD]}
    )
    yield built
    await built.close()


@pytest.fixture
def verifier(stripe_provider: StripeProvider) -> WebhookVerifier:
    return WebhookVerifier({"stripe": stripe_provider, "manual": ManualProvider()})


def test_genuine_webhook_verifies_on_the_topic_however_old(verifier: WebhookVerifier) -> None:
    body = _body()
    # Signed a week ago: far outside the HTTP tolerance, still Stripe's own message.
    week_ago = int((datetime.now(UTC) - timedelta(days=7)).timestamp())
    assert verifier(_webhook(body, sign(body, NEW, week_ago), received_days_ago=7)) is None


@pytest.mark.parametrize(
    "case",
    ["no signature", "wrong secret", "tampered payload", "signature of another body"],
)
def test_forged_webhooks_on_the_topic_are_refused(verifier: WebhookVerifier, case: str) -> None:
    body = _body()
    tampered = body.replace(b'"amount_received": 5000', b'"amount_received": 50000')
    assert tampered != body
    webhook = {
        "no signature": _webhook(body, None),
        "wrong secret": _webhook(body, sign(body, "whsec_attacker")),
        "tampered payload": _webhook(tampered, sign(body, NEW)),
        "signature of another body": _webhook(body, sign(b"{}", NEW)),
    }[case]
    detail = verifier(webhook)
    assert detail is not None and "does not verify" in detail


def test_providers_without_webhooks_and_unknown_providers_are_refused(
    verifier: WebhookVerifier,
) -> None:
    body = _body()
    manual = verifier(_webhook(body, sign(body, NEW), provider_id="manual"))
    assert manual is not None and "manual" in manual
    unknown = verifier(_webhook(body, sign(body, NEW), provider_id="paypal"))
    assert unknown is not None and "not installed" in unknown


@pytest.mark.parametrize("secret", [OLD, NEW])
def test_rotation_every_configured_secret_verifies(
    stripe_provider: StripeProvider, secret: str
) -> None:
    body = _body()
    now = datetime.now(UTC)
    headers = {"Stripe-Signature": sign(body, secret, int(now.timestamp()))}
    stripe_provider.verify_webhook(headers, body, now)
    stripe_provider.verify_webhook_signature(headers, body)


def test_rotation_header_signed_with_both_secrets_verifies(
    stripe_provider: StripeProvider,
) -> None:
    """During a roll Stripe sends one `v1` per active secret in a single header."""
    body = _body()
    now = int(datetime.now(UTC).timestamp())
    unknown = sign(body, "whsec_retired", now)
    old = sign(body, OLD, now)
    header = unknown + ",v1=" + old.split("v1=")[1]
    stripe_provider.verify_webhook_signature({"stripe-signature": header}, body)


async def test_removed_secret_no_longer_verifies() -> None:
    only_new = StripeProvider({"api_key": "sk_test_x", "webhook_secret": NEW})
    try:
        body = _body()
        with pytest.raises(WebhookVerificationError):
            only_new.verify_webhook_signature({"stripe-signature": sign(body, OLD)}, body)
    finally:
        await only_new.close()


async def test_http_tolerance_still_applies_at_intake(stripe_provider: StripeProvider) -> None:
    body = _body()
    now = datetime.now(UTC)
    stale = {"stripe-signature": sign(body, NEW, int(now.timestamp()) - 600)}
    with pytest.raises(WebhookVerificationError, match="tolerance"):
        stripe_provider.verify_webhook(stale, body, now)
    stripe_provider.verify_webhook_signature(stale, body)  # the topic's check has none


@pytest.mark.parametrize("bad", ["whsec", [""], [3], {"a": "b"}])
def test_webhook_secrets_option_is_checked(bad: Any) -> None:
    with pytest.raises(ProviderConfigError, match="webhook_secrets"):
        StripeProvider({"api_key": "sk_test_x", "webhook_secrets": bad})


async def test_http_webhook_body_over_the_limit_gets_413_and_reaches_nothing() -> None:
    received: list[bytes] = []

    async def webhooks(provider_id: str, headers: dict[str, str], body: bytes) -> Any:
        received.append(body)
        return 200, {"received": True}

    async def ready() -> dict[str, bool]:
        return {}

    app = build_http_app(ready, lambda: (b"", "text/plain"), webhooks, webhook_max_body_bytes=100)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
        assert (await client.post("/webhooks/stripe", content=b"x" * 101)).status_code == 413

        async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: the stream counts
            yield b"x" * 60
            yield b"x" * 60

        assert (await client.post("/webhooks/stripe", content=chunked())).status_code == 413
        assert received == []
        assert (await client.post("/webhooks/stripe", content=b"x" * 100)).status_code == 200
        assert received == [b"x" * 100]


@pytest.mark.parametrize("signature", ["t=1,v1=éé", "t=1,v1=" + "é" * 64])
def test_regression_non_ascii_stripe_signature_is_refused_not_raised(
    verifier: WebhookVerifier, stripe_provider: StripeProvider, signature: str
) -> None:
    """Found by the transport fuzzer: the SDK's comparison raised TypeError on it."""
    body = _body()
    detail = verifier(_webhook(body, signature))
    assert detail is not None and "does not verify" in detail
    with pytest.raises(WebhookVerificationError):
        stripe_provider.verify_webhook({"stripe-signature": signature}, body, datetime.now(UTC))
