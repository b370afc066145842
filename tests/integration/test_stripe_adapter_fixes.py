"""Issue 13 regressions at the Stripe adapter's HTTP boundary (kit.ScriptedStripe).

* phantom partial captures: after a lost capture answer, a succeeded intent does
  not prove that *this* capture happened;
* the 24-hour lock: the create key followed the session while the create
  parameters followed the amount, and Stripe refuses a key reused with other
  parameters for 24 hours.

The scripted server behaves as Stripe documents: a key replays its first answer,
and a key reused with other parameters is an `idempotency_error`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from service.adapters.providers.stripe import StripeProvider
from service.domain.calls import CallOperation, ProviderCall
from service.domain.outcomes import OutcomeKind
from service.provider_calls import ProviderCaller, RetryPolicy
from tests.fixtures.stripe.kit import Recorded, Reply, ScriptedStripe, load
from tests.support.call_builders import provider_call

pytestmark = pytest.mark.integration

PI = "pi_3QfXyZ2eZvKYlo2C0a1b2c3d"
INTENT = f"/v1/payment_intents/{PI}"
IDS = {"session_id": "ps_1", "cart_id": "cart_1"}
CALLER = ProviderCaller(RetryPolicy(timeout_s=10, max_attempts=3, base_delay_s=0.01))


def fixture(name: str, **changes: Any) -> dict[str, Any]:
    return {**load(name, **IDS), **changes}


def call(operation: CallOperation, key: str, amount: int, **values: Any) -> ProviderCall:
    values.setdefault("data", {"id": PI})
    return provider_call(operation, "stripe", key, amount, payment_id="pay_1", **values)


@pytest.fixture
def server() -> Iterator[ScriptedStripe]:
    with ScriptedStripe() as scripted:
        yield scripted


@pytest.fixture
async def provider(server: ScriptedStripe) -> AsyncIterator[StripeProvider]:
    built = StripeProvider({"api_key": "sk_test_scripted", "api_base": server.api_base})
    yield built
    await built.close()


def stripe_keys(server: ScriptedStripe, path: str, handler: Any) -> Any:
    """Stripe's rule on top of `handler`: a key reused with other parameters is refused."""
    first_params: dict[str, dict[str, str]] = {}

    def handle(request: Recorded) -> Reply | None:
        key = request.idempotency_key or ""
        seen = first_params.setdefault(key, request.form)
        if seen != request.form:
            return 400, load("error_idempotency.json")
        reply: Reply | None = handler(request)
        return reply

    server.route("POST", path, handle)


# -- phantom partial captures ---------------------------------------------------------------


async def test_lost_second_partial_capture_is_not_booked_when_stripe_took_another(
    server: ScriptedStripe, provider: StripeProvider
) -> None:
    """3000 of 5000 captured earlier (the rest released); a capture of 2000 whose
    answer was lost finds the intent `succeeded` with 3000 received."""
    server.route("POST", f"{INTENT}/capture", lambda r: None)  # no effect, no answer
    server.route(
        "GET", INTENT, (200, fixture("payment_intent_succeeded.json", amount_received=3000))
    )

    outcome = await CALLER.call(provider, call("capture", "cmd_second", 2000))

    assert outcome.kind is OutcomeKind.FAILED, outcome
    assert server.effects == []


async def test_lost_partial_capture_of_the_same_amount_asks_stripe_under_its_key(
    server: ScriptedStripe, provider: StripeProvider
) -> None:
    """Same amount as the capture Stripe took: only Stripe's record of our key can
    tell, so the capture is re-sent under it — and Stripe refuses it."""
    attempts: list[Recorded] = []

    def capture(request: Recorded) -> Reply | None:
        attempts.append(request)
        return None  # Stripe refused it (the intent was captured); the answer is lost

    server.route("POST", f"{INTENT}/capture", capture)
    server.lost_answers[f"{INTENT}/capture"] = (400, load("error_unexpected_state.json"))
    server.route(
        "GET", INTENT, (200, fixture("payment_intent_succeeded.json", amount_received=2500))
    )

    outcome = await CALLER.call(provider, call("capture", "cmd_second", 2500))

    assert outcome.kind is OutcomeKind.FAILED, outcome
    assert outcome.code == "payment_intent_unexpected_state"
    resent = server.sent("POST", f"{INTENT}/capture")
    assert len(resent) == 2 and len(attempts) == 1  # the second was Stripe's replay
    assert {r.idempotency_key for r in resent} == {"capture:cmd_second"}
    assert server.effects == []


async def test_lost_partial_capture_that_happened_is_booked_from_stripes_replay(
    server: ScriptedStripe, provider: StripeProvider
) -> None:
    succeeded = fixture("payment_intent_succeeded.json", amount_received=2500)

    def capture(request: Recorded) -> Reply | None:
        server.act(request)
        return None  # captured; the answer is lost

    server.route("POST", f"{INTENT}/capture", capture)
    server.lost_answers[f"{INTENT}/capture"] = (200, succeeded)
    server.route("GET", INTENT, (200, succeeded))

    outcome = await CALLER.call(provider, call("capture", "cmd_first", 2500))

    assert outcome.kind is OutcomeKind.SUCCEEDED, outcome
    assert outcome.amount == 2500
    assert len(server.effects) == 1  # the re-send was Stripe's replay, not a capture


async def test_lost_full_capture_is_settled_by_the_status_query_alone(
    server: ScriptedStripe, provider: StripeProvider
) -> None:
    server.route("POST", f"{INTENT}/capture", lambda r: server.act(r))  # act, then drop
    server.route("GET", INTENT, (200, fixture("payment_intent_succeeded.json")))

    outcome = await CALLER.call(provider, call("capture", "cmd_full", 5000))

    assert outcome.kind is OutcomeKind.SUCCEEDED
    assert len(server.sent("POST", f"{INTENT}/capture")) == 1


# -- the 24-hour lock ----------------------------------------------------------------------


async def test_amount_change_after_a_lost_create_answer_does_not_lock_the_session(
    server: ScriptedStripe, provider: StripeProvider
) -> None:
    created: list[Recorded] = []

    def create(request: Recorded) -> Reply | None:
        created.append(request)
        server.act(request)
        if len(created) == 1:
            return None  # Stripe created the intent; the answer was lost
        return 200, fixture(
            "payment_intent_requires_payment_method.json", amount=int(request.form["amount"])
        )

    stripe_keys(server, "/v1/payment_intents", create)
    server.lost_answers["/v1/payment_intents"] = (
        200,
        fixture("payment_intent_requires_payment_method.json", amount=5000),
    )

    lost = await provider.initiate(call("initiate", "ps_1:initiate", 5000, data={}))
    assert lost.kind is not OutcomeKind.SUCCEEDED
    # The cart changed before anything else: the session's new amount.
    updated = await provider.update(call("update", "ps_1:update:1", 6000, data={}))

    assert updated.kind is OutcomeKind.SUCCEEDED, updated
    assert updated.data["amount"] == 6000
    keys = [r.idempotency_key for r in created]
    assert keys[0] != keys[1], "a create with other parameters needs another key"
    # The same parameters keep the same key: a retry still reaches the first intent.
    again = await provider.initiate(call("initiate", "ps_1:initiate", 5000, data={}))
    assert again.kind is OutcomeKind.SUCCEEDED
    assert server.sent("POST", "/v1/payment_intents")[-1].idempotency_key == keys[0]
    assert len(server.effects) == 2  # answered from Stripe's record of the first key


# -- a pending refund is not money back ----------------------------------------------------


async def test_pending_refund_answer_is_pending_not_done(
    server: ScriptedStripe, provider: StripeProvider
) -> None:
    """Stripe accepts some refunds as `pending`; they can still fail. Booking them as
    done made a later failure invisible (issue 13)."""
    pending = fixture("refund_succeeded.json", status="pending")
    server.route("POST", "/v1/refunds", (200, pending))
    server.route("GET", "/v1/refunds", (200, {"object": "list", "data": [], "has_more": False}))

    refund = call("refund", "cmd_refund", 1000)
    outcome = await provider.refund(refund)

    assert outcome.kind is OutcomeKind.PENDING, outcome
    (sent,) = server.sent("POST", "/v1/refunds")
    # Our call's key rides along, so the refund's webhooks name the reservation.
    assert sent.form["metadata[payments_call_key]"] == "cmd_refund"
    listed = {**pending, "metadata": {"payments_refund_key": "refund:cmd_refund"}}
    server.route("GET", "/v1/refunds", (200, {"object": "list", "data": [listed]}))
    assert (await provider.get_status(refund)).kind is OutcomeKind.PENDING
    settled = {**listed, "status": "succeeded"}
    server.route("GET", "/v1/refunds", (200, {"object": "list", "data": [settled]}))
    assert (await provider.get_status(refund)).kind is OutcomeKind.SUCCEEDED
