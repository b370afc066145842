"""The full flow's shop side (bench/workload.py): what it answers to what it reads."""

from __future__ import annotations

from typing import Any

import orjson

from bench.workload import (
    ADMIN_CAPTURE,
    ADMIN_REFUND,
    AUTHORIZED,
    CAPTURED,
    REFUNDED,
    FollowUps,
    build_cart,
)


def outbound(event_type: str, cart_id: str, payment_id: str, amount: int) -> bytes:
    data = {"cart_id": cart_id, "payment_id": payment_id, "amount": amount}
    return orjson.dumps({"type": event_type, "data": data})


def queued(followups: FollowUps) -> list[tuple[str, str, str, int]]:
    items = []
    while not followups._queue.empty():
        items.append(followups._queue.get_nowait())
    return items


def test_the_manual_provider_cart_carries_no_payment_method() -> None:
    manual = orjson.loads(build_cart("c1", 3, "manual").checkout)["data"]
    sandbox = orjson.loads(build_cart("c1", 3, "sandbox").checkout)["data"]
    assert manual["provider_id"] == "manual" and "payment_data" not in manual
    assert sandbox["payment_data"] == {"payment_method": "pm_card_visa"}
    assert manual["amount"] == build_cart("c1", 3).amount == 1111


def test_authorized_gets_a_capture_of_all_and_captured_a_refund_of_a_third() -> None:
    cart = build_cart("cart-1", 3, "manual")
    followups = FollowUps(producer=None, prefix="b.", carts={"cart-1": cart})
    followups.on_record("b." + AUTHORIZED, "cart-1", outbound(AUTHORIZED, "cart-1", "pay_1", 0), 1)
    followups.on_record("b." + CAPTURED, "cart-1", outbound(CAPTURED, "cart-1", "pay_1", 0), 2)
    assert queued(followups) == [
        (ADMIN_CAPTURE, "cart-1", "pay_1", 1111),
        (ADMIN_REFUND, "cart-1", "pay_1", 370),
    ]


def test_other_events_and_other_carts_are_not_answered() -> None:
    cart: Any = build_cart("cart-1", 3, "manual")
    followups = FollowUps(producer=None, prefix="b.", carts={"cart-1": cart})
    followups.on_record("b." + REFUNDED, "cart-1", outbound(REFUNDED, "cart-1", "pay_1", 1), 1)
    followups.on_record("b.payment.failed", "cart-1", b"{}", 1)
    followups.on_record("b." + AUTHORIZED, "cart-9", outbound(AUTHORIZED, "cart-9", "pay_9", 1), 1)
    assert queued(followups) == []
