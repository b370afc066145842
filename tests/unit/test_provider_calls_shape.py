"""Provider adapters without I/O: the manual provider, option checks, protocol shape."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

import pytest

from service.adapters.providers import (
    ManualProvider,
    ProviderConfigError,
    ProviderRegistry,
    SandboxProvider,
    UnknownProviderError,
)
from service.domain.calls import CallOperation, ProviderCall
from service.domain.outcomes import OutcomeKind
from service.ports.providers import PaymentProvider, WebhookVerificationError
from service.settings import Settings
from tests.support.call_builders import provider_call

NO_DATABASE = cast(Any, None)


def call(operation: CallOperation, **values: Any) -> ProviderCall:
    return provider_call(operation, "manual", "k1", **values)


def test_providers_satisfy_the_port() -> None:
    assert isinstance(ManualProvider(), PaymentProvider)


async def test_manual_authorizes_at_once() -> None:
    provider = ManualProvider()

    outcome = await provider.authorize(call("authorize"))

    assert outcome.kind is OutcomeKind.SUCCEEDED
    assert not outcome.captured
    assert (await provider.get_status(call("authorize"))).kind is OutcomeKind.SUCCEEDED


async def test_manual_captures_on_authorize_when_configured() -> None:
    provider = ManualProvider({"capture": True})

    assert provider.capture_on_authorize
    assert (await provider.authorize(call("authorize"))).captured


@pytest.mark.parametrize("operation", ["capture", "refund", "cancel", "initiate", "delete"])
async def test_manual_bookkeeping_succeeds(operation: CallOperation) -> None:
    outcome = await getattr(ManualProvider(), operation)(call(operation, payment_id="pay_1"))

    assert outcome.kind is OutcomeKind.SUCCEEDED


async def test_manual_session_data() -> None:
    provider = ManualProvider()

    updated = await provider.update_data(call("update_data", payment_data={"note": "x"}))

    assert updated.data == {"note": "x"}
    assert await provider.payment_data(call("authorize")) == {}
    assert await provider.list_payment_methods("cus_1") == []


def test_manual_has_no_webhooks() -> None:
    provider = ManualProvider()

    with pytest.raises(WebhookVerificationError):
        provider.verify_webhook({}, b"{}", datetime.now(UTC))
    assert provider.interpret_webhook({}, "{}") is None


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"capture": "yes"}, "sandbox.capture must be true or false"),
        ({"captrue": True}, "unknown option(s) 'captrue'"),
        ({"fail_rate": 1.5}, "sandbox.fail_rate must be between 0 and 1"),
        ({"lose_rate": True}, "sandbox.lose_rate must be a number"),
        ({"delay_s": -1}, "sandbox.delay_s must be >= 0"),
        ({"seed": 1.5}, "sandbox.seed must be an integer"),
    ],
)
def test_sandbox_rejects_bad_options(options: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ProviderConfigError) as error:
        SandboxProvider(NO_DATABASE, options)

    assert "PAYMENTS_PROVIDER_OPTIONS" in str(error.value)
    assert fragment in str(error.value)


def test_registry_names_the_variable_for_an_unknown_provider() -> None:
    with pytest.raises(UnknownProviderError, match=r"^PAYMENTS_PROVIDERS: .*'paypal'"):
        ProviderRegistry(Settings(providers=["manual", "paypal"]), NO_DATABASE)


def test_registry_rejects_a_provider_listed_twice() -> None:
    with pytest.raises(ProviderConfigError, match="more than once: manual"):
        ProviderRegistry(Settings(providers=["manual", "manual"]), NO_DATABASE)
