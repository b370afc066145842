"""Issue 22: the books end where the provider's ledger is, whatever order its facts
arrive in. The ten sequences of the issue, each a short script over the service
layer (`tests/support/world.py`) and the Stripe model
(`tests/support/stripe_processor.py`), asserting the end state the contract asks for
(promise 9; reasons `needs_attention` and `operation_in_flight`; `released_amount`).

They read only what the contract and the port show: published events, the
collection as stored, and Stripe's ledger per PaymentIntent.
"""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta
from typing import Any

import pytest

from service.handlers import HandleResult
from tests.support.stripe_processor import (
    PM_3DS,
    PM_OK,
    PaymentIntent,
    StripeProcessor,
    as_ledger,
    books_of,
    envelope_id,
    needs_attention,
    published_data,
    webhook_of,
)
from tests.support.world import World, handle

pytestmark = pytest.mark.asyncio

CART = "cart_1"


class Crash(BaseException):
    """The service process dies (nothing in the service may catch it)."""


# -- plumbing ---------------------------------------------------------------------------------


def stripe_world(
    *, automatic: bool = False, multicapture: bool = False
) -> tuple[World, StripeProcessor]:
    """The service with the Stripe model as `stripe` and a generic `manual` provider."""
    world = World("manual")
    stripe = world.install(
        StripeProcessor("stripe", clock=world.clock, automatic=automatic, multicapture=multicapture)
    )
    return world, stripe


async def deliver(
    world: World, stripe: StripeProcessor, event: dict[str, Any], *, envelope: str | None = None
) -> HandleResult:
    """One Stripe event through the real webhook path (`payment.provider_webhook`)."""
    data = webhook_of(stripe.id, event, world.now)
    event_id = envelope or envelope_id(stripe.id, event)
    return await world.deliver(await handle(world.service, event_id, data))


async def deliver_all(
    world: World, stripe: StripeProcessor, order: str = "forward", seed: int = 0
) -> None:
    """Every event Stripe has not delivered yet, in the order asked."""
    pending, stripe.outbox = stripe.outbox, []
    if order == "reverse":
        pending.reverse()
    elif order == "shuffled":
        random.Random(seed).shuffle(pending)
    for event in pending:
        await deliver(world, stripe, event)


async def settle(world: World, stripe: StripeProcessor, rounds: int = 12) -> None:
    """Quiescence: every webhook delivered, the clock past leases and back-offs, the
    reconciler and the relay run until nothing is left."""
    for _ in range(rounds):
        await deliver_all(world, stripe)
        world.advance(minutes=10)
        stripe.tick()
        await world.reconcile()
        await world.relay.run_once(timedelta(seconds=5))
    await deliver_all(world, stripe)


async def authorized(
    world: World, stripe: StripeProcessor, amount: int = 5000
) -> tuple[str, PaymentIntent]:
    """A cart authorized on Stripe: its payment id and its PaymentIntent."""
    await world.cart(CART, amount)
    await world.checkout(
        CART, amount, "K1", provider="stripe", payment_data={"payment_method": PM_OK}
    )
    collection = await world.collection(CART)
    assert collection.payment is not None, "the authorization was not booked"
    intent = stripe.intent_of_session(collection.payment.session_id)
    assert intent is not None and intent.status in ("requires_capture", "succeeded")
    return collection.payment.id, intent


async def assert_books_follow_stripe(world: World, stripe: StripeProcessor) -> PaymentIntent:
    """Promise 9 at quiescence: the payment's books equal its PaymentIntent's ledger,
    no other hold of the cart is live, nothing is unknown without `needs_attention`."""
    collection = await world.collection(CART)
    payment = collection.payment
    assert payment is not None
    intent = stripe.intent_of_session(payment.session_id)
    assert intent is not None, "the payment names no PaymentIntent of the provider"
    stripe.check_ledger()
    books = as_ledger(books_of(payment, world.publisher.published))
    assert books == stripe.ledger(intent.id), f"books {books} != Stripe {stripe.ledger(intent.id)}"
    others = [i.id for i in stripe.live_intents(CART) if i.id != intent.id]
    assert others == [], f"live holds besides the payment's: {others}"
    assert not collection.needs_reconcile or needs_attention(world.publisher.published, CART), (
        "left unknown without needs_attention"
    )
    assert collection.unsent_events == []
    return intent


def failures(world: World, operation: str, **match: Any) -> list[dict[str, Any]]:
    return published_data(
        world.publisher.published, "payment.failed", cart_id=CART, operation=operation, **match
    )


def answers_to(world: World, command_id: str) -> list[Any]:
    return [e for e in world.publisher.published if e.causation_id == command_id]


# -- 1 ------------------------------------------------------------------------------------------


async def test_seq1_a_second_failure_event_of_one_refund_leaves_the_other_refund_booked() -> None:
    """Capture 5000; refund R1 1000 succeeds; R2 1000 answers pending; Stripe sends
    `refund.updated` and then `refund.failed` for R2. Only R2 is undone, once."""
    world, stripe = stripe_world()
    payment_id, intent = await authorized(world, stripe)
    await world.command("capture", payment_id, amount=5000)
    await world.command("refund", payment_id, amount=1000, command_id="cmd_r1")
    stripe.pending_refunds = 1
    await world.command("refund", payment_id, amount=1000, command_id="cmd_r2")
    r1, r2 = intent.refunds
    assert (r1.status, r2.status) == ("succeeded", "pending")
    await deliver_all(world, stripe)

    assert stripe.settle_refund(r2.id, "failed")  # refund.updated, then refund.failed
    await settle(world, stripe)

    await assert_books_follow_stripe(world, stripe)
    assert stripe.ledger(intent.id).refunded == 1000
    refunded = published_data(world.publisher.published, "payment.refunded", cart_id=CART)
    assert sum(d["amount"] for d in refunded) == 1000, refunded
    assert len(failures(world, "refund")) == 1, failures(world, "refund")


# -- 2 ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("automatic", [False, True], ids=["manual_capture", "automatic_capture"])
async def test_seq2_a_hold_finished_late_on_another_session_is_released(automatic: bool) -> None:
    """3-D Secure on Stripe; the shopper pays with `manual` instead; then finishes the
    challenge anyway. Stripe's hold (or charge) must be released, the payment stays."""
    world, stripe = stripe_world(automatic=automatic)
    await world.cart(CART, 5000)
    await world.checkout(
        CART, 5000, "K1", provider="stripe", payment_data={"payment_method": PM_3DS}
    )
    assert world.published("payment.requires_action", CART)
    await world.checkout(CART, 5000, "K2", provider="manual")
    collection = await world.collection(CART)
    assert collection.payment is not None and collection.payment.provider_id == "manual"
    (intent,) = stripe.intents_of_cart(CART)

    assert stripe.finish_3ds(intent.id)  # the customer finishes the challenge late
    assert intent.live
    await settle(world, stripe)

    assert not intent.live, f"Stripe still holds {intent}"
    ledger = stripe.ledger(intent.id)
    if automatic:
        assert ledger.refunded == ledger.captured == 5000
    else:
        assert ledger.released == 5000 and ledger.canceled
    collection = await world.collection(CART)
    payment = collection.payment
    assert payment is not None and payment.provider_id == "manual"
    assert (payment.amount, payment.captured_total, payment.is_canceled) == (5000, 0, False)
    assert [h.id for h in world.processors["manual"].live_holds(CART)] == [payment.data["hold_id"]]
    assert not collection.needs_reconcile


# -- 3 ------------------------------------------------------------------------------------------


async def test_seq3a_a_dashboard_refund_delivered_before_its_capture_is_booked() -> None:
    """A dashboard capture and refund; Stripe delivers the refund's events first."""
    world, stripe = stripe_world()
    _, intent = await authorized(world, stripe)
    await deliver_all(world, stripe)
    assert stripe.dashboard_capture(intent.id)
    assert stripe.dashboard_refund(intent.id, 2000) is not None

    await deliver_all(world, stripe, order="reverse")
    await settle(world, stripe)

    await assert_books_follow_stripe(world, stripe)
    assert (stripe.ledger(intent.id).captured, stripe.ledger(intent.id).refunded) == (5000, 2000)


async def test_seq3b_a_dashboard_capture_while_ours_is_in_flight() -> None:
    """A dashboard capture of 3000 (the rest released) while our capture of 5000 is
    in flight: ours is refused; the books hold Stripe's 3000."""
    world, stripe = stripe_world()
    payment_id, intent = await authorized(world, stripe)
    await deliver_all(world, stripe)

    async def dashboard_capture() -> None:
        assert stripe.dashboard_capture(intent.id, 3000)
        await deliver_all(world, stripe)

    stripe.on("capture", dashboard_capture)
    await world.command("capture", payment_id, amount=5000)
    await settle(world, stripe)

    await assert_books_follow_stripe(world, stripe)
    ledger = stripe.ledger(intent.id)
    assert (ledger.captured, ledger.released) == (3000, 2000)


async def test_seq3c_stripe_cancels_the_authorization_while_our_capture_is_in_flight() -> None:
    """Stripe's automatic cancel (7 days) lands while our capture is in flight: ours is
    refused; the payment ends canceled, not `authorized` for ever."""
    world, stripe = stripe_world()
    payment_id, intent = await authorized(world, stripe)
    await deliver_all(world, stripe)

    async def expiry() -> None:
        world.advance(days=7)
        stripe.tick()
        await deliver_all(world, stripe)

    stripe.on("capture", expiry)
    await world.command("capture", payment_id, amount=5000)
    await settle(world, stripe)

    await assert_books_follow_stripe(world, stripe)
    assert stripe.ledger(intent.id).canceled
    assert (await world.collection(CART)).status == "canceled"


# -- 4 ------------------------------------------------------------------------------------------


async def test_seq4_a_retried_multicapture_sends_the_same_parameters_under_its_key() -> None:
    """Capture 3000 of 5000 with multicapture; the service dies once Stripe captured;
    the redelivered command re-sends the call: same key, same parameters
    (`final_capture: false`), so Stripe answers from its record and 2000 stay capturable."""
    world, stripe = stripe_world(multicapture=True)
    payment_id, intent = await authorized(world, stripe)

    async def crash() -> None:
        raise Crash("killed after Stripe captured")

    stripe.after("capture", crash)
    with pytest.raises(Crash):
        await world.command("capture", payment_id, amount=3000, command_id="cmd_cap")
    await world.command("capture", payment_id, amount=3000, command_id="cmd_cap")
    await settle(world, stripe)

    assert failures(world, "capture") == [], failures(world, "capture")
    assert intent.amount_capturable == 2000, f"the rest was released: {intent}"
    assert len(stripe.executed("capture")) == 1, f"executed again: {stripe.requests}"
    await assert_books_follow_stripe(world, stripe)

    await world.command("capture", payment_id, amount=2000)
    await settle(world, stripe)
    await assert_books_follow_stripe(world, stripe)
    assert stripe.ledger(intent.id).captured == 5000


# -- 5 ------------------------------------------------------------------------------------------


async def test_seq5_a_cart_changing_currency_while_the_authorization_is_unknown() -> None:
    """`cart.updated` with another currency while the authorization is unknown: the
    payment is booked (and announced) in the currency Stripe holds."""
    world, stripe = stripe_world()
    await world.cart(CART, 5000)
    stripe.inject("authorize", "lose", "lose")
    stripe.inject("get_status", *["status_fail"] * 4)
    await world.checkout(
        CART, 5000, "K1", provider="stripe", payment_data={"payment_method": PM_OK}
    )
    assert (await world.collection(CART)).payment is None  # unknown to the books
    await world.cart(CART, 5000, currency_code="eur")

    await settle(world, stripe)

    intent = await assert_books_follow_stripe(world, stripe)
    assert intent.currency == "usd"
    (announced,) = published_data(world.publisher.published, "payment.authorized", cart_id=CART)
    assert (announced["currency_code"], announced["amount"]) == ("usd", 5000)


# -- 6 ------------------------------------------------------------------------------------------


async def test_seq6_a_late_success_of_an_earlier_attempt_never_voids_the_payments_intent() -> None:
    """K1's confirmation is on its way to Stripe past its lease; the reconciler finds the
    intent unconfirmed and fails K1; the storefront retries with K2, which becomes the
    payment. K1's answer (the same PaymentIntent) must not void the payment's hold."""
    world, stripe = stripe_world()
    await world.cart(CART, 5000)

    async def the_storefront_retries() -> None:
        world.advance(hours=1)  # past K1's lease
        await world.reconcile()
        await world.checkout(
            CART, 5000, "K2", provider="stripe", payment_data={"payment_method": PM_OK}
        )

    stripe.on("authorize", the_storefront_retries)
    await world.checkout(
        CART, 5000, "K1", provider="stripe", payment_data={"payment_method": PM_OK}
    )
    await settle(world, stripe)

    (intent,) = stripe.intents_of_cart(CART)
    assert intent.status == "requires_capture", f"the payment's own intent was voided: {intent}"
    await assert_books_follow_stripe(world, stripe)
    authorized_events = world.published("payment.authorized", CART)
    assert len({e.id for e in authorized_events}) == 1
    assert world.published("payment.canceled", CART) == []


# -- 7 ------------------------------------------------------------------------------------------


async def test_seq7a_a_status_query_that_errs_is_no_outcome() -> None:
    """A refund whose answer was lost, and status queries that fail (401 after a key
    rotation, a timeout): the refund stays unknown, is never reported failed, and
    settles to Stripe's answer once Stripe can be asked."""
    world, stripe = stripe_world()
    payment_id, intent = await authorized(world, stripe)
    await world.command("capture", payment_id, amount=5000)
    stripe.inject("refund", "lose", "lose")
    stripe.inject("get_status", *["status_fail"] * 6)
    await world.command("refund", payment_id, amount=1000)
    assert failures(world, "refund") == []
    for _ in range(3):  # the reconciler's passes meet the failing queries
        world.advance(minutes=10)
        await world.reconcile()
    assert failures(world, "refund") == []

    await settle(world, stripe)

    await assert_books_follow_stripe(world, stripe)
    assert stripe.ledger(intent.id).refunded == 1000
    assert failures(world, "refund") == []


async def test_seq7b_a_capture_unknown_past_the_key_window_is_not_booked_as_failed() -> None:
    """A capture whose answers were lost stays unknown for more than 24 h (its webhooks
    late): re-sending it now would be a new request, which Stripe refuses because the
    intent is captured. It must not be booked as failed; the books end at Stripe's 5000."""
    world, stripe = stripe_world()
    payment_id, intent = await authorized(world, stripe)
    await deliver_all(world, stripe)
    stripe.inject("capture", "lose", "lose")
    stripe.inject("get_status", "status_fail", "status_fail")
    await world.command("capture", payment_id, amount=5000)
    assert intent.amount_received == 5000
    late, stripe.outbox = stripe.outbox, []  # Stripe's webhooks are delayed

    world.advance(hours=25)
    for _ in range(3):
        await world.reconcile()
        world.advance(minutes=10)
    stripe.outbox = late + stripe.outbox
    await settle(world, stripe)

    wrong = [f for f in failures(world, "capture") if f["reason"] != "needs_attention"]
    assert wrong == [], f"a capture Stripe made was answered as failed: {wrong}"
    await assert_books_follow_stripe(world, stripe)


# -- 8 ------------------------------------------------------------------------------------------


async def test_seq8_without_multicapture_a_partial_capture_releases_the_rest() -> None:
    """Capture 3000 of 5000 without multicapture: Stripe releases 2000. The books say
    so (`released_amount`), nothing is left to capture (no second capture reaches
    Stripe), and cancel is refused `already_captured`."""
    world, stripe = stripe_world(multicapture=False)
    payment_id, intent = await authorized(world, stripe)
    await world.command("capture", payment_id, amount=3000)
    (captured,) = published_data(world.publisher.published, "payment.captured", cart_id=CART)
    assert captured.get("released_amount") == 2000, f"no released_amount: {captured}"

    await world.command("capture", payment_id, amount=1000, command_id="cmd_second")
    await world.command("cancel", payment_id, command_id="cmd_cancel")
    await settle(world, stripe)

    assert len(stripe.executed("capture")) == 1, stripe.requests
    second = [(e.type, e.payload["data"].get("operation")) for e in answers_to(world, "cmd_second")]
    assert second == [("payment.failed", "capture")], second
    cancel = [e.payload["data"] for e in answers_to(world, "cmd_cancel")]
    assert [d.get("reason") for d in cancel] == ["already_captured"], [
        d.get("reason") for d in cancel
    ]
    await assert_books_follow_stripe(world, stripe)
    assert stripe.ledger(intent.id).released == 2000


# -- 9 ------------------------------------------------------------------------------------------


async def test_seq9_a_late_webhook_of_a_deleted_session_never_lands_on_the_new_one() -> None:
    """A Stripe session (3-D Secure pending) is deleted when the region stops offering
    Stripe; a new session pays. The first intent's late webhooks (requires_action,
    canceled) must not touch the payment."""
    world, stripe = stripe_world()
    world.registry.regions.update({"eu": ("stripe", "manual"), "us": ("manual",)})
    await world.cart(CART, 5000, region="eu", version=1)
    await world.checkout(
        CART, 5000, "K1", provider="stripe", payment_data={"payment_method": PM_3DS}
    )
    late, stripe.outbox = stripe.outbox, []
    await world.cart(CART, 5000, region="us", version=2)  # the Stripe session is deleted
    late, stripe.outbox = late + stripe.outbox, []
    (first,) = stripe.intents_of_cart(CART)
    assert first.status == "canceled"
    await world.cart(CART, 5000, region="eu", version=3)  # a new Stripe session
    await world.checkout(
        CART, 5000, "K2", provider="stripe", payment_data={"payment_method": PM_OK}
    )
    collection = await world.collection(CART)
    assert collection.payment is not None

    stripe.outbox = late + stripe.outbox
    await settle(world, stripe)

    intent = await assert_books_follow_stripe(world, stripe)
    assert intent.id != first.id and intent.status == "requires_capture"
    assert world.published("payment.canceled", CART) == []


# -- 10 -----------------------------------------------------------------------------------------


async def test_seq10a_no_refund_after_a_lost_dispute() -> None:
    """A dispute of the whole 5000 is lost: nothing is left to refund, so a refund is
    refused by the service (`amount_exceeds_captured`) without asking Stripe."""
    world, stripe = stripe_world()
    payment_id, intent = await authorized(world, stripe)
    await world.command("capture", payment_id, amount=5000)
    dispute = stripe.open_dispute(intent.id)
    assert dispute is not None and stripe.close_dispute(dispute.id, won=False)
    await deliver_all(world, stripe)

    await world.command("refund", payment_id, amount=1000, command_id="cmd_refund")
    await settle(world, stripe)

    assert [m for m, _ in stripe.calls if m == "refund"] == [], "Stripe was asked to refund"
    answer = [e.payload["data"] for e in answers_to(world, "cmd_refund")]
    reasons = [d.get("reason") for d in answer]
    assert reasons in (["amount_exceeds_captured"], ["nothing_captured"]), reasons
    await assert_books_follow_stripe(world, stripe)


async def test_seq10b_one_stripe_event_under_several_envelope_ids_is_applied_once() -> None:
    """A genuinely signed body replayed on the topic under a new envelope id is the same
    Stripe event (same `evt_` id): it changes nothing the first delivery did not."""
    world, stripe = stripe_world()
    payment_id, intent = await authorized(world, stripe)
    await world.command("capture", payment_id, amount=5000)
    assert stripe.dashboard_refund(intent.id, 1000) is not None
    stripe.pending_refunds = 1
    await world.command("refund", payment_id, amount=1000)
    assert stripe.settle_refund(intent.refunds[-1].id, "succeeded")
    dispute = stripe.open_dispute(intent.id)
    assert dispute is not None and stripe.close_dispute(dispute.id, won=True)
    events, stripe.outbox = stripe.outbox, []
    for event in events:
        await deliver(world, stripe, event)
    for n, event in enumerate(events):
        await deliver(world, stripe, event, envelope=f"replayed_{n}")
    for n, event in enumerate(reversed(events)):
        await deliver(world, stripe, event, envelope=f"replayed_again_{n}")
    await settle(world, stripe)

    await assert_books_follow_stripe(world, stripe)
    refunded = published_data(world.publisher.published, "payment.refunded", cart_id=CART)
    assert sorted(d["amount"] for d in refunded) == [1000, 1000], refunded
    disputed = published_data(world.publisher.published, "payment.disputed", cart_id=CART)
    assert sorted(d["status"] for d in disputed) == ["open", "won"], disputed


async def _command_meets_one_in_flight(
    first: str, second: str
) -> tuple[World, StripeProcessor, Any]:
    """`second` is sent while `first` is at Stripe. Returns the world, Stripe and
    the answer to `second` (and whether it came while `first` was in flight)."""
    world, stripe = stripe_world()
    payment_id, _ = await authorized(world, stripe)
    seen: dict[str, Any] = {}

    async def second_command() -> None:
        task = asyncio.ensure_future(
            world.command(
                second,
                payment_id,
                amount=5000 if second != "cancel" else None,
                command_id="cmd_second",
            )
        )
        for _ in range(50):
            await asyncio.sleep(0)
        seen["task"], seen["in_flight"] = task, task.done()

    stripe.on(first, second_command)
    await world.command(
        first, payment_id, amount=5000 if first != "cancel" else None, command_id="cmd_first"
    )
    await seen["task"]
    return world, stripe, seen["in_flight"]


@pytest.mark.parametrize(
    ("first", "second", "after"),
    [("cancel", "capture", "payment_canceled"), ("capture", "cancel", "already_captured")],
    ids=["capture_meets_cancel", "cancel_meets_capture"],
)
async def test_seq10c_a_command_meeting_an_operation_in_flight(
    first: str, second: str, after: str
) -> None:
    """A capture while a cancel is only in flight (and the reverse): the first may still
    fail, so the second is answered `operation_in_flight` (retryable), or waits for the
    first and then answers as its outcome makes true; never the refusal in advance."""
    world, stripe, in_flight = await _command_meets_one_in_flight(first, second)
    await settle(world, stripe)

    answer = [e.payload["data"] for e in answers_to(world, "cmd_second")]
    reasons = [(d.get("reason"), d.get("retryable")) for d in answer]
    if in_flight:
        assert reasons == [("operation_in_flight", True)], reasons
    else:
        assert [reason for reason, _ in reasons] == [after], reasons
    await assert_books_follow_stripe(world, stripe)


# -- every webhook before its prerequisite (the "Done when") -------------------------


ORDERS = [("reverse", 0)] + [("shuffled", seed) for seed in range(6)]


@pytest.mark.parametrize(("order", "seed"), ORDERS, ids=[f"{o}{s}" for o, s in ORDERS])
async def test_every_webhook_before_its_prerequisite_ends_at_stripes_totals(
    order: str, seed: int
) -> None:
    """While the authorization is still unknown to the books, Stripe captures (the
    dashboard), refunds twice (one pending then failed), and a dispute is opened,
    reviewed and lost. Every event arrives before what it needs is booked: the
    capture before the authorization, the refunds and the dispute before the capture,
    a refund's failure before its creation. At quiescence the books are Stripe's."""
    world, stripe = stripe_world()
    await world.cart(CART, 5000)
    stripe.inject("authorize", "lose", "lose")
    stripe.inject("get_status", "status_fail", "status_fail")
    await world.checkout(
        CART, 5000, "K1", provider="stripe", payment_data={"payment_method": PM_OK}
    )
    assert (await world.collection(CART)).payment is None
    (intent,) = stripe.intents_of_cart(CART)
    assert stripe.dashboard_capture(intent.id)
    pending = stripe.dashboard_refund(intent.id, 1000, pending=True)
    assert pending is not None and stripe.settle_refund(pending.id, "failed")
    assert stripe.dashboard_refund(intent.id, 1500) is not None
    dispute = stripe.open_dispute(intent.id, 2000)
    assert dispute is not None and stripe.review_dispute(dispute.id)
    assert stripe.close_dispute(dispute.id, won=False)

    await deliver_all(world, stripe, order=order, seed=seed)
    await settle(world, stripe)

    await assert_books_follow_stripe(world, stripe)
    ledger = stripe.ledger(intent.id)
    assert (ledger.authorized, ledger.captured, ledger.refunded) == (5000, 5000, 1500)
    assert ledger.disputes == {dispute.id: "lost"}


@pytest.mark.parametrize(("order", "seed"), ORDERS, ids=[f"{o}{s}" for o, s in ORDERS])
async def test_a_cancel_before_its_authorization_ends_released(order: str, seed: int) -> None:
    """An authorization unknown to the books expires at Stripe (7 days); its events
    (authorized, canceled) arrive in any order. The books end with nothing held:
    a payment canceled and released in full, or no payment, never `authorized`."""
    world, stripe = stripe_world()
    await world.cart(CART, 5000)
    stripe.inject("authorize", "lose", "lose")
    stripe.inject("get_status", *["status_fail"] * 2)
    await world.checkout(
        CART, 5000, "K1", provider="stripe", payment_data={"payment_method": PM_OK}
    )
    (intent,) = stripe.intents_of_cart(CART)
    world.advance(days=7)
    stripe.tick()
    assert intent.status == "canceled"

    await deliver_all(world, stripe, order=order, seed=seed)
    await settle(world, stripe)

    collection = await world.collection(CART)
    assert not intent.live
    if collection.payment is not None:
        await assert_books_follow_stripe(world, stripe)
        assert collection.status == "canceled"
    else:
        assert not collection.needs_reconcile
        assert collection.status != "authorized"
