"""The Stripe provider without I/O: options, registry wiring, webhook signatures."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from service.adapters.providers import PROVIDER_FACTORIES, ProviderConfigError
from service.adapters.providers.stripe import DEFAULT_API_BASE, StripeOptions, StripeProvider
from service.domain.capabilities import Capabilities
from service.ports.providers import PaymentProvider, WebhookVerificationError
from tests.fixtures.stripe.kit import event, load, sign

SECRET = "whsec_test"
NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
async def provider() -> AsyncIterator[StripeProvider]:
    built = StripeProvider({"api_key": "sk_test_x", "webhook_secret": SECRET})
    yield built
    await built.close()


def body_and_headers(
    timestamp: datetime = NOW, secret: str = SECRET
) -> tuple[bytes, dict[str, str]]:
    pi = load("payment_intent_succeeded.json", session_id="ps_1", cart_id="cart_1")
    body = json.dumps(event("payment_intent.succeeded", pi)).encode()
    return body, {"stripe-signature": sign(body, secret, int(timestamp.timestamp()))}


async def test_registry_builds_it_from_options_and_it_satisfies_the_port() -> None:
    built = PROVIDER_FACTORIES["stripe"]({"api_key": "sk_test_x"}, cast(Any, None))
    try:
        assert isinstance(built, PaymentProvider)
        assert built.id == "stripe"
        assert built.capture_on_authorize is False
        assert cast(StripeProvider, built).api_base == DEFAULT_API_BASE
    finally:
        await built.close()


async def test_capture_option_means_capture_on_authorization() -> None:
    built = StripeProvider({"api_key": "sk_test_x", "capture": True, "api_base": "http://x/"})
    try:
        assert built.capture_on_authorize is True
        assert built.api_base == "http://x"
        assert "sk_test_x" not in repr(built)
    finally:
        await built.close()


@pytest.mark.parametrize("multicapture", [False, True])
async def test_capabilities_follow_the_options(multicapture: bool) -> None:
    """Stripe keeps keys for 24 hours, refunds can be pending, and without
    multicapture a partial capture releases the rest (issue 22)."""
    built = StripeProvider({"api_key": "sk_test_x", "multicapture": multicapture})
    try:
        assert built.capabilities == Capabilities(
            multicapture=multicapture,
            partial_capture_releases_rest=not multicapture,
            refunds_can_be_pending=True,
            idempotency_window_s=24 * 3600,
        )
    finally:
        await built.close()


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"api_key": ""},
        {"api_key": 42},
        {"api_key": "sk_test_x", "capture": "yes"},
        {"api_key": "sk_test_x", "captrue": True},
        {"api_key": "sk_test_x", "payment_method_types": "card"},
        {"api_key": "sk_test_x", "timeout_s": 0},
        {"api_key": "sk_test_x", "webhook_secret": ""},
    ],
)
def test_bad_options_stop_start_up(options: dict[str, Any]) -> None:
    with pytest.raises(ProviderConfigError, match="PAYMENTS_PROVIDER_OPTIONS"):
        StripeProvider(options)


def test_option_errors_name_the_option_but_never_repeat_a_secret() -> None:
    with pytest.raises(ProviderConfigError) as error:
        StripeProvider({"api_key": ["sk_test_pasted_as_a_list"], "webhook_secrets": "whsec_abcd"})

    message = str(error.value)
    assert "stripe.api_key" in message
    assert "stripe.webhook_secrets" in message
    assert "sk_test_pasted_as_a_list" not in message
    assert "whsec_abcd" not in message


def test_options_keep_their_defaults_and_clean_their_strings() -> None:
    options = StripeOptions.parse({"api_key": " sk_test_x\n", "webhook_secret": "whsec_a "})

    assert options.api_key == "sk_test_x"
    assert options.all_webhook_secrets() == ("whsec_a",)
    assert (options.capture, options.multicapture) == (False, False)
    assert options.payment_method_types == ["card"]
    assert options.timeout_s == 20.0


def test_correct_signature_verifies(provider: StripeProvider) -> None:
    body, headers = body_and_headers()

    provider.verify_webhook(headers, body, NOW)
    # Header names are case-insensitive; a second (rotated) v1 signature is fine.
    rotated = headers["stripe-signature"] + ",v1=" + "0" * 64
    provider.verify_webhook({"Stripe-Signature": rotated}, body, NOW + timedelta(seconds=299))


@pytest.mark.parametrize(
    "tamper",
    [
        "body",
        "secret",
        "missing",
        "garbled",
        "old",
        "future",
        "no_v1",
    ],
)
def test_bad_signatures_are_refused(provider: StripeProvider, tamper: str) -> None:
    body, headers = body_and_headers()
    now = NOW
    if tamper == "body":
        body = body.replace(b'"amount_received": 5000', b'"amount_received": 9000')
        assert b"9000" in body
    elif tamper == "secret":
        body, headers = body_and_headers(secret="whsec_other")
    elif tamper == "missing":
        headers = {}
    elif tamper == "garbled":
        headers = {"stripe-signature": "nonsense"}
    elif tamper == "old":
        now = NOW + timedelta(seconds=301)
    elif tamper == "future":
        now = NOW - timedelta(seconds=301)
    elif tamper == "no_v1":
        headers = {"stripe-signature": headers["stripe-signature"].replace("v1=", "v0=")}

    with pytest.raises(WebhookVerificationError):
        provider.verify_webhook(headers, body, now)


async def test_without_a_secret_every_webhook_is_refused() -> None:
    built = StripeProvider({"api_key": "sk_test_x"})
    try:
        body, headers = body_and_headers()
        with pytest.raises(WebhookVerificationError, match="webhook_secret"):
            built.verify_webhook(headers, body, NOW)
    finally:
        await built.close()


def test_interpret_webhook_reads_the_event(provider: StripeProvider) -> None:
    body, headers = body_and_headers()

    action = provider.interpret_webhook(headers, body.decode())

    assert action is not None
    assert (action.meaning, action.cart_id, action.session_id, action.amount) == (
        "captured",
        "cart_1",
        "ps_1",
        5000,
    )
