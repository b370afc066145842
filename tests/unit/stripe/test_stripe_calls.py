"""The Stripe adapter's calls on the issue-22 port, against the faithful Stripe fake
(in process, through the official SDK): the objects outcomes name, the parameters a
capture sends (and sends again), and what a key reused with other parameters means.
"""

from __future__ import annotations

from typing import Any

from service.adapters.providers.stripe import StripeProvider
from service.domain.outcomes import OutcomeKind
from service.provider_calls import ProviderCaller, RetryPolicy
from tests.fixtures.stripe.faithful import (
    PM_DECLINED,
    PM_VISA,
    FaithfulStripe,
)
from tests.fixtures.stripe.kit import ScriptedStripe
from tests.support.call_builders import stripe_call as call

CALLER = ProviderCaller(RetryPolicy(timeout_s=10, max_attempts=3, base_delay_s=0.0))


async def authorized(
    provider: StripeProvider, key: str = "auth_1", **values: Any
) -> dict[str, Any]:
    """Initiate the session and authorize it with a visa card: the payment's data."""
    session = await provider.initiate(call("initiate", "ps_1:initiate", data={}, **values))
    outcome = await provider.authorize(
        call(
            "authorize",
            key,
            data=session.data,
            payment_data={"payment_method": PM_VISA},
            **values,
        )
    )
    assert outcome.kind is OutcomeKind.SUCCEEDED, outcome
    return outcome.data


def captures(scripted: ScriptedStripe, intent_id: str) -> list[dict[str, str]]:
    return [r.form for r in scripted.sent("POST", f"/v1/payment_intents/{intent_id}/capture")]


# -- references --------------------------------------------------------------------------


async def test_every_attempt_on_a_session_names_its_one_payment_intent(
    provider: StripeProvider, stripe: FaithfulStripe
) -> None:
    session = await provider.initiate(call("initiate", "ps_1:initiate", data={}))
    declined = await provider.authorize(
        call("authorize", "auth_a", data=session.data, payment_data={"payment_method": PM_DECLINED})
    )
    approved = await provider.authorize(
        call("authorize", "auth_b", data=session.data, payment_data={"payment_method": PM_VISA})
    )
    asked = await provider.get_status(call("authorize", "auth_b", data=session.data))

    (intent,) = stripe.intents_of("ps_1")
    assert declined.kind is OutcomeKind.DECLINED and approved.kind is OutcomeKind.SUCCEEDED
    assert session.reference == declined.reference == approved.reference == intent["id"]
    assert asked.reference == intent["id"]


async def test_captures_and_cancels_name_the_intent_refunds_their_refund(
    provider: StripeProvider, stripe: FaithfulStripe
) -> None:
    data = await authorized(provider)
    intent_id = data["id"]

    captured = await provider.capture(call("capture", "cap_1", 5000, data=data))
    refunded = await provider.refund(call("refund", "ref_1", 1000, data=data))
    refund_status = await provider.get_status(call("refund", "ref_1", 1000, data=data))
    canceled = await provider.cancel(call("cancel", "can_1", data=data))

    assert captured.reference == intent_id
    (refund,) = stripe.refunds.values()
    assert refunded.reference == refund_status.reference == refund["id"]
    assert refunded.reference is not None and refunded.reference.startswith("re_")
    assert (refunded.kind, refunded.amount) == (OutcomeKind.SUCCEEDED, 1000)
    # A captured intent cannot be canceled: Stripe's refusal still names it.
    assert (canceled.kind, canceled.reference) == (OutcomeKind.FAILED, intent_id)


async def test_a_pending_refund_names_its_refund_until_it_settles(
    provider: StripeProvider, stripe: FaithfulStripe
) -> None:
    data = await authorized(provider)
    await provider.capture(call("capture", "cap_1", 5000, data=data))
    stripe.refund_status = "pending"

    pending = await provider.refund(call("refund", "ref_1", 1000, data=data))
    (refund,) = stripe.refunds.values()
    stripe.settle_refund(refund["id"], "failed", "expired_or_canceled_card")
    failed = await provider.get_status(call("refund", "ref_1", 1000, data=data))

    assert (pending.kind, pending.reference) == (OutcomeKind.PENDING, refund["id"])
    assert (failed.kind, failed.code, failed.reference) == (
        OutcomeKind.FAILED,
        "expired_or_canceled_card",
        refund["id"],
    )


# -- what a capture sends -------------------------------------------------------------------


async def test_final_capture_false_only_for_a_call_that_is_not_final_with_multicapture(
    scripted: ScriptedStripe, multicapture: StripeProvider, provider: StripeProvider
) -> None:
    data = await authorized(multicapture)
    before = len(scripted.requests)
    first = await multicapture.capture(
        call("capture", "cap_1", 2000, data=data, final_capture=False)
    )
    last = await multicapture.capture(call("capture", "cap_2", 1000, data=data))

    assert captures(scripted, data["id"]) == [
        {"amount_to_capture": "2000", "final_capture": "false"},
        {"amount_to_capture": "1000"},
    ]
    assert (first.kind, first.amount) == (OutcomeKind.SUCCEEDED, 2000)
    assert (last.kind, last.amount) == (OutcomeKind.SUCCEEDED, 1000)
    # Nothing is read to decide the parameters: two captures, two requests.
    assert [r.method for r in scripted.requests[before:]] == ["POST", "POST"]

    # Without multicapture no capture can leave the rest: the flag is never sent.
    other = await authorized(provider, "auth_2", session_id="ps_2")
    await provider.capture(call("capture", "cap_3", 2000, data=other, final_capture=False))
    assert captures(scripted, other["id"]) == [{"amount_to_capture": "2000"}]


async def test_a_retried_multicapture_sends_the_same_parameters_and_moves_money_once(
    scripted: ScriptedStripe, stripe: FaithfulStripe, multicapture: StripeProvider
) -> None:
    """Issue 22, sequence 4: the answer to a capture of 3000 of 5000 is lost; the retry
    must not drop ``final_capture`` (Stripe would refuse the key as reused with other
    parameters, and a capture that happened would be booked as failed)."""
    data = await authorized(multicapture)
    path = f"/v1/payment_intents/{data['id']}/capture"
    scripted.lose_next("POST", path)

    outcome = await CALLER.call(
        multicapture, call("capture", "cap_lost", 3000, data=data, final_capture=False)
    )

    assert (outcome.kind, outcome.amount, outcome.reference) == (
        OutcomeKind.SUCCEEDED,
        3000,
        data["id"],
    )
    sent = captures(scripted, data["id"])
    assert len(sent) == 2 and sent[0] == sent[1] == {
        "amount_to_capture": "3000",
        "final_capture": "false",
    }
    intent = stripe.intents[data["id"]]
    assert (intent["amount_received"], intent["amount_capturable"]) == (3000, 2000)
    assert len(stripe.of_type("charge.captured")) == 1, "captured once"


# -- a key reused with other parameters ----------------------------------------------------


async def test_a_key_conflict_after_a_capture_that_happened_is_that_capture(
    scripted: ScriptedStripe, provider: StripeProvider
) -> None:
    """The key was first used with other parameters (an older version's request, say)
    and the capture took the whole intent: the status says it happened."""
    data = await authorized(provider)
    path = f"/v1/payment_intents/{data['id']}/capture"
    scripted.dispatch("POST", path, "", {"Idempotency-Key": "capture:cap_1"})  # all of it

    outcome = await provider.capture(call("capture", "cap_1", 5000, data=data))

    assert [r.form for r in scripted.sent("POST", path)][-1] == {"amount_to_capture": "5000"}
    assert (outcome.kind, outcome.amount, outcome.reference) == (
        OutcomeKind.SUCCEEDED,
        5000,
        data["id"],
    )


async def test_a_key_conflict_that_stripe_cannot_attribute_is_unknown_not_failed(
    scripted: ScriptedStripe, multicapture: StripeProvider
) -> None:
    """A partial multicapture happened under the key with ``final_capture: false``; the
    same capture now arrives as final: could not tell (never booked as failed)."""
    data = await authorized(multicapture)
    path = f"/v1/payment_intents/{data['id']}/capture"
    scripted.dispatch(
        "POST",
        path,
        "amount_to_capture=3000&final_capture=false",
        {"Idempotency-Key": "capture:cap_1"},
    )

    outcome = await multicapture.capture(call("capture", "cap_1", 3000, data=data))

    assert outcome.kind is OutcomeKind.UNKNOWN, outcome
    assert "Keys for idempotent requests" in outcome.message


async def test_a_key_conflict_where_nothing_happened_stays_refused(
    scripted: ScriptedStripe, stripe: FaithfulStripe, provider: StripeProvider
) -> None:
    data = await authorized(provider)
    await provider.capture(call("capture", "cap_1", 5000, data=data))
    # The key's first request was refused by Stripe (too much): it refunded nothing.
    scripted.dispatch(
        "POST",
        "/v1/refunds",
        f"payment_intent={data['id']}&amount=9000",
        {"Idempotency-Key": "refund:ref_1"},
    )

    outcome = await provider.refund(call("refund", "ref_1", 1000, data=data))

    assert (outcome.kind, outcome.code) == (OutcomeKind.FAILED, "idempotency_error")
    assert stripe.refunds == {}


async def test_a_key_conflict_after_a_refund_that_happened_is_that_refund(
    scripted: ScriptedStripe, stripe: FaithfulStripe, provider: StripeProvider
) -> None:
    data = await authorized(provider)
    await provider.capture(call("capture", "cap_1", 5000, data=data))
    first = await provider.refund(call("refund", "ref_1", 1000, data=data))

    # The same key now comes with another reason: other parameters.
    again = await provider.refund(call("refund", "ref_1", 1000, data=data, reason="fraud"))

    assert again.kind is OutcomeKind.SUCCEEDED
    assert (again.reference, again.amount) == (first.reference, 1000)
    assert len(stripe.refunds) == 1


# -- an intent that is already canceled ---------------------------------------------------


async def test_cancel_of_an_intent_stripe_already_canceled_succeeds(
    provider: StripeProvider, stripe: FaithfulStripe
) -> None:
    data = await authorized(provider)
    stripe.expire(data["id"])

    outcome = await provider.cancel(call("cancel", "can_1", data=data))

    assert (outcome.kind, outcome.reference) == (OutcomeKind.SUCCEEDED, data["id"])
