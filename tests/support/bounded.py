"""Promise 10 as an invariant: what only serves de-duplication and delivery does not
grow with traffic. The model tests check it after every step of every run."""

from __future__ import annotations

from schemas.inbound import AdminRefund, CheckoutCompleted
from service.domain.model import ATTEMPTS_KEPT, HISTORY_LIMIT, INBOX_WINDOW, PaymentCollection
from service.domain.provider_facts import PROVIDER_EVENT_WINDOW
from tests.support.world import World, handle


def assert_bounded(collection: PaymentCollection) -> None:
    where = collection.cart_id
    assert len(collection.processed) <= INBOX_WINDOW, (where, len(collection.processed))
    assert len(collection.checkout_attempts) <= ATTEMPTS_KEPT, where
    assert len(collection.provider_events) <= PROVIDER_EVENT_WINDOW, where
    if collection.payment is not None:
        assert len(collection.payment.history) <= HISTORY_LIMIT, where


async def paid(world: World, cart_id: str) -> str:
    """A cart updated, checked out (key `k1`, provider `fake`) and captured: its payment id."""
    await world.cart(cart_id, 5000)
    await world.checkout(cart_id, 5000, "k1")
    collection = await world.collection(cart_id)
    assert collection.payment is not None
    await world.command("capture", collection.payment.id)
    return collection.payment.id


def resent_checkout(cart_id: str) -> CheckoutCompleted:
    """The checkout of :func:`paid` as a producer sends it again."""
    return CheckoutCompleted.model_validate(
        {
            "cart_id": cart_id,
            "idempotency_key": "k1",
            "region_id": "eu",
            "currency_code": "usd",
            "amount": 5000,
            "provider_id": "fake",
        }
    )


def refund_of_50(payment_id: str) -> AdminRefund:
    return AdminRefund.model_validate(
        {"payment_id": payment_id, "requested_by": "ops", "amount": 50}
    )


async def resend(world: World, cart_id: str, n: int) -> None:
    """The paid cart's checkout and cart update, sent again under new envelope ids (the
    `n`-th time), as a retrying producer does; published and marked sent."""
    checkout = resent_checkout(cart_id)
    await world.deliver(await handle(world.service, f"resent_{n}", checkout))
    await world.cart(cart_id, 5000, event_id=f"cart_again_{n}")
