"""What the Stripe model test (`tests/unit/model/test_stripe_model.py`) found, each as
the shortest script over the service layer and the Stripe model: books against
Stripe's ledger (promise 9) where the model's long runs broke it.

Each test names the model run it comes from and what Stripe documents that makes the
sequence real.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from schemas.inbound import ProviderWebhook
from service.auditor import Auditor
from service.webhook_intake import webhook_event_id
from tests.fixtures.stripe.faithful import (
    PM_AUTHENTICATION_REQUIRED,
    FaithfulStripe,
    stripe_provider,
)
from tests.fixtures.stripe.kit import ScriptedStripe
from tests.support.stripe_processor import (
    PM_3DS,
    PM_OK,
    PaymentIntent,
    StripeProcessor,
    as_ledger,
    books_of,
    envelope_id,
    webhook_of,
)
from tests.support.world import World, handle

pytestmark = pytest.mark.asyncio

CART = "cart_1"


def stripe_world(*, automatic: bool = False) -> tuple[World, StripeProcessor]:
    world = World("manual")
    stripe = world.install(StripeProcessor("stripe", clock=world.clock, automatic=automatic))
    return world, stripe


async def deliver_all(world: World, stripe: StripeProcessor) -> None:
    """Every event Stripe has not delivered yet, through the real webhook path."""
    pending, stripe.outbox = stripe.outbox, []
    for event in pending:
        data = webhook_of(stripe.id, event, world.now)
        await world.deliver(await handle(world.service, envelope_id(stripe.id, event), data))


async def settle(world: World, stripe: StripeProcessor, *, audit: bool = False) -> None:
    """Quiescence: webhooks delivered, the reconciler, the audit and the relay run."""
    auditor = Auditor(
        world.service, world.relay, world.metrics, window=timedelta(days=30), batch=10
    )
    for _ in range(8):
        await deliver_all(world, stripe)
        world.advance(minutes=10)
        await world.reconcile()
        if audit:
            await auditor.run_once()
        await world.relay.run_once(timedelta(seconds=5))


async def authorized(world: World, stripe: StripeProcessor) -> tuple[str, PaymentIntent]:
    await world.cart(CART, 5000)
    await world.checkout(
        CART, 5000, "K1", provider="stripe", payment_data={"payment_method": PM_OK}
    )
    collection = await world.collection(CART)
    assert collection.payment is not None
    intent = stripe.intent_of_session(collection.payment.session_id)
    assert intent is not None
    return collection.payment.id, intent


async def books_and_ledger(world: World, stripe: StripeProcessor) -> tuple[Any, Any]:
    collection = await world.collection(CART)
    payment = collection.payment
    assert payment is not None
    intent = stripe.intent_of_session(payment.session_id)
    assert intent is not None
    return as_ledger(books_of(payment, world.publisher.published)), stripe.ledger(intent.id)


# -- a refund that succeeds after the dispute of everything was lost -----------------------


@pytest.mark.parametrize("audit", [False, True], ids=["webhooks", "audit_only"])
async def test_a_dashboard_refund_succeeding_after_a_lost_dispute_of_everything_is_booked(
    audit: bool,
) -> None:
    """Model run (1000 examples): `stripe_auto` checkout; a dashboard refund of all of
    it answers `pending`; the bank opens a chargeback of all of it and the merchant
    loses it; the refund then succeeds. Stripe refunded 5000 AND lost 5000 to the
    dispute (Stripe processes a refund and a dispute of one charge independently: a
    merchant who refunds and is charged back loses both). The books keep the refund
    parked for ever, as if its capture were not booked yet, because the rule for a
    provider's refund fact bounds it by what the service would let a command refund
    (`Payment.refundable` subtracts lost disputes), not by what was captured.
    Books: refunded 0; Stripe: refunded 5000.

    With `audit`, every webhook is lost: the audit's reads must find the same."""
    world, stripe = stripe_world(automatic=True)
    _, intent = await authorized(world, stripe)
    refund = stripe.dashboard_refund(intent.id, pending=True)
    assert refund is not None
    dispute = stripe.open_dispute(intent.id)
    assert dispute is not None and stripe.close_dispute(dispute.id, won=False)
    assert stripe.settle_refund(refund.id, "succeeded")
    if audit:
        stripe.outbox.clear()

    await settle(world, stripe, audit=audit)

    books, ledger = await books_and_ledger(world, stripe)
    assert (ledger.captured, ledger.refunded, ledger.disputes) == (
        5000,
        5000,
        {dispute.id: "lost"},
    )
    assert books == ledger, f"books {books} != Stripe {ledger}"
    collection = await world.collection(CART)
    assert collection.parked == [], "a provider fact kept for ever"


# -- a hold on another session captured before the service released it ----------------------


async def test_a_hold_on_another_session_captured_before_its_release_is_refunded() -> None:
    """Model run (1000 examples): a 3-D Secure checkout on Stripe; the cart is paid
    with another provider; the customer finishes the challenge late (Stripe holds
    5000) and the merchant captures that intent in the dashboard before the service
    released it. Both facts come before the reconciler's next pass. The hold's fact
    records a release by *cancel*; the capture's facts are then taken as known (a
    release is already recorded for that intent) and dropped; the cancel is refused
    (`payment_intent_unexpected_state`: the intent succeeded) and the release is
    dropped as if nothing were left to release. Stripe keeps a second 5000 for the
    cart for good; a refund is never asked for."""
    world, stripe = stripe_world()
    await world.cart(CART, 5000)
    await world.checkout(
        CART, 5000, "K1", provider="stripe", payment_data={"payment_method": PM_3DS}
    )
    await world.checkout(CART, 5000, "K2", provider="manual")
    collection = await world.collection(CART)
    assert collection.payment is not None and collection.payment.provider_id == "manual"
    (intent,) = stripe.intents_of_cart(CART)
    assert stripe.finish_3ds(intent.id)  # payment_intent.amount_capturable_updated
    assert stripe.dashboard_capture(intent.id)  # charge.captured, payment_intent.succeeded

    await settle(world, stripe, audit=True)

    assert not intent.live, f"Stripe still holds a second charge for the cart: {intent}"
    assert stripe.ledger(intent.id).refunded == 5000
    collection = await world.collection(CART)
    assert collection.payment is not None and collection.payment.provider_id == "manual"
    assert collection.voids == []


# -- a late hold whose webhooks were lost: the audit reads payments only -------------------


@pytest.mark.parametrize("paid_elsewhere", [True, False], ids=["paid_with_manual", "unpaid"])
async def test_a_charge_finished_late_whose_webhooks_were_lost_is_found_by_the_audit(
    paid_elsewhere: bool,
) -> None:
    """Model run (1000 examples, rule `webhook_lost`): a 3-D Secure checkout on Stripe
    with automatic capture; (the cart is paid with `manual`, or not at all); the
    customer finishes the challenge late and Stripe charges 5000; its events never
    reach the service. The audit sweep reads only each payment's own objects
    (`Auditor._audit`: `read_objects` of `collection.payment`), and the reconciler
    only what is unknown: nobody ever reads this intent again. Stripe keeps a charge
    the books never see (paid elsewhere: a second charge for the cart; unpaid: an
    order never confirmed, money taken). Design22 scopes the audit to payments; the
    invariant "at most one live hold per cart, and it is the payment's" needs the
    other sessions' objects (their PaymentIntents are known: `session.reference`)
    read too."""
    world, stripe = stripe_world(automatic=True)
    await world.cart(CART, 5000)
    await world.checkout(
        CART, 5000, "K1", provider="stripe", payment_data={"payment_method": PM_3DS}
    )
    if paid_elsewhere:
        await world.checkout(CART, 5000, "K2", provider="manual")
    (intent,) = stripe.intents_of_cart(CART)
    assert stripe.finish_3ds(intent.id)  # charged: amount_received 5000
    stripe.outbox.clear()  # its webhooks are lost for good

    await settle(world, stripe, audit=True)

    collection = await world.collection(CART)
    payment = collection.payment
    if payment is not None and payment.provider_id == "stripe":
        books, ledger = await books_and_ledger(world, stripe)
        assert books == ledger, f"books {books} != Stripe {ledger}"
    else:
        assert not intent.live, f"Stripe keeps a charge the books never saw: {intent}"


# -- money calls whose answers were lost ------------------------------------------------------


def answers_to(world: World, command_id: str) -> list[dict[str, Any]]:
    return [
        {"type": e.type, **e.payload["data"]}
        for e in world.publisher.published
        if e.causation_id == command_id
    ]


@pytest.mark.parametrize("via", ["webhooks", "audit"])
async def test_a_capture_command_after_facts_settled_one_of_two_captures_in_flight(
    via: str,
) -> None:
    """Model run (1000 examples, seed 1): without multicapture, two captures of 2500
    are in flight, both answers lost: Stripe took the first (a final capture: the rest
    is released) and refused the second. Stripe's facts (its webhooks, or the audit's
    read) settle one of them and book the rest as released, while the other is still
    reserved: `Payment.capturable` = 5000 − 2500 captured − 2500 reserved − 2500
    released = −2500. A capture command naming no amount then builds `payment.failed`
    with `amount` −2500, which the contract's model refuses: the handler raises
    (pydantic ValidationError) on every delivery of the command, which is never
    answered (retried, then dead-lettered)."""
    world, stripe = stripe_world()
    payment_id, intent = await authorized(world, stripe)
    stripe.inject("capture", "lose", "lose")  # Stripe captures; both answers lost
    await world.command("capture", payment_id, amount=2500, command_id="cap_1")
    stripe.inject("capture", "lose", "lose")  # Stripe refuses; both answers lost
    await world.command("capture", payment_id, amount=2500, command_id="cap_2")
    assert (intent.amount_received, intent.released) == (2500, 2500)
    if via == "webhooks":
        await deliver_all(world, stripe)
    else:
        auditor = Auditor(
            world.service, world.relay, world.metrics, window=timedelta(days=30), batch=10
        )
        # Two captures of ours in flight: the read is kept until their answers
        # decide which one Stripe took (an amount cannot tell them apart).
        await auditor.run_once()

    await world.command("capture", payment_id, command_id="cap_3")  # all that is left

    answer = answers_to(world, "cap_3")
    assert [a["type"] for a in answer] == ["payment.failed"], answer
    assert answer[0]["reason"] in ("operation_in_flight", "amount_exceeds_authorized")
    collection = await world.collection(CART)
    assert collection.payment is not None and collection.payment.capturable >= 0


async def test_a_capture_needing_attention_is_not_sent_again_when_its_command_comes_again() -> None:
    """Model run (1000 examples, seed 1, rule `replay`): a capture of 1000 whose answers
    were lost (Stripe took it: a final capture, the rest released); 8 days later the
    reconciler finds Stripe cannot tell and its 24-hour key window has passed:
    `needs_attention`, as design22 asks. The command is then delivered again (a
    consumer redelivery, an operator's replay): the service queries the status (not
    found: "send again to tell") and sends the capture again, past the window, under
    a key Stripe forgot; Stripe refuses it (the intent succeeded) and the command is
    answered a second time, `payment.failed` `provider_error`: a capture that happened
    announced as failed, and its reservation dropped. The reconciler's rule (repeat
    only inside the window) is not the command's."""
    world, stripe = stripe_world()
    payment_id, _ = await authorized(world, stripe)
    stripe.inject("capture", "lose", "lose")
    await world.command("capture", payment_id, amount=1000, command_id="cap_9")
    world.advance(days=8)
    await world.reconcile()
    first = answers_to(world, "cap_9")
    assert [a["reason"] for a in first] == ["needs_attention"]
    sent = len(stripe.executed("capture"))

    await world.command("capture", payment_id, amount=1000, command_id="cap_9")  # redelivered

    assert len(stripe.executed("capture")) == sent, "a money call repeated past Stripe's key window"
    assert answers_to(world, "cap_9") == first, "the same command answered twice, differently"
    collection = await world.collection(CART)
    assert collection.payment is not None
    assert [p.command_id for p in collection.payment.pending] == ["cap_9"]


async def test_a_capture_needing_attention_does_not_keep_stripes_captures_off_the_books() -> None:
    """Model run (1000 examples, seed 1): the merchant captures all 5000 in the
    dashboard; before its webhooks arrive, an admin capture of 1000 is sent and both
    its answers are lost (Stripe refused it: the intent had succeeded). More than 24
    hours pass: the reconciler cannot tell and the key window is over, so the capture
    is `needs_attention` (right). But the dashboard capture's facts (`payment_intent.
    succeeded` with 5000 received and nothing capturable, `charge.captured` 5000), and
    the audit's read saying the same, stay parked for ever behind the operation in
    flight: books captured 0, Stripe 5000. Captures are cumulative: a fact that the
    whole authorization was received, nothing capturable, is the total whatever our
    capture did, and can be booked without deciding it. Without multicapture it also
    decides ours: the first capture is final, so a final total that ours does not
    explain means ours was refused (answered so, once Stripe's facts arrive, whether
    or not it needed attention before)."""
    world, stripe = stripe_world()
    payment_id, intent = await authorized(world, stripe)
    await deliver_all(world, stripe)
    assert stripe.dashboard_capture(intent.id)
    stripe.inject("capture", "lose", "lose")
    await world.command("capture", payment_id, amount=1000, command_id="cap_1")
    world.advance(hours=25)

    await settle(world, stripe, audit=True)

    reasons = [a["reason"] for a in answers_to(world, "cap_1")]
    assert reasons[-1:] == ["amount_exceeds_authorized"], reasons
    books, ledger = await books_and_ledger(world, stripe)
    assert books == ledger, f"books {books} != Stripe {ledger}"


# -- a capture's charge event before its authorization is booked ----------------------------

SECRET = "whsec_findings"


async def stripe_delivers(world: World, event: dict[str, Any]) -> None:
    """A FaithfulStripe event, signed, through the real webhook path to the real adapter."""
    headers, body = FaithfulStripe.signed(event, SECRET)
    data = ProviderWebhook.model_validate(
        {
            "provider_id": "stripe",
            "received_at": world.now.isoformat(),
            "headers": {k.lower(): v for k, v in headers.items()},
            "payload": body.decode(),
        }
    )
    await world.deliver(await handle(world.service, webhook_event_id("stripe", body), data))


@pytest.mark.parametrize("order", ["stripes_order", "charge_first"])
async def test_a_partial_capture_whose_charge_event_comes_first_books_the_whole_hold(
    order: str,
) -> None:
    """Model run (1000 examples, seed 3), here with the real adapter and the stateful
    fake Stripe: a 3-D Secure checkout on Stripe; the customer finishes the challenge
    late (Stripe holds 5000); the merchant captures 1000 in the dashboard (final: 4000
    released). Stripe's `charge.captured` arrives first. Its fact
    (`stripe_mapping._charge_captured_action`) carries the captured amount but not the
    charge's `amount` (what was authorized), so the domain, booking the authorization
    from a capture fact ("what was held is the object's amount", `data["amount"]`),
    books the payment as 1000 authorized: books authorized 1000, released 0; Stripe
    authorized 5000, captured 1000, released 4000. The payment is frozen at 1000: no
    later event or audit read corrects it. (The Stripe model's own mapping,
    `StripeProcessor._action`, mirrors the adapter's, so the model run shows the same.)"""
    world = World("manual")
    scripted = ScriptedStripe()
    fake = FaithfulStripe.serve(scripted)
    world.install(stripe_provider(scripted, webhook_secret=SECRET))
    await world.cart(CART, 5000)
    await world.checkout(
        CART,
        5000,
        "K1",
        provider="stripe",
        payment_data={"payment_method": PM_AUTHENTICATION_REQUIRED},
    )
    assert world.published("payment.requires_action", CART)
    (intent_id,) = [i for i, v in fake.intents.items() if v["metadata"].get("cart_id") == CART]
    mark = len(fake.events)
    fake.authenticate(intent_id)
    status, _ = fake.capture(intent_id, 1000)  # in the dashboard
    assert status == 200
    events = fake.events[mark:]
    assert [e["type"] for e in events] == [
        "payment_intent.amount_capturable_updated",
        "charge.captured",
        "payment_intent.succeeded",
    ]

    if order == "charge_first":
        events = [events[1], events[2], events[0]]
    for event in events:
        await stripe_delivers(world, event)
    auditor = Auditor(
        world.service, world.relay, world.metrics, window=timedelta(days=30), batch=10
    )
    await auditor.run_once()

    collection = await world.collection(CART)
    payment = collection.payment
    assert payment is not None
    intent = fake.intents[intent_id]
    assert (intent["amount"], intent["amount_received"]) == (5000, 1000)
    assert (payment.amount, payment.captured_total, payment.released_amount) == (5000, 1000, 4000)
    assert payment.reference == intent_id
