"""The Stripe adapter's status query: found, not found, or could not tell — never an
error taken for an outcome (issue 22, sequence 7). Against the faithful Stripe fake,
in process, with Stripe's own error bodies where the query itself fails."""

from __future__ import annotations

from typing import Any

import pytest

from service.adapters.providers.stripe import StripeProvider
from service.domain.calls import CallOperation
from service.domain.outcomes import OutcomeKind, ProviderOutcome
from tests.fixtures.stripe.faithful import (
    PM_DECLINED,
    PM_VISA,
    FaithfulStripe,
    stripe_provider,
)
from tests.fixtures.stripe.kit import Reply, ScriptedStripe, load
from tests.support.call_builders import stripe_call as call


async def session(provider: StripeProvider) -> dict[str, Any]:
    return (await provider.initiate(call("initiate", "ps_1:initiate", data={}))).data


async def authorized(provider: StripeProvider) -> dict[str, Any]:
    data = await session(provider)
    outcome = await provider.authorize(
        call("authorize", "auth_1", data=data, payment_data={"payment_method": PM_VISA})
    )
    assert outcome.kind is OutcomeKind.SUCCEEDED
    return outcome.data


def could_not_tell(outcome: ProviderOutcome) -> bool:
    return outcome.kind is OutcomeKind.UNKNOWN and not outcome.is_not_found


# -- an error of the query is could not tell -----------------------------------------------

QUERY_ERRORS: list[tuple[str, Reply]] = [
    ("key rotated", (401, load("error_authentication.json"))),
    ("key restricted", (403, load("error_permission.json"))),
    (
        "not visible to this key",
        (
            404,
            {
                "error": {
                    "type": "invalid_request_error",
                    "code": "resource_missing",
                    "param": "intent",
                    "message": "No such payment_intent",
                }
            },
        ),
    ),
    ("bad request", (400, {"error": {"type": "invalid_request_error", "message": "bad"}})),
    ("rate limited", (429, load("error_rate_limit.json"))),
    ("server error", (500, load("error_api.json"))),
    ("unavailable", (503, load("error_api.json"))),
]


@pytest.mark.parametrize("operation", ["authorize", "capture", "refund", "cancel"])
@pytest.mark.parametrize(("why", "reply"), QUERY_ERRORS, ids=[w for w, _ in QUERY_ERRORS])
async def test_an_error_of_the_status_query_is_could_not_tell(
    scripted: ScriptedStripe,
    provider: StripeProvider,
    operation: CallOperation,
    why: str,
    reply: Reply,
) -> None:
    data = await authorized(provider)
    scripted.route("GET", f"/v1/payment_intents/{data['id']}", reply)
    scripted.route("GET", "/v1/refunds", reply)

    outcome = await provider.get_status(call(operation, "k", data=data))

    assert could_not_tell(outcome), outcome
    assert outcome.message.startswith("stripe could not tell")


@pytest.mark.parametrize("operation", ["authorize", "capture", "refund", "cancel"])
async def test_an_unreachable_stripe_could_not_tell(
    scripted: ScriptedStripe, provider: StripeProvider, operation: CallOperation
) -> None:
    data = await authorized(provider)
    scripted.down = True

    assert could_not_tell(await provider.get_status(call(operation, "k", data=data)))


# -- capture ------------------------------------------------------------------------------


async def test_capture_status_reads_what_the_intent_proves(
    provider: StripeProvider, stripe: FaithfulStripe
) -> None:
    data = await authorized(provider)
    intent_id = data["id"]

    nothing = await provider.get_status(call("capture", "cap_1", 5000, data=data))
    stripe.capture(intent_id, 5000)
    whole = await provider.get_status(call("capture", "cap_1", 5000, data=data))
    other = await provider.get_status(call("capture", "cap_2", 2000, data=data))

    assert nothing.is_not_found and nothing.reference == intent_id
    assert (whole.kind, whole.amount, whole.reference) == (OutcomeKind.SUCCEEDED, 5000, intent_id)
    # Without multicapture one capture took the intent: a capture of 2000 cannot be.
    assert (other.kind, other.code) == (OutcomeKind.FAILED, "payment_intent_unexpected_state")


async def test_a_partial_capture_of_our_amount_could_be_ours_or_not(
    provider: StripeProvider, stripe: FaithfulStripe
) -> None:
    """3000 of 5000 received (the rest released): ours, or a dashboard capture of the
    same amount? The intent cannot say."""
    data = await authorized(provider)
    stripe.capture(data["id"], 3000)

    outcome = await provider.get_status(call("capture", "cap_1", 3000, data=data))

    assert could_not_tell(outcome), outcome


async def test_a_capture_among_partial_multicaptures_is_told_by_resending(
    scripted: ScriptedStripe, stripe: FaithfulStripe
) -> None:
    provider = stripe_provider(scripted, multicapture=True)
    try:
        data = await authorized(provider)
        stripe.capture(data["id"], 2000, final=False)

        outcome = await provider.get_status(call("capture", "cap_1", 2000, data=data))
    finally:
        await provider.close()

    # Still capturable, something captured: Stripe's record of the key tells (the
    # domain re-sends only inside the key window).
    assert outcome.is_not_found, outcome


async def test_a_canceled_intent_took_no_capture(
    provider: StripeProvider, stripe: FaithfulStripe
) -> None:
    data = await authorized(provider)
    stripe.expire(data["id"])

    outcome = await provider.get_status(call("capture", "cap_1", 5000, data=data))

    assert (outcome.kind, outcome.reference) == (OutcomeKind.FAILED, data["id"])


# -- cancel and refund ----------------------------------------------------------------------


async def test_cancel_status_is_the_intent_canceled_or_not(
    provider: StripeProvider, stripe: FaithfulStripe
) -> None:
    data = await authorized(provider)

    live = await provider.get_status(call("cancel", "can_1", data=data))
    stripe.cancel(data["id"])
    canceled = await provider.get_status(call("cancel", "can_1", data=data))

    assert live.is_not_found and live.reference == data["id"]
    assert (canceled.kind, canceled.reference) == (OutcomeKind.SUCCEEDED, data["id"])


async def test_refund_status_is_found_by_its_key_among_every_page_of_refunds(
    provider: StripeProvider, stripe: FaithfulStripe
) -> None:
    data = await authorized(provider)
    stripe.capture(data["id"])
    ours = await provider.refund(call("refund", "ref_1", 1, data=data))
    for _ in range(120):  # newer refunds push ours past the first page
        stripe.refund(data["id"], 1)

    found = await provider.get_status(call("refund", "ref_1", 1, data=data))
    never = await provider.get_status(call("refund", "ref_never", 1, data=data))

    assert (found.kind, found.reference) == (OutcomeKind.SUCCEEDED, ours.reference)
    assert never.is_not_found and never.reference is None


# -- authorize ------------------------------------------------------------------------------


async def test_authorize_status_not_confirmed_confirmed_or_declined(
    provider: StripeProvider, stripe: FaithfulStripe
) -> None:
    data = await session(provider)
    asked = call("authorize", "auth_2", data=data, payment_data={"payment_method": PM_VISA})

    never = await provider.get_status(asked)
    declined = await provider.authorize(
        call("authorize", "auth_1", data=data, payment_data={"payment_method": PM_DECLINED})
    )
    # Another attempt's decline (another method) says nothing about this attempt.
    still_never = await provider.get_status(asked)
    own_decline = await provider.get_status(
        call("authorize", "auth_1", data=data, payment_data={"payment_method": PM_DECLINED})
    )
    await provider.authorize(asked)
    confirmed = await provider.get_status(asked)

    assert declined.kind is OutcomeKind.DECLINED
    assert never.is_not_found and still_never.is_not_found
    assert own_decline.kind is OutcomeKind.DECLINED
    assert (confirmed.kind, confirmed.amount, confirmed.reference) == (
        OutcomeKind.SUCCEEDED,
        5000,
        data["id"],
    )


async def test_an_authorization_without_an_intent_finds_the_one_it_created(
    scripted: ScriptedStripe, provider: StripeProvider, stripe: FaithfulStripe
) -> None:
    """The session has no intent yet; the authorization creates and confirms one and
    its answer is lost. The status query replays the create under its key: the same
    intent, confirmed — not a "not found" that would invite a second authorization."""
    asked = call("authorize", "auth_1", data={}, payment_data={"payment_method": PM_VISA})
    scripted.lose_next("POST", "/v1/payment_intents")

    lost = await provider.authorize(asked)
    first = next(iter(stripe.intents))
    scripted.lose_next("POST", f"/v1/payment_intents/{first}/confirm")
    lost_again = await provider.authorize(asked)
    status = await provider.get_status(asked)

    assert lost.kind is not OutcomeKind.SUCCEEDED and lost_again.kind is OutcomeKind.UNKNOWN
    (intent,) = stripe.intents_of("ps_1")
    assert intent["status"] == "requires_capture"
    assert (status.kind, status.reference) == (OutcomeKind.SUCCEEDED, intent["id"])
