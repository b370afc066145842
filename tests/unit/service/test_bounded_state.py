"""Contract promise 10: what is stored for a cart does not grow with the messages that
name it. Producers retry, nothing authenticates the cart topics, and operators replay:
a paid cart's document stays within a constant bound however often it is named."""

from __future__ import annotations

from typing import Any

import orjson

from tests.support.bounded import paid, refund_of_50, resend
from tests.support.world import World, handle

CART = "cart_paid"


def _stored_bytes(world: World) -> int:
    """The size of the cart's stored document, as the store keeps it."""
    documents: dict[str, Any] = world.store.documents
    [document] = [d for d in documents.values() if d["cart_id"] == CART]
    # Everything was published: the document keeps no event (they left with mark-sent).
    assert document["outbox"] == {}, document["outbox"]
    return len(orjson.dumps(document, default=str))


async def test_ten_thousand_resent_events_for_a_paid_cart_leave_its_size_constant() -> None:
    world = World("fake")
    await paid(world, CART)
    for n in range(100):
        await resend(world, CART, n)
    after_100 = _stored_bytes(world)
    for n in range(100, 10_000):
        await resend(world, CART, n)
    after_10_000 = _stored_bytes(world)
    assert after_10_000 <= 1.2 * after_100, (after_100, after_10_000)
    # Every re-sent checkout was answered, with the one stored event id.
    authorized = {e.id for e in world.published("payment.authorized", CART)}
    assert len(authorized) == 1


async def test_a_thousand_admin_commands_for_one_payment_leave_its_size_constant() -> None:
    world = World("fake")
    payment_id = await paid(world, CART)
    sizes = []
    for n in range(1_000):
        # Refunds until nothing is refundable, then refusals; every one a new command.
        await world.deliver(await handle(world.service, f"refund_{n}", refund_of_50(payment_id)))
        if n in (199, 999):
            sizes.append(_stored_bytes(world))
    collection = await world.collection(CART)
    assert collection.payment is not None
    assert collection.payment.refunded_total == 5000  # 100 refunds of 50, then refused
    assert sizes[1] <= 1.2 * sizes[0], sizes
