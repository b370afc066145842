"""The Stripe adapter's pure tables: intent statuses, SDK errors, keys, reasons, events."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import stripe

from service.adapters.providers.stripe_mapping import (
    MAX_IDEMPOTENCY_KEY,
    could_not_tell,
    error_outcome,
    idempotency_key,
    intent_outcome,
    interpret_event,
    object_facts,
    public_intent_data,
    refund_outcome,
    refund_reason,
)
from service.domain.outcomes import OutcomeKind
from tests.fixtures.stripe.kit import event, load

IDS = {"session_id": "ps_1", "cart_id": "cart_1"}


def intent(name: str, **changes: Any) -> dict[str, Any]:
    return {**load(name, **IDS), **changes}


# -- PaymentIntent status → outcome (Medusa's table) --------------------------------------


@pytest.mark.parametrize(
    ("fixture", "kind", "captured", "amount"),
    [
        ("payment_intent_requires_payment_method.json", OutcomeKind.PENDING, False, None),
        ("payment_intent_requires_confirmation.json", OutcomeKind.PENDING, False, None),
        ("payment_intent_processing.json", OutcomeKind.PENDING, False, None),
        ("payment_intent_requires_action.json", OutcomeKind.REQUIRES_MORE, False, None),
        ("payment_intent_requires_capture.json", OutcomeKind.SUCCEEDED, False, 5000),
        ("payment_intent_partially_captured.json", OutcomeKind.SUCCEEDED, False, 3000),
        ("payment_intent_succeeded.json", OutcomeKind.SUCCEEDED, True, 5000),
        ("payment_intent_canceled.json", OutcomeKind.CANCELED, False, None),
        ("payment_intent_payment_failed.json", OutcomeKind.DECLINED, False, None),
    ],
)
def test_intent_status_table(
    fixture: str, kind: OutcomeKind, captured: bool, amount: int | None
) -> None:
    outcome = intent_outcome(intent(fixture))

    assert outcome.kind is kind
    assert outcome.captured is captured
    assert outcome.amount == amount
    assert outcome.reference == "pi_3QfXyZ2eZvKYlo2C0a1b2c3d", "every outcome names the intent"


def test_requires_action_carries_what_a_storefront_needs() -> None:
    pi = intent("payment_intent_requires_action.json")

    outcome = intent_outcome(pi)

    redirect = pi["next_action"]["redirect_to_url"]
    assert outcome.action == {
        **pi["next_action"],  # Stripe's own next_action, unchanged
        "type": "redirect_to_url",
        "payment_intent_id": pi["id"],
        "client_secret": pi["client_secret"],
        "url": redirect["url"],
        "return_url": redirect["return_url"],
    }
    assert outcome.data["id"] == pi["id"]


def test_use_stripe_sdk_action_carries_the_client_secret_and_no_url() -> None:
    """In-page 3-D Secure: Stripe.js `handleNextAction` needs the client secret."""
    pi = intent("payment_intent_requires_action.json")
    pi["next_action"] = {
        "type": "use_stripe_sdk",
        "use_stripe_sdk": {"type": "three_d_secure_redirect"},
    }

    outcome = intent_outcome(pi)

    assert outcome.action is not None
    assert outcome.action["type"] == "use_stripe_sdk"
    assert outcome.action["client_secret"] == pi["client_secret"]
    assert outcome.action["payment_intent_id"] == pi["id"]
    assert "url" not in outcome.action


def test_last_payment_error_is_a_decline_with_stripe_message_and_decline_code() -> None:
    outcome = intent_outcome(intent("payment_intent_payment_failed.json"))

    assert outcome.kind is OutcomeKind.DECLINED
    assert outcome.message == "Your card has insufficient funds."
    assert outcome.code == "insufficient_funds"


def test_succeeded_amount_is_what_stripe_received_in_our_units() -> None:
    # ¥5000 is 5000 at Stripe; 5.120 KD is 5120; a partial capture received 2000 of 5000.
    assert intent_outcome(intent("payment_intent_succeeded.json", currency="jpy")).amount == 5000
    kwd = intent("payment_intent_succeeded.json", currency="kwd", amount=5120, amount_received=5120)
    assert intent_outcome(kwd).amount == 5120
    partial = intent("payment_intent_succeeded.json", amount_received=2000)
    assert intent_outcome(partial).amount == 2000


def test_unknown_status_fails_rather_than_guessing() -> None:
    outcome = intent_outcome(intent("payment_intent_succeeded.json", status="teleported"))

    assert outcome.kind is OutcomeKind.FAILED


def test_public_data_keeps_public_fields_only() -> None:
    pi = intent("payment_intent_requires_capture.json")

    data = public_intent_data(pi)

    assert data == {
        "id": pi["id"],
        "client_secret": pi["client_secret"],
        "status": "requires_capture",
        "capture_method": "manual",
        "currency_code": "usd",
        "amount": 5000,
        "payment_method": "pm_1QfXzA2eZvKYlo2CvisaVisa",
        "latest_charge": "ch_3QfXyZ2eZvKYlo2C0charge1",
    }
    assert not any("sk_" in str(v) for v in data.values())


def test_public_data_takes_ids_of_expanded_objects_and_string_amounts() -> None:
    # localstripe expands latest_charge and echoes updated amounts as form strings.
    pi = intent("payment_intent_requires_capture.json", latest_charge={"id": "ch_x"}, amount="7000")

    data = public_intent_data(pi)

    assert data["latest_charge"] == "ch_x"
    assert data["amount"] == 7000


# -- SDK errors → outcome kinds ---------------------------------------------------------


def _error_body(name: str) -> dict[str, Any]:
    return load(name)


def card_error() -> stripe.StripeError:
    body = _error_body("error_card_declined.json")
    return stripe.CardError(  # type: ignore[no-untyped-call]
        body["error"]["message"], None, "card_declined", http_status=402, json_body=body
    )


def connection_error(cause: Exception) -> stripe.StripeError:
    try:
        try:
            raise cause
        except Exception as exc:
            raise stripe.APIConnectionError(  # type: ignore[no-untyped-call]
                "network", should_retry=True
            ) from exc
    except stripe.APIConnectionError as wrapped:
        return wrapped


def api_error(status: int, name: str = "error_api.json") -> stripe.StripeError:
    body = _error_body(name)
    return stripe.APIError(body["error"]["message"], None, status, body)


REQUEST = httpx.Request("POST", "http://stripe.invalid/v1/x")


@pytest.mark.parametrize(
    ("make", "moves_money", "kind"),
    [
        (card_error, True, OutcomeKind.DECLINED),
        (
            lambda: stripe.RateLimitError(
                "slow down", None, 429, _error_body("error_rate_limit.json")
            ),
            True,
            OutcomeKind.TRANSIENT,
        ),
        # Never reached Stripe: safe to retry, whatever the call.
        (
            lambda: connection_error(httpx.ConnectError("refused", request=REQUEST)),
            True,
            OutcomeKind.TRANSIENT,
        ),
        (
            lambda: connection_error(httpx.ConnectTimeout("slow", request=REQUEST)),
            True,
            OutcomeKind.TRANSIENT,
        ),
        # Sent, answer lost: money may have moved (contract promise 7).
        (
            lambda: connection_error(httpx.ReadTimeout("lost", request=REQUEST)),
            True,
            OutcomeKind.UNKNOWN,
        ),
        (
            lambda: connection_error(httpx.RemoteProtocolError("dropped", request=REQUEST)),
            True,
            OutcomeKind.UNKNOWN,
        ),
        (
            lambda: connection_error(httpx.ReadTimeout("lost", request=REQUEST)),
            False,
            OutcomeKind.TRANSIENT,
        ),
        (lambda: api_error(500), False, OutcomeKind.TRANSIENT),
        (lambda: api_error(503), False, OutcomeKind.TRANSIENT),
        (lambda: api_error(500), True, OutcomeKind.UNKNOWN),
        (lambda: api_error(409, "error_idempotency_in_use.json"), True, OutcomeKind.TRANSIENT),
        (
            lambda: stripe.InvalidRequestError(  # type: ignore[no-untyped-call]
                "no such intent", "intent", "resource_missing", http_status=404
            ),
            True,
            OutcomeKind.FAILED,
        ),
        (
            lambda: stripe.InvalidRequestError(  # type: ignore[no-untyped-call]
                "No such PaymentMethod: 'pm_nope'",
                "payment_method",
                "resource_missing",
                http_status=400,
            ),
            True,
            OutcomeKind.INVALID_DATA,
        ),
        (lambda: stripe.AuthenticationError("bad key", None, 401), False, OutcomeKind.FAILED),
        (lambda: stripe.PermissionError("restricted key", None, 403), True, OutcomeKind.FAILED),
        (lambda: stripe.IdempotencyError("reused key", None, 400), True, OutcomeKind.FAILED),
    ],
)
def test_error_table(make: Any, moves_money: bool, kind: OutcomeKind) -> None:
    assert error_outcome(make(), moves_money=moves_money).kind is kind


def test_card_error_keeps_stripe_message_and_decline_code() -> None:
    outcome = error_outcome(card_error(), moves_money=True)

    assert outcome.message == "Your card has insufficient funds."
    assert outcome.code == "insufficient_funds"


# -- idempotency keys and refund reasons -------------------------------------------------


def test_keys_are_prefixed_by_operation_so_operations_never_share_one() -> None:
    keys = {idempotency_key(op, "cmd_1") for op in ("capture", "refund", "cancel", "authorize")}

    assert keys == {"capture:cmd_1", "refund:cmd_1", "cancel:cmd_1", "authorize:cmd_1"}
    assert idempotency_key("authorize", "idem", "pm_1") != idempotency_key(
        "authorize", "idem", "pm_2"
    )


def test_long_keys_are_hashed_deterministically_within_stripes_limit() -> None:
    long = "k" * 255

    first = idempotency_key("authorize", long, "pm_card_visa")

    assert len(first) <= MAX_IDEMPOTENCY_KEY
    assert first == idempotency_key("authorize", long, "pm_card_visa")
    assert first != idempotency_key("capture", long, "pm_card_visa")
    assert first.startswith("authorize:")


@pytest.mark.parametrize(
    ("ours", "stripes"),
    [
        ("requested_by_customer", "requested_by_customer"),
        ("customer_request", "requested_by_customer"),
        ("Fraud", "fraudulent"),
        ("duplicate", "duplicate"),
        ("damaged", None),
        (None, None),
    ],
)
def test_refund_reason_table(ours: str | None, stripes: str | None) -> None:
    assert refund_reason(ours) == stripes


# -- webhook events → what they mean ------------------------------------------------------


@pytest.mark.parametrize(
    ("event_type", "fixture", "meaning", "amount"),
    [
        (
            "payment_intent.amount_capturable_updated",
            "payment_intent_requires_capture.json",
            "authorized",
            5000,
        ),
        ("payment_intent.succeeded", "payment_intent_succeeded.json", "captured", 5000),
        ("payment_intent.payment_failed", "payment_intent_payment_failed.json", "failed", None),
        (
            "payment_intent.requires_action",
            "payment_intent_requires_action.json",
            "requires_more",
            None,
        ),
        ("payment_intent.canceled", "payment_intent_canceled.json", "canceled", None),
    ],
)
def test_event_table(event_type: str, fixture: str, meaning: str, amount: int | None) -> None:
    pi = intent(fixture)

    action = interpret_event(json.dumps(event(event_type, pi)))

    assert action is not None
    assert action.meaning == meaning
    assert action.session_id == "ps_1"
    assert action.cart_id == "cart_1"
    assert action.provider_reference == pi["id"]
    assert action.amount == amount
    assert action.data["id"] == pi["id"]


def test_failed_event_carries_the_message_and_requires_action_the_next_action() -> None:
    failed = interpret_event(
        json.dumps(
            event("payment_intent.payment_failed", intent("payment_intent_payment_failed.json"))
        )
    )
    action = interpret_event(
        json.dumps(
            event("payment_intent.requires_action", intent("payment_intent_requires_action.json"))
        )
    )

    assert failed is not None and failed.message == "Your card has insufficient funds."
    assert action is not None and action.action is not None
    assert action.action["type"] == "redirect_to_url"
    assert action.action["client_secret"].startswith(action.action["payment_intent_id"])


def test_captured_amount_is_amount_received_only() -> None:
    # A partial capture received 2000 (the rest released): never read as 5000.
    partial = intent("payment_intent_succeeded.json", amount_received=2000)
    missing = intent("payment_intent_succeeded.json")
    del missing["amount_received"]

    partial_action = interpret_event(json.dumps(event("payment_intent.succeeded", partial)))
    missing_action = interpret_event(json.dumps(event("payment_intent.succeeded", missing)))

    assert partial_action is not None and partial_action.amount == 2000
    assert missing_action is not None and missing_action.amount is None


@pytest.mark.parametrize(
    "payload",
    [
        json.dumps(event("charge.refunded", load("payment_intent_succeeded.json", **IDS))),
        json.dumps(event("payment_intent.created", load("payment_intent_succeeded.json", **IDS))),
        # Another integration's intent on the same account: no metadata of ours.
        json.dumps(
            event(
                "payment_intent.succeeded",
                {**load("payment_intent_succeeded.json"), "metadata": {}},
            )
        ),
        json.dumps(
            event("payment_intent.succeeded", {**load("refund_succeeded.json"), "metadata": IDS})
        ),
        "not json",
        "[]",
    ],
)
def test_events_that_mean_nothing_to_us(payload: str) -> None:
    assert interpret_event(payload) is None


def test_charge_captured_is_a_cumulative_capture_of_the_intent() -> None:
    """Dashboard captures (multicapture too) arrive as `charge.captured` (issue 13)."""
    charge = {
        "id": "ch_1",
        "object": "charge",
        "amount": 5000,
        "amount_captured": 3000,
        "captured": True,
        "currency": "usd",
        "payment_intent": "pi_1",
        "metadata": {"session_id": "ps_1", "cart_id": "cart_1"},
    }
    action = interpret_event(json.dumps(event("charge.captured", charge)))
    assert action is not None
    assert (action.meaning, action.amount, action.cart_id, action.provider_reference) == (
        "captured",
        3000,
        "cart_1",
        "pi_1",
    )
    # Without our metadata the cart is looked up from the intent (resolve_webhook).
    anonymous = interpret_event(json.dumps(event("charge.captured", {**charge, "metadata": {}})))
    assert anonymous is not None and anonymous.cart_id is None
    uncaptured = {**charge, "captured": False}
    assert interpret_event(json.dumps(event("charge.captured", uncaptured))) is None


def test_refund_and_dispute_events_carry_what_the_aggregate_needs() -> None:
    refund = intent("refund_succeeded.json")
    refund["metadata"] = {
        "payments_call_key": "key_1",
        "session_id": "ps_1",
        "cart_id": "cart_1",
    }
    by_status = {
        status: interpret_event(json.dumps(event("refund.updated", {**refund, "status": status})))
        for status in ("pending", "succeeded", "failed", "canceled")
    }
    assert {s: a.meaning if a else None for s, a in by_status.items()} == {
        "pending": "refund_pending",
        "succeeded": "refund_succeeded",
        "failed": "refund_failed",
        "canceled": "refund_failed",
    }
    ok = by_status["succeeded"]
    assert ok is not None and ok.cart_id == "cart_1" and ok.amount == 1000
    assert ok.data["provider_key"] == "key_1" and ok.data["refund_id"] == refund["id"]

    dispute = load("dispute_needs_response.json", payment_intent="pi_1", charge="ch_1")
    statuses = {
        s: interpret_event(json.dumps(event("charge.dispute.updated", {**dispute, "status": s})))
        for s in ("warning_needs_response", "under_review", "warning_closed", "won", "lost")
    }
    assert {s: a.data["status"] for s, a in statuses.items() if a} == {
        "warning_needs_response": "open",
        "under_review": "open",
        "warning_closed": "won",
        "won": "won",
        "lost": "lost",
    }
    opened = statuses["under_review"]
    assert opened is not None and opened.meaning == "disputed" and opened.cart_id is None
    assert opened.provider_reference == "pi_1" and opened.amount == 5000
    assert opened.data["evidence_due_by"].isoformat() == "2025-01-14T23:59:59+00:00"


# -- issue 22: references, could-not-tell, event ids, capturable, the audit's facts -------


def test_refund_outcomes_name_the_refund_and_carry_its_own_amount() -> None:
    refund = load("refund_succeeded.json")

    done = refund_outcome(refund, fallback_amount=999)
    pending = refund_outcome({**refund, "status": "pending"}, 999)
    failed = refund_outcome({**refund, "status": "failed", "failure_reason": "unknown"}, 999)

    assert (done.kind, done.amount, done.reference) == (OutcomeKind.SUCCEEDED, 1000, refund["id"])
    assert (pending.kind, pending.reference) == (OutcomeKind.PENDING, refund["id"])
    assert (failed.kind, failed.code, failed.reference) == (
        OutcomeKind.FAILED,
        "unknown",
        refund["id"],
    )


@pytest.mark.parametrize(
    "make",
    [
        lambda: stripe.AuthenticationError("bad key", None, 401),
        lambda: stripe.PermissionError("restricted key", None, 403),
        lambda: stripe.InvalidRequestError(  # type: ignore[no-untyped-call]
            "No such payment_intent", "intent", "resource_missing", http_status=404
        ),
        lambda: api_error(500),
        lambda: connection_error(httpx.ReadTimeout("lost", request=REQUEST)),
    ],
)
def test_an_error_of_a_status_query_could_not_tell(make: Any) -> None:
    outcome = could_not_tell(make())

    assert outcome.kind is OutcomeKind.UNKNOWN and not outcome.is_not_found


def test_every_event_fact_carries_the_events_own_id() -> None:
    pi = intent("payment_intent_requires_capture.json")
    refund = {**load("refund_succeeded.json"), "metadata": IDS}
    dispute = load("dispute_needs_response.json", payment_intent="pi_1", charge="ch_1")
    payloads = [
        event("payment_intent.amount_capturable_updated", pi, event_id="evt_a"),
        event("refund.updated", refund, event_id="evt_b"),
        event("charge.dispute.created", dispute, event_id="evt_c"),
    ]

    read = [interpret_event(json.dumps(p)) for p in payloads]

    assert [a.event_id if a else None for a in read] == ["evt_a", "evt_b", "evt_c"]


@pytest.mark.parametrize(
    ("fixture", "event_type", "meaning", "amount", "capturable"),
    [
        (
            "payment_intent_requires_capture.json",
            "payment_intent.amount_capturable_updated",
            "authorized",
            5000,
            5000,
        ),
        # Multicapture: 2000 captured, 3000 still held — money in, not a new hold.
        (
            "payment_intent_partially_captured.json",
            "payment_intent.amount_capturable_updated",
            "captured",
            2000,
            3000,
        ),
        ("payment_intent_succeeded.json", "payment_intent.succeeded", "captured", 5000, 0),
        ("payment_intent_canceled.json", "payment_intent.canceled", "canceled", None, 0),
    ],
)
def test_intent_facts_carry_what_is_still_capturable(
    fixture: str, event_type: str, meaning: str, amount: int | None, capturable: int
) -> None:
    action = interpret_event(json.dumps(event(event_type, intent(fixture))))

    assert action is not None
    assert (action.meaning, action.amount, action.capturable) == (meaning, amount, capturable)


def test_a_final_partial_capture_leaves_nothing_capturable() -> None:
    partial = intent("payment_intent_succeeded.json", amount_received=3000, amount_capturable=0)

    action = interpret_event(json.dumps(event("payment_intent.succeeded", partial)))

    assert action is not None and (action.amount, action.capturable) == (3000, 0)


def test_object_facts_name_the_intents_cart_on_refunds_and_disputes() -> None:
    pi = intent("payment_intent_partially_captured.json")
    refund = load("refund_succeeded.json")  # the dashboard's: no metadata of ours
    dispute = load("dispute_needs_response.json", payment_intent=pi["id"], charge="ch_1")

    read = object_facts(pi, [refund], [dispute])

    assert [(f.meaning, f.amount, f.capturable) for f in read] == [
        ("captured", 2000, 3000),
        ("refund_succeeded", 1000, None),
        ("disputed", 5000, None),
    ]
    assert {(f.cart_id, f.session_id, f.event_id) for f in read} == {("cart_1", "ps_1", None)}
    assert object_facts({**pi, "metadata": {}}, [refund], [dispute]) == []


@pytest.mark.parametrize(
    ("fixture", "meanings"),
    [
        ("payment_intent_requires_capture.json", ["authorized"]),
        ("payment_intent_succeeded.json", ["captured"]),
        ("payment_intent_canceled.json", ["canceled"]),
        ("payment_intent_requires_action.json", []),
        ("payment_intent_payment_failed.json", []),
        ("payment_intent_requires_payment_method.json", []),
    ],
)
def test_object_facts_of_an_intent_are_its_money_states_only(
    fixture: str, meanings: list[str]
) -> None:
    assert [f.meaning for f in object_facts(intent(fixture), [], [])] == meanings
