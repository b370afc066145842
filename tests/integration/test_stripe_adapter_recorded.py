"""The Stripe adapter at its HTTP boundary, against fixture responses (kit.ScriptedStripe).

For what localstripe cannot show: idempotency keys and Stripe's replay of them,
multicapture, refund reasons, redirect 3-D Secure, and Stripe's error bodies.
The adapter, the official SDK and real HTTP are all the production ones; only the
server answers from `tests/fixtures/stripe/`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from service.adapters.providers.stripe import REFUND_KEY_METADATA, StripeProvider
from service.domain.calls import CallOperation, ProviderCall
from service.domain.outcomes import OutcomeKind
from service.provider_calls import ProviderCaller, RetryPolicy
from tests.fixtures.stripe.kit import Recorded, Reply, ScriptedStripe, load
from tests.support.call_builders import provider_call

pytestmark = pytest.mark.integration

PI = "pi_3QfXyZ2eZvKYlo2C0a1b2c3d"
INTENT = f"/v1/payment_intents/{PI}"
IDS = {"session_id": "ps_1", "cart_id": "cart_1"}


def fixture(name: str, **changes: Any) -> dict[str, Any]:
    return {**load(name, **IDS), **changes}


def ok(name: str, **changes: Any) -> Reply:
    return 200, fixture(name, **changes)


@pytest.fixture
def server() -> Iterator[ScriptedStripe]:
    with ScriptedStripe() as scripted:
        yield scripted


async def make_provider(server: ScriptedStripe, **options: Any) -> StripeProvider:
    return StripeProvider({"api_key": "sk_test_scripted", "api_base": server.api_base, **options})


@pytest.fixture
async def provider(server: ScriptedStripe) -> AsyncIterator[StripeProvider]:
    built = await make_provider(server)
    yield built
    await built.close()


def call(
    operation: CallOperation,
    key: str,
    *,
    amount: int = 5000,
    currency: str = "usd",
    data: dict[str, Any] | None = None,
    **values: Any,
) -> ProviderCall:
    return provider_call(
        operation,
        "stripe",
        key,
        amount,
        currency_code=currency,
        payment_id="pay_1",
        data={"id": PI} if data is None else data,
        **values,
    )


def acting(server: ScriptedStripe, reply: Reply) -> Any:
    """A handler that records an effect and answers `reply`."""

    def handle(request: Recorded) -> Reply:
        server.act(request)
        return reply

    return handle


# -- idempotency ----------------------------------------------------------------------------


async def test_every_mutating_request_carries_a_key_prefixed_by_its_operation(
    server: ScriptedStripe, provider: StripeProvider
) -> None:
    server.route("POST", "/v1/payment_intents", ok("payment_intent_requires_payment_method.json"))
    server.route("GET", INTENT, ok("payment_intent_requires_payment_method.json"))
    server.route("POST", INTENT, ok("payment_intent_requires_confirmation.json"))
    server.route(
        "POST", f"{INTENT}/confirm", acting(server, ok("payment_intent_requires_capture.json"))
    )
    server.route("POST", f"{INTENT}/capture", acting(server, ok("payment_intent_succeeded.json")))
    server.route("POST", "/v1/refunds", acting(server, ok("refund_succeeded.json")))

    initiated = await provider.initiate(call("initiate", "ps_1:initiate", data={}))
    authorize = call(
        "authorize", "idem_1", data=initiated.data, payment_data={"payment_method": "pm_card_visa"}
    )
    authorized = await provider.authorize(authorize)
    captured = await provider.capture(call("capture", "cmd_1"))
    refunded = await provider.refund(call("refund", "cmd_1", amount=1000))

    assert [o.kind for o in (initiated, authorized, captured, refunded)] == [
        OutcomeKind.SUCCEEDED
    ] * 4
    posts = [r for r in server.requests if r.method == "POST"]
    create_key = posts[0].idempotency_key or ""
    # The create key also names the parameters (see test_stripe_adapter_fixes.py).
    assert create_key.startswith("initiate:ps_1:initiate:")
    assert [(r.path, r.idempotency_key) for r in posts] == [
        ("/v1/payment_intents", create_key),
        (INTENT, "authorize-attach:idem_1:pm_card_visa"),
        (f"{INTENT}/confirm", "authorize:idem_1:pm_card_visa"),
        (f"{INTENT}/capture", "capture:cmd_1"),
        ("/v1/refunds", "refund:cmd_1"),
    ]
    # A capture and a refund under the same command id never share a Stripe key.
    assert len({r.idempotency_key for r in posts}) == len(posts)
    created = posts[0].form
    assert created["amount"] == "5000"
    assert created["currency"] == "usd"
    assert created["capture_method"] == "manual"
    assert created["metadata[session_id]"] == "ps_1"
    assert created["metadata[cart_id]"] == "cart_1"
    assert all(r.headers["authorization"] == "Bearer sk_test_scripted" for r in server.requests)
    assert "sk_test_scripted" not in repr(initiated.data)
    assert initiated.data["client_secret"].startswith(PI + "_secret_")


async def test_a_lost_capture_answer_is_retried_under_the_same_key_and_moves_money_once(
    server: ScriptedStripe, provider: StripeProvider
) -> None:
    captures: list[Recorded] = []

    def capture(request: Recorded) -> Reply | None:
        captures.append(request)
        server.act(request)
        return None  # Stripe captured; the connection dropped before the answer

    server.route("POST", f"{INTENT}/capture", capture)
    server.lost_answers[f"{INTENT}/capture"] = ok("payment_intent_succeeded.json")
    # The status query still sees the intent capturable (as after a partial
    # multicapture), so the caller re-sends; Stripe answers from its record.
    server.route("GET", INTENT, ok("payment_intent_requires_capture.json"))
    caller = ProviderCaller(RetryPolicy(timeout_s=10, max_attempts=3, base_delay_s=0.01))

    outcome = await caller.call(provider, call("capture", "cmd_lost", amount=5000))

    assert outcome.kind is OutcomeKind.SUCCEEDED
    assert len(server.effects) == 1, "the retry must not capture again"
    sent = server.sent("POST", f"{INTENT}/capture")
    assert len(sent) == 2
    assert {r.idempotency_key for r in sent} == {"capture:cmd_lost"}
    assert len(server.sent("GET", INTENT)) == 1


async def test_a_lost_capture_answer_settled_by_the_status_query_is_not_resent(
    server: ScriptedStripe, provider: StripeProvider
) -> None:
    server.route("POST", f"{INTENT}/capture", lambda r: server.act(r))  # act, then drop
    server.route("GET", INTENT, ok("payment_intent_succeeded.json"))
    caller = ProviderCaller(RetryPolicy(timeout_s=10, max_attempts=3, base_delay_s=0.01))

    outcome = await caller.call(provider, call("capture", "cmd_lost2"))

    assert outcome.kind is OutcomeKind.SUCCEEDED
    assert outcome.amount == 5000
    assert len(server.sent("POST", f"{INTENT}/capture")) == 1
    assert len(server.effects) == 1


async def test_a_lost_authorization_answer_is_answered_from_the_intent(
    server: ScriptedStripe, provider: StripeProvider
) -> None:
    state = {"confirmed": False}

    def confirm(request: Recorded) -> None:
        server.act(request)
        state["confirmed"] = True

    def retrieve(request: Recorded) -> Reply:
        if state["confirmed"]:
            return ok("payment_intent_requires_capture.json")
        return ok("payment_intent_requires_confirmation.json")

    server.route("GET", INTENT, retrieve)
    server.route("POST", f"{INTENT}/confirm", confirm)
    caller = ProviderCaller(RetryPolicy(timeout_s=10, max_attempts=3, base_delay_s=0.01))
    authorize = call(
        "authorize",
        "idem_lost",
        data={"id": PI},
        payment_data={"payment_method": "pm_1QfXzA2eZvKYlo2CvisaVisa"},
    )

    outcome = await caller.call(provider, authorize)

    assert outcome.kind is OutcomeKind.SUCCEEDED
    assert outcome.amount == 5000
    assert len(server.effects) == 1
    assert len(server.sent("POST", f"{INTENT}/confirm")) == 1


# -- multicapture, refunds, cancel -----------------------------------------------------------


async def test_multicapture_sends_final_capture_false_for_captures_the_call_says_are_not_final(
    server: ScriptedStripe,
) -> None:
    provider = await make_provider(server, multicapture=True)
    captured = {"total": 0}

    def retrieve(request: Recorded) -> Reply:
        left = 5000 - captured["total"]
        return ok(
            "payment_intent_partially_captured.json",
            amount_capturable=left,
            amount_received=captured["total"],
        )

    def capture(request: Recorded) -> Reply:
        server.act(request)
        captured["total"] += int(request.form["amount_to_capture"])
        if request.form.get("final_capture") == "false":
            return retrieve(request)
        return ok("payment_intent_succeeded.json", amount_received=captured["total"])

    server.route("POST", "/v1/payment_intents", ok("payment_intent_requires_payment_method.json"))
    server.route("GET", INTENT, retrieve)
    server.route("POST", f"{INTENT}/capture", capture)
    try:
        await provider.initiate(call("initiate", "ps_1:initiate", data={}))
        # The domain decides which capture is the last and stores it with the call.
        first = await provider.capture(call("capture", "cmd_1", amount=2000, final_capture=False))
        second = await provider.capture(call("capture", "cmd_2", amount=3000))
    finally:
        await provider.close()

    created = server.sent("POST", "/v1/payment_intents")[0].form
    assert created["payment_method_options[card][request_multicapture]"] == "if_available"
    assert (first.kind, first.amount) == (OutcomeKind.SUCCEEDED, 2000)
    assert (second.kind, second.amount) == (OutcomeKind.SUCCEEDED, 3000)
    forms = [r.form for r in server.sent("POST", f"{INTENT}/capture")]
    assert forms[0] == {"amount_to_capture": "2000", "final_capture": "false"}
    assert forms[1] == {"amount_to_capture": "3000"}
    assert captured["total"] == 5000
    assert server.sent("GET", INTENT) == [], "nothing is re-read to decide the parameters"


async def test_without_multicapture_a_second_capture_is_stripes_refusal(
    server: ScriptedStripe, provider: StripeProvider
) -> None:
    server.route("POST", f"{INTENT}/capture", (400, load("error_unexpected_state.json")))

    outcome = await provider.capture(call("capture", "cmd_2", amount=3000))

    assert outcome.kind is OutcomeKind.FAILED
    assert outcome.code == "payment_intent_unexpected_state"
    assert "final_capture" not in server.sent("POST", f"{INTENT}/capture")[0].form


@pytest.mark.parametrize(
    ("reason", "stripe_reason"),
    [
        ("fraud", "fraudulent"),
        ("requested_by_customer", "requested_by_customer"),
        ("damaged", None),
    ],
)
async def test_refund_reason_goes_to_stripes_field_or_metadata(
    server: ScriptedStripe, provider: StripeProvider, reason: str, stripe_reason: str | None
) -> None:
    server.route("POST", "/v1/refunds", ok("refund_succeeded.json"))

    outcome = await provider.refund(call("refund", "cmd_r", amount=1000, reason=reason))

    assert (outcome.kind, outcome.amount) == (OutcomeKind.SUCCEEDED, 1000)
    form = server.sent("POST", "/v1/refunds")[0].form
    assert form["payment_intent"] == PI
    assert form["amount"] == "1000"
    assert form.get("reason") == stripe_reason
    assert form["metadata[reason]"] == reason
    assert form[f"metadata[{REFUND_KEY_METADATA}]"] == "refund:cmd_r"


async def test_refund_status_is_found_by_its_key_in_the_refunds_list(
    server: ScriptedStripe, provider: StripeProvider
) -> None:
    ours = {**load("refund_succeeded.json"), "metadata": {REFUND_KEY_METADATA: "refund:cmd_r"}}
    other = {**load("refund_succeeded.json"), "id": "re_other", "amount": 3000}
    listing = {"object": "list", "data": [other, ours], "has_more": False, "url": "/v1/refunds"}
    server.route("GET", "/v1/refunds", (200, listing))

    found = await provider.get_status(call("refund", "cmd_r", amount=1000))
    missing = await provider.get_status(call("refund", "cmd_never", amount=1000))

    assert (found.kind, found.data["id"]) == (OutcomeKind.SUCCEEDED, ours["id"])
    assert missing.kind is OutcomeKind.TRANSIENT
    assert server.sent("GET", "/v1/refunds")[0].form["payment_intent"] == PI


async def test_cancel_of_an_already_canceled_intent_succeeds(
    server: ScriptedStripe, provider: StripeProvider
) -> None:
    server.route("POST", f"{INTENT}/cancel", (400, load("error_unexpected_state.json")))
    server.route("GET", INTENT, ok("payment_intent_canceled.json"))

    outcome = await provider.cancel(call("cancel", "cmd_c"))

    assert outcome.kind is OutcomeKind.SUCCEEDED
    assert server.sent("POST", f"{INTENT}/cancel")[0].idempotency_key == "cancel:cmd_c"


# -- authorization shapes -----------------------------------------------------------------


async def test_redirect_three_d_secure_passes_return_url_and_returns_the_action(
    server: ScriptedStripe, provider: StripeProvider
) -> None:
    server.route("GET", INTENT, ok("payment_intent_requires_confirmation.json"))
    server.route("POST", f"{INTENT}/confirm", ok("payment_intent_requires_action.json"))

    outcome = await provider.authorize(
        call(
            "authorize",
            "idem_3ds",
            payment_data={
                "payment_method": "pm_1QfXzA2eZvKYlo2CvisaVisa",
                "return_url": "https://shop.example/checkout/return",
            },
        )
    )

    assert outcome.kind is OutcomeKind.REQUIRES_MORE
    assert outcome.action is not None and outcome.action["type"] == "redirect_to_url"
    confirm = server.sent("POST", f"{INTENT}/confirm")[0]
    assert confirm.form == {"return_url": "https://shop.example/checkout/return"}
    assert server.sent("POST", INTENT) == []  # method already attached: no update


async def test_capture_on_authorize_creates_automatic_intents_and_reports_the_capture(
    server: ScriptedStripe,
) -> None:
    provider = await make_provider(server, capture=True)
    server.route("POST", "/v1/payment_intents", ok("payment_intent_requires_payment_method.json"))
    server.route("GET", INTENT, ok("payment_intent_requires_confirmation.json"))
    server.route("POST", f"{INTENT}/confirm", ok("payment_intent_succeeded.json"))
    try:
        await provider.initiate(call("initiate", "ps_1:initiate", data={}))
        outcome = await provider.authorize(
            call(
                "authorize",
                "idem_auto",
                payment_data={"payment_method": "pm_1QfXzA2eZvKYlo2CvisaVisa"},
            )
        )
    finally:
        await provider.close()

    assert server.sent("POST", "/v1/payment_intents")[0].form["capture_method"] == "automatic"
    assert (outcome.kind, outcome.captured, outcome.amount) == (OutcomeKind.SUCCEEDED, True, 5000)


async def test_a_failed_attempt_with_the_same_method_is_a_decline_without_a_new_charge(
    server: ScriptedStripe, provider: StripeProvider
) -> None:
    server.route("GET", INTENT, ok("payment_intent_payment_failed.json"))

    outcome = await provider.authorize(
        call("authorize", "idem_f", payment_data={"payment_method": "pm_1QfXzA2eZvKYlo2CnoFunds0"})
    )

    assert (outcome.kind, outcome.code) == (OutcomeKind.DECLINED, "insufficient_funds")
    assert server.sent("POST", f"{INTENT}/confirm") == []


async def test_a_new_method_after_a_failed_attempt_is_a_new_confirmation(
    server: ScriptedStripe, provider: StripeProvider
) -> None:
    server.route("GET", INTENT, ok("payment_intent_payment_failed.json"))
    server.route("POST", INTENT, ok("payment_intent_requires_confirmation.json"))
    server.route("POST", f"{INTENT}/confirm", ok("payment_intent_requires_capture.json"))

    outcome = await provider.authorize(
        call("authorize", "idem_f", payment_data={"payment_method": "pm_new"})
    )

    assert outcome.kind is OutcomeKind.SUCCEEDED
    assert server.sent("POST", INTENT)[0].form == {"payment_method": "pm_new"}
    assert server.sent("POST", f"{INTENT}/confirm")[0].idempotency_key == "authorize:idem_f:pm_new"


@pytest.mark.parametrize(
    ("amount", "currency", "sent"),
    [(5000, "jpy", "5000"), (5120, "kwd", "5120"), (5, "isk", "500"), (5000, "usd", "5000")],
)
async def test_amounts_are_sent_in_stripes_minor_units(
    server: ScriptedStripe, provider: StripeProvider, amount: int, currency: str, sent: str
) -> None:
    server.route("POST", "/v1/payment_intents", ok("payment_intent_requires_payment_method.json"))

    outcome = await provider.initiate(
        call("initiate", "ps_1:initiate", amount=amount, currency=currency, data={})
    )

    assert outcome.kind is OutcomeKind.SUCCEEDED
    form = server.sent("POST", "/v1/payment_intents")[0].form
    assert (form["amount"], form["currency"]) == (sent, currency)


async def test_an_amount_stripe_cannot_take_fails_before_any_request(
    server: ScriptedStripe, provider: StripeProvider
) -> None:
    outcome = await provider.initiate(
        call("initiate", "ps_1:initiate", amount=5125, currency="kwd", data={})
    )

    assert (outcome.kind, outcome.code) == (OutcomeKind.FAILED, "amount_not_representable")
    assert server.requests == []


# -- Stripe's error bodies over HTTP ----------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (402, "error_card_declined.json", OutcomeKind.DECLINED),
        (429, "error_rate_limit.json", OutcomeKind.TRANSIENT),
        (500, "error_api.json", OutcomeKind.UNKNOWN),
        (409, "error_idempotency_in_use.json", OutcomeKind.TRANSIENT),
        (400, "error_idempotency.json", OutcomeKind.FAILED),
        (400, "error_no_such_payment_method.json", OutcomeKind.INVALID_DATA),
        (401, "error_authentication.json", OutcomeKind.FAILED),
        (403, "error_permission.json", OutcomeKind.FAILED),
    ],
)
async def test_confirm_errors_map_to_outcome_kinds(
    server: ScriptedStripe, provider: StripeProvider, status: int, body: str, kind: OutcomeKind
) -> None:
    server.route("GET", INTENT, ok("payment_intent_requires_confirmation.json"))
    server.route("POST", f"{INTENT}/confirm", (status, load(body)))

    outcome = await provider.authorize(
        call("authorize", "idem_e", payment_data={"payment_method": "pm_1QfXzA2eZvKYlo2CvisaVisa"})
    )

    assert outcome.kind is kind
    assert len(server.sent("POST", f"{INTENT}/confirm")) == 1, "the SDK must not retry by itself"


async def test_a_5xx_status_read_could_not_tell_and_an_unreachable_stripe_is_transient() -> None:
    with ScriptedStripe() as server:
        server.route("GET", INTENT, (503, load("error_api.json")))
        provider = await make_provider(server)
        try:
            status = await provider.get_status(call("authorize", "idem_s"))
        finally:
            await provider.close()
        unreachable_base = server.api_base
    # An error of the status query itself says nothing of the authorization.
    assert status.kind is OutcomeKind.UNKNOWN
    assert status.reference == PI

    # The server is gone: the connection is refused, nothing can have reached Stripe.
    provider = StripeProvider({"api_key": "sk_test_x", "api_base": unreachable_base})
    try:
        refused = await provider.capture(call("capture", "cmd_x"))
    finally:
        await provider.close()
    assert refused.kind is OutcomeKind.TRANSIENT
