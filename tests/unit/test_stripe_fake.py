"""The Stripe fake behaves as Stripe documents it (the house rule: where the docs and
the fake differ, the fake is wrong). Each test names the documented behaviour it
holds the fake to; the adapter's tests then rely on it.

Requests go straight to the fake's dispatcher, as the SDK would send them (form
fields, ``Idempotency-Key``)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import pytest

from tests.fixtures.stripe.faithful import PM_DECLINED, FaithfulStripe
from tests.fixtures.stripe.kit import IDEMPOTENCY_WINDOW_S, Reply, ScriptedStripe

IDS = {"metadata[session_id]": "ps_1", "metadata[cart_id]": "cart_1"}


@pytest.fixture
def scripted() -> ScriptedStripe:
    return ScriptedStripe()


@pytest.fixture
def stripe(scripted: ScriptedStripe) -> FaithfulStripe:
    return FaithfulStripe.serve(scripted)


def request(
    scripted: ScriptedStripe, method: str, path: str, key: str | None = None, **form: Any
) -> tuple[Reply, bool]:
    headers = {"Idempotency-Key": key} if key else {}
    answer = scripted.dispatch(method, path, urlencode(form), headers)
    assert answer is not None
    return answer


def post(scripted: ScriptedStripe, path: str, key: str | None = None, **form: Any) -> Reply:
    return request(scripted, "POST", path, key, **form)[0]


def intent(scripted: ScriptedStripe, *, multicapture: bool = False, capture: str = "manual") -> str:
    form: dict[str, Any] = {"amount": 5000, "currency": "usd", "capture_method": capture, **IDS}
    if multicapture:
        form["payment_method_options[card][request_multicapture]"] = "if_available"
    status, body = post(scripted, "/v1/payment_intents", None, **form)
    assert status == 200
    intent_id: str = body["id"]
    status, body = post(
        scripted, f"/v1/payment_intents/{intent_id}/confirm", None, payment_method="pm_card_visa"
    )
    assert status == 200, body
    return intent_id


# -- idempotency keys (docs.stripe.com/api/idempotent_requests) ------------------------------


def test_a_key_replays_its_first_answer_and_acts_once(
    scripted: ScriptedStripe, stripe: FaithfulStripe
) -> None:
    """ "Subsequent requests with the same key return the same result"."""
    form = {"amount": 5000, "currency": "usd", **IDS}
    first, replayed_first = request(scripted, "POST", "/v1/payment_intents", "k1", **form)
    again, replayed = request(scripted, "POST", "/v1/payment_intents", "k1", **form)

    assert first == again and not replayed_first and replayed
    assert len(stripe.intents) == 1


def test_a_key_reused_with_other_parameters_is_refused_and_the_refusal_not_kept(
    scripted: ScriptedStripe, stripe: FaithfulStripe
) -> None:
    """ "The idempotency layer compares incoming parameters to those of the original
    request and errors if they're not the same"."""
    pi = intent(scripted)
    first = post(scripted, f"/v1/payment_intents/{pi}/capture", "cap", amount_to_capture=3000)
    other = post(scripted, f"/v1/payment_intents/{pi}/capture", "cap", amount_to_capture=2000)
    elsewhere = post(scripted, f"/v1/payment_intents/{pi}/cancel", "cap")
    again, replayed = request(
        scripted, "POST", f"/v1/payment_intents/{pi}/capture", "cap", amount_to_capture=3000
    )

    assert first[0] == 200
    assert other[0] == elsewhere[0] == 400
    assert other[1]["error"]["type"] == "idempotency_error"
    assert (again, replayed) == (first, True)
    assert stripe.intents[pi]["amount_received"] == 3000


def test_keys_are_forgotten_after_24_hours(
    scripted: ScriptedStripe, stripe: FaithfulStripe
) -> None:
    """ "You can remove keys ... after they're at least 24 hours old. We generate a new
    request if a key is reused after the original is pruned"."""
    form = {"amount": 5000, "currency": "usd", **IDS}
    post(scripted, "/v1/payment_intents", "k1", **form)
    scripted.advance(IDEMPOTENCY_WINDOW_S - 1)
    post(scripted, "/v1/payment_intents", "k1", **form)
    assert len(stripe.intents) == 1
    scripted.advance(1)
    post(scripted, "/v1/payment_intents", "k1", **{**form, "amount": 6000})
    assert len(stripe.intents) == 2, "a pruned key is a new request, whatever its parameters"


def test_server_errors_are_kept_conflicts_and_rate_limits_are_not(
    scripted: ScriptedStripe,
) -> None:
    """500s are replayed ("including 500 errors"); results are saved only "after the
    execution of an endpoint begins" (not for a conflict or a rate limit)."""
    answers = iter([(500, {"error": {"type": "api_error"}}), (200, {"ok": 1})])
    scripted.route("POST", "/v1/x", lambda r: next(answers))
    assert post(scripted, "/v1/x", "k")[0] == 500
    assert post(scripted, "/v1/x", "k")[0] == 500
    busy = iter([(409, {"error": {"type": "idempotency_error"}}), (200, {"ok": 1})])
    scripted.route("POST", "/v1/y", lambda r: next(busy))
    assert post(scripted, "/v1/y", "k2")[0] == 409
    assert post(scripted, "/v1/y", "k2")[0] == 200


# -- captures (API reference: Capture a PaymentIntent; Multicapture) -----------------------


def test_without_multicapture_one_capture_takes_the_intent_and_releases_the_rest(
    scripted: ScriptedStripe, stripe: FaithfulStripe
) -> None:
    pi = intent(scripted)
    not_final = post(
        scripted,
        f"/v1/payment_intents/{pi}/capture",
        "c0",
        amount_to_capture=3000,
        final_capture="false",
    )
    first = post(scripted, f"/v1/payment_intents/{pi}/capture", "c1", amount_to_capture=3000)
    second = post(scripted, f"/v1/payment_intents/{pi}/capture", "c2", amount_to_capture=1000)

    assert not_final[0] == 400, "final_capture false needs multicapture"
    assert first[0] == 200
    assert (first[1]["status"], first[1]["amount_received"], first[1]["amount_capturable"]) == (
        "succeeded",
        3000,
        0,
    )
    assert second[0] == 400
    assert second[1]["error"]["code"] == "payment_intent_unexpected_state"


def test_with_multicapture_final_capture_false_keeps_the_rest_capturable(
    scripted: ScriptedStripe, stripe: FaithfulStripe
) -> None:
    pi = intent(scripted, multicapture=True)
    path = f"/v1/payment_intents/{pi}/capture"
    first = post(scripted, path, "c1", amount_to_capture=2000, final_capture="false")
    too_much = post(scripted, path, "c2", amount_to_capture=4000, final_capture="false")
    last = post(scripted, path, "c3", amount_to_capture=1000)

    assert first[1]["status"] == "requires_capture"
    assert (first[1]["amount_received"], first[1]["amount_capturable"]) == (2000, 3000)
    assert too_much[0] == 400
    assert (last[1]["status"], last[1]["amount_received"], last[1]["amount_capturable"]) == (
        "succeeded",
        3000,
        0,
    )
    types = [e["type"] for e in stripe.events]
    assert types.count("charge.captured") == 2
    captured = [e["data"]["object"]["amount_captured"] for e in stripe.of_type("charge.captured")]
    assert captured == [2000, 3000], "a charge's amount_captured is cumulative"


def test_multicapture_is_refused_when_stripe_does_not_grant_it(scripted: ScriptedStripe) -> None:
    FaithfulStripe.serve(scripted, multicapture_available=False)
    pi = intent(scripted, multicapture=True)

    refused = post(
        scripted,
        f"/v1/payment_intents/{pi}/capture",
        "c1",
        amount_to_capture=2000,
        final_capture="false",
    )

    assert refused[0] == 400 and refused[1]["error"]["param"] == "final_capture"


def test_cancel_releases_the_hold_and_a_canceled_intent_refuses_another(
    scripted: ScriptedStripe, stripe: FaithfulStripe
) -> None:
    """ "the remaining amount_capturable is automatically refunded"; "Returns an error
    if the PaymentIntent is already canceled"."""
    pi = intent(scripted)
    canceled = post(scripted, f"/v1/payment_intents/{pi}/cancel", "x1")
    again = post(scripted, f"/v1/payment_intents/{pi}/cancel", "x2")
    expired = intent(scripted)
    stripe.expire(expired)

    assert (canceled[1]["status"], canceled[1]["amount_capturable"]) == ("canceled", 0)
    assert again[0] == 400
    assert stripe.intents[expired]["cancellation_reason"] == "automatic"
    assert len(stripe.of_type("payment_intent.canceled")) == 2


def test_a_declined_card_leaves_the_intent_waiting_with_its_error(
    scripted: ScriptedStripe, stripe: FaithfulStripe
) -> None:
    _, body = post(scripted, "/v1/payment_intents", None, amount=5000, currency="usd", **IDS)
    declined = post(
        scripted, f"/v1/payment_intents/{body['id']}/confirm", None, payment_method=PM_DECLINED
    )

    assert declined[0] == 402 and declined[1]["error"]["type"] == "card_error"
    state = stripe.intents[body["id"]]
    assert state["status"] == "requires_payment_method"
    assert state["last_payment_error"]["payment_method"]["id"] == PM_DECLINED
    assert stripe.of_type("payment_intent.payment_failed")


# -- refunds (Refund and cancel payments; The Refund object) --------------------------------


def test_refunds_pend_then_succeed_or_fail_each_change_an_event(
    scripted: ScriptedStripe, stripe: FaithfulStripe
) -> None:
    pi = intent(scripted, capture="automatic")
    stripe.refund_status = "pending"
    one = post(scripted, "/v1/refunds", "r1", payment_intent=pi, amount=1000)[1]
    two = post(scripted, "/v1/refunds", "r2", payment_intent=pi, amount=1000)[1]
    assert one["status"] == two["status"] == "pending"

    stripe.settle_refund(one["id"], "succeeded")
    stripe.settle_refund(two["id"], "failed", "lost_or_stolen_card")

    assert stripe.refunds[two["id"]]["failure_reason"] == "lost_or_stolen_card"
    assert [
        e["type"] for e in stripe.events if e["type"].startswith(("refund.", "charge.ref"))
    ] == [
        "refund.created",
        "refund.created",
        "refund.updated",
        "charge.refund.updated",
        "charge.refunded",
        "refund.updated",
        "charge.refund.updated",
        "refund.failed",
    ]
    # A failed refund's amount can be refunded again; never more than was received.
    assert stripe.refundable(pi) == 4000
    assert post(scripted, "/v1/refunds", "r3", payment_intent=pi, amount=4001)[0] == 400
    with pytest.raises(AssertionError):
        stripe.settle_refund(two["id"], "succeeded")  # statuses only move forward


def test_refund_reasons_are_stripes_three_and_lists_are_newest_first_by_intent(
    scripted: ScriptedStripe, stripe: FaithfulStripe
) -> None:
    pi = intent(scripted, capture="automatic")
    other = intent(scripted, capture="automatic")
    bad = post(scripted, "/v1/refunds", "r0", payment_intent=pi, amount=100, reason="damaged")
    ids = [
        post(scripted, "/v1/refunds", f"r{n}", payment_intent=pi, amount=100)[1]["id"]
        for n in range(1, 4)
    ]
    post(scripted, "/v1/refunds", "r9", payment_intent=other, amount=100)

    assert bad[0] == 400
    first = request(scripted, "GET", "/v1/refunds", payment_intent=pi, limit=2)[0][1]
    rest = request(
        scripted, "GET", "/v1/refunds", payment_intent=pi, limit=2, starting_after=ids[1]
    )[0][1]
    assert [r["id"] for r in first["data"]] == [ids[2], ids[1]] and first["has_more"]
    assert [r["id"] for r in rest["data"]] == [ids[0]] and not rest["has_more"]


def test_disputes_are_listed_by_intent_and_every_event_has_its_own_id(
    scripted: ScriptedStripe, stripe: FaithfulStripe
) -> None:
    pi = intent(scripted, capture="automatic")
    dispute = stripe.dispute(pi)
    stripe.update_dispute(dispute["id"], "lost")

    listed = request(scripted, "GET", "/v1/disputes", payment_intent=pi)[0][1]
    assert [d["id"] for d in listed["data"]] == [dispute["id"]]
    assert listed["data"][0]["status"] == "lost"
    assert [e["type"] for e in stripe.events[-2:]] == [
        "charge.dispute.created",
        "charge.dispute.closed",
    ]
    ids = [e["id"] for e in stripe.events]
    assert len(set(ids)) == len(ids) and all(i.startswith("evt_") for i in ids)


def test_a_customer_finishing_three_d_secure_late_leaves_a_hold(
    scripted: ScriptedStripe, stripe: FaithfulStripe
) -> None:
    _, body = post(
        scripted,
        "/v1/payment_intents",
        None,
        amount=5000,
        currency="usd",
        capture_method="manual",
        **IDS,
    )
    pi = body["id"]
    challenged = post(
        scripted,
        f"/v1/payment_intents/{pi}/confirm",
        None,
        payment_method="pm_card_authenticationRequired",
    )
    assert challenged[1]["status"] == "requires_action"

    stripe.authenticate(pi)

    assert stripe.intents[pi]["status"] == "requires_capture"
    assert stripe.events[-1]["type"] == "payment_intent.amount_capturable_updated"
