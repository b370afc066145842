"""Stripe facts for the domain (issue 22): what the events of a real sequence mean
(the faithful fake emits an event for every state change), and what the audit reads
(`read_objects`). Each fact names the PaymentIntent; an event's fact carries its
``evt_…`` id; PaymentIntent facts carry `capturable`; captures are cumulative."""

from __future__ import annotations

import json
from typing import Any

import pytest

from service.adapters.providers.stripe import StripeProvider
from service.adapters.providers.stripe_mapping import interpret_event
from service.domain.outcomes import OutcomeKind
from service.ports.providers import ProviderUnavailable, WebhookAction
from tests.fixtures.stripe.faithful import PM_VISA, FaithfulStripe, stripe_provider
from tests.fixtures.stripe.kit import ScriptedStripe, load
from tests.support.call_builders import stripe_call as call


@pytest.fixture
async def provider(multicapture: Any) -> Any:
    """These facts are read with multicapture on."""
    return multicapture


async def authorized(provider: StripeProvider, **values: Any) -> dict[str, Any]:
    session = await provider.initiate(call("initiate", "ps_1:initiate", data={}, **values))
    outcome = await provider.authorize(
        call(
            "authorize",
            "auth_1",
            data=session.data,
            payment_data={"payment_method": PM_VISA},
            **values,
        )
    )
    assert outcome.kind is OutcomeKind.SUCCEEDED
    return outcome.data


def facts(stripe: FaithfulStripe, since: int = 0) -> list[tuple[str, WebhookAction]]:
    """Every event emitted since `since`, with the fact it means (events meaning
    nothing to us left out)."""
    read = [(e["id"], interpret_event(json.dumps(e))) for e in stripe.events[since:]]
    return [(event_id, fact) for event_id, fact in read if fact is not None]


def summary(fact: WebhookAction) -> tuple[Any, ...]:
    return (fact.meaning, fact.amount, fact.capturable)


# -- events -------------------------------------------------------------------------------


async def test_the_events_of_a_multicaptured_payment_say_what_each_object_is_now(
    provider: StripeProvider, stripe: FaithfulStripe
) -> None:
    data = await authorized(provider)
    intent_id = data["id"]
    await provider.capture(call("capture", "cap_1", 2000, data=data, final_capture=False))
    await provider.capture(call("capture", "cap_2", 1000, data=data))  # final: 2000 released
    stripe.refund_status = "pending"
    refund = await provider.refund(call("refund", "ref_1", 500, data=data))
    assert refund.reference is not None
    stripe.settle_refund(refund.reference, "failed", "lost_or_stolen_card")

    read = facts(stripe)

    assert all(event_id == fact.event_id for event_id, fact in read)
    assert all(fact.provider_reference == intent_id for _, fact in read)
    assert all(fact.cart_id == "cart_1" for _, fact in read if fact.meaning != "disputed")
    money = [summary(f) for _, f in read if f.meaning in ("authorized", "captured")]
    assert money == [
        ("authorized", 5000, 5000),
        ("captured", 2000, None),  # charge.captured: cumulative, capturable not said
        ("captured", 2000, 3000),  # the intent: 2000 in, 3000 still held
        ("captured", 3000, None),
        ("captured", 3000, 0),  # succeeded: the rest released
    ]
    refunds = [
        (f.meaning, f.data["refund_id"], f.data["provider_key"])
        for _, f in read
        if f.meaning.startswith("refund_")
    ]
    assert refunds == [
        ("refund_pending", refund.reference, "ref_1"),
        ("refund_failed", refund.reference, "ref_1"),  # refund.updated
        ("refund_failed", refund.reference, "ref_1"),  # charge.refund.updated
        ("refund_failed", refund.reference, "ref_1"),  # refund.failed
    ]


async def test_a_partial_capture_without_multicapture_releases_the_rest(
    scripted: ScriptedStripe, stripe: FaithfulStripe
) -> None:
    provider = stripe_provider(scripted)
    try:
        data = await authorized(provider)
        before = len(stripe.events)
        await provider.capture(call("capture", "cap_1", 3000, data=data))
    finally:
        await provider.close()

    (succeeded,) = [f for _, f in facts(stripe, before) if f.capturable is not None]
    assert summary(succeeded) == ("captured", 3000, 0)
    assert provider.capabilities.partial_capture_releases_rest


async def test_dashboard_refunds_and_disputes_name_the_intent_for_the_cart_lookup(
    provider: StripeProvider, stripe: FaithfulStripe
) -> None:
    data = await authorized(provider)
    stripe.capture(data["id"])
    before = len(stripe.events)
    stripe.refund(data["id"], 700)  # in the dashboard: no metadata of ours
    dispute = stripe.dispute(data["id"])

    read = [f for _, f in facts(stripe, before)]
    refunded = next(f for f in read if f.meaning == "refund_succeeded")
    disputed = next(f for f in read if f.meaning == "disputed")
    assert (refunded.cart_id, refunded.provider_reference, refunded.amount) == (
        None,
        data["id"],
        700,
    )
    assert refunded.data["provider_key"] is None
    assert (disputed.provider_reference, disputed.data["dispute_id"]) == (data["id"], dispute["id"])


# -- read_objects ---------------------------------------------------------------------------


async def test_read_objects_reads_the_intent_its_refunds_and_its_disputes(
    provider: StripeProvider, stripe: FaithfulStripe
) -> None:
    data = await authorized(provider)
    audit = call("capture", "audit", data=data)
    (held,) = await provider.read_objects(audit)
    assert summary(held) == ("authorized", 5000, 5000)

    await provider.capture(call("capture", "cap_1", 2000, data=data, final_capture=False))
    await provider.refund(call("refund", "ref_1", 500, data=data))
    stripe.refund(data["id"], 300)  # the dashboard's
    dispute = stripe.dispute(data["id"], 1200)

    read = await provider.read_objects(audit)

    assert [f.meaning for f in read] == [
        "captured",
        "refund_succeeded",
        "refund_succeeded",
        "disputed",
    ]
    assert summary(read[0]) == ("captured", 2000, 3000)
    assert [f.amount for f in read[1:3]] == [300, 500], "newest first, as Stripe lists"
    assert [f.data["provider_key"] for f in read[1:3]] == [None, "ref_1"]
    assert read[3].data["dispute_id"] == dispute["id"]
    assert all(f.event_id is None for f in read)
    assert all((f.cart_id, f.session_id) == ("cart_1", "ps_1") for f in read)
    assert all(f.provider_reference == data["id"] for f in read)


async def test_read_objects_reads_a_canceled_intent_and_what_it_captured_before(
    provider: StripeProvider, stripe: FaithfulStripe
) -> None:
    data = await authorized(provider)
    stripe.capture(data["id"], 2000, final=False)
    stripe.expire(data["id"])

    read = await provider.read_objects(call("capture", "audit", data=data))

    assert [summary(f) for f in read] == [("captured", 2000, 0), ("canceled", None, 0)]


async def test_read_objects_of_nothing_or_of_another_cart_is_no_fact(
    provider: StripeProvider,
) -> None:
    data = await authorized(provider)

    assert await provider.read_objects(call("capture", "audit", data={})) == []
    assert await provider.read_objects(call("capture", "a", data=data, cart_id="cart_2")) == []


async def test_read_objects_raises_provider_unavailable_when_stripe_cannot_be_read(
    scripted: ScriptedStripe, provider: StripeProvider
) -> None:
    data = await authorized(provider)
    scripted.route("GET", "/v1/disputes", (401, load("error_authentication.json")))

    with pytest.raises(ProviderUnavailable):
        await provider.read_objects(call("capture", "audit", data=data))
    scripted.down = True
    with pytest.raises(ProviderUnavailable):
        await provider.read_objects(call("capture", "audit", data=data))


# -- the cart lookup of a webhook -----------------------------------------------------------


async def test_a_webhook_is_dropped_only_for_an_intent_stripe_does_not_have(
    scripted: ScriptedStripe, provider: StripeProvider, stripe: FaithfulStripe
) -> None:
    data = await authorized(provider)
    stripe.capture(data["id"])
    dispute = stripe.dispute(data["id"])
    payload = json.dumps(stripe.events[-1])

    resolved = await provider.resolve_webhook({}, payload)
    assert resolved is not None and (resolved.cart_id, resolved.session_id) == ("cart_1", "ps_1")
    assert resolved.event_id == stripe.events[-1]["id"]
    assert resolved.data["dispute_id"] == dispute["id"]

    # A rotated key is no proof the intent is not ours: the webhook is retried.
    scripted.route(
        "GET", f"/v1/payment_intents/{data['id']}", (401, load("error_authentication.json"))
    )
    with pytest.raises(ProviderUnavailable):
        await provider.resolve_webhook({}, payload)
    missing = {"error": {"type": "invalid_request_error", "code": "resource_missing"}}
    scripted.route("GET", f"/v1/payment_intents/{data['id']}", (404, missing))
    assert await provider.resolve_webhook({}, payload) is None
