"""The Stripe adapter's issue-22 answers against localstripe (real HTTP, a stateful
fake Stripe): every outcome names its Stripe object, the status query's errors are
*could not tell*, and the audit's read (`read_objects`) lists the intent's refunds.

localstripe leaves `amount_received`/`amount_capturable` out of its intents, so
the amounts of intent facts are proven on the faithful fake
(tests/unit/stripe/test_stripe_facts.py); here the wiring is, over HTTP.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from service.adapters.providers.stripe import StripeProvider
from service.domain.calls import CallOperation, ProviderCall
from service.domain.outcomes import OutcomeKind
from tests.support.localstripe import TEST_API_KEY, LocalStripe

pytestmark = pytest.mark.integration


@pytest.fixture
async def provider(localstripe: LocalStripe) -> AsyncIterator[StripeProvider]:
    built = StripeProvider({"api_key": TEST_API_KEY, "api_base": localstripe.api_base})
    yield built
    await built.close()


def calls(session_id: str, cart_id: str) -> Any:
    def call(operation: CallOperation, key: str, amount: int = 5000, **values: Any) -> ProviderCall:
        return ProviderCall(
            operation=operation,
            provider_id="stripe",
            idempotency_key=key,
            session_id=session_id,
            amount=amount,
            currency_code="usd",
            cart_id=cart_id,
            payment_id="pay_1",
            **values,
        )

    return call


async def test_outcomes_name_the_intent_and_the_refund_and_the_audit_reads_them(
    provider: StripeProvider, localstripe: LocalStripe
) -> None:
    session_id, cart_id = f"ps_{uuid.uuid4().hex[:10]}", f"cart_{uuid.uuid4().hex[:10]}"
    call = calls(session_id, cart_id)
    initiated = await provider.initiate(call("initiate", f"{session_id}:initiate", data={}))
    data = initiated.data
    authorized = await provider.authorize(
        call("authorize", "auth_1", data=data, payment_data={"payment_method": "pm_card_visa"})
    )
    captured = await provider.capture(call("capture", "cap_1", data=authorized.data))
    refunded = await provider.refund(call("refund", "ref_1", 1500, data=authorized.data))
    audit = call("capture", "audit", data=authorized.data)
    read = await provider.read_objects(audit)

    intent_id = data["id"]
    assert initiated.reference == authorized.reference == captured.reference == intent_id
    (refund,) = await localstripe.refunds(intent_id)
    assert (refunded.kind, refunded.reference, refunded.amount) == (
        OutcomeKind.SUCCEEDED,
        refund["id"],
        1500,
    )
    refunds = [f for f in read if f.meaning == "refund_succeeded"]
    assert [(f.data["refund_id"], f.amount, f.data["provider_key"]) for f in refunds] == [
        (refund["id"], 1500, "ref_1")
    ]
    assert all(
        (f.cart_id, f.provider_reference, f.event_id) == (cart_id, intent_id, None) for f in read
    )
    # Another cart's payment does not see this intent's objects.
    other = calls(session_id, "cart_other")("capture", "audit", data=authorized.data)
    assert await provider.read_objects(other) == []


async def test_a_status_query_of_an_intent_stripe_does_not_show_could_not_tell(
    provider: StripeProvider,
) -> None:
    call = calls("ps_missing", "cart_missing")
    data = {"id": "pi_doesnotexist000000"}

    for operation in ("authorize", "capture", "cancel", "refund"):
        outcome = await provider.get_status(call(operation, "k", data=data))
        assert outcome.kind is OutcomeKind.UNKNOWN and not outcome.is_not_found, (
            operation,
            outcome,
        )
