"""`payments replay`: re-sending what was applied changes nothing."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from cli_testkit import end_offsets, invoke, json_of, kafka_args

from schemas.topics import INBOUND_TOPICS
from service.testing import builders
from service.testing.harness import ServiceHarness

# A service of its own per test (tests/conftest.py `harness`, own=True): the tests
# count whole topics, and a replay writes batches of records, whose end offsets
# Tansu reports late (README, "Infrastructure notes"); sharing made that a flake.
pytestmark = [pytest.mark.integration, pytest.mark.harness(own=True)]


def _cart() -> str:
    return f"cart_{uuid.uuid4().hex[:12]}"


async def _traffic(h: ServiceHarness) -> dict[str, str]:
    """A bit of everything: capture and refund, a decline, 3-D Secure, a bare cart."""
    paid, declined, three_ds, browsing = _cart(), _cart(), _cart(), _cart()
    for cart in (paid, declined, three_ds, browsing):
        await h.publish("cart.updated", builders.cart_updated(cart, 5000))
    await h.publish(
        "checkout.completed", builders.checkout_completed(paid, payment_method="pm_card_visa")
    )
    await h.publish(
        "checkout.completed",
        builders.checkout_completed(declined, payment_method="pm_card_chargeDeclined"),
    )
    key = builders.new_id("idem")
    method = "pm_card_authenticationRequired"
    await h.publish(
        "checkout.completed",
        builders.checkout_completed(three_ds, idempotency_key=key, payment_method=method),
    )
    authorized = await h.await_event("payment.authorized", cart_id=paid, timeout=30)
    payment_id = authorized.data["payment_id"]
    await h.publish("admin.payment.capture", builders.capture(payment_id, 4000))
    await h.await_event("payment.captured", cart_id=paid, timeout=30)
    await h.publish("admin.payment.refund", builders.refund(payment_id, 1500))
    await h.await_event("payment.refunded", cart_id=paid, timeout=30)
    await h.await_event("payment.failed", cart_id=declined, timeout=30)
    await h.await_event("payment.requires_action", cart_id=three_ds, timeout=30)
    await h.publish(
        "checkout.completed",
        builders.checkout_completed(
            three_ds,
            idempotency_key=key,
            payment_method=method,
            payment_data={"action_result": "succeeded"},
        ),
    )
    await h.await_event("payment.authorized", cart_id=three_ds, timeout=30)
    await h.settle(quiet_s=1.5)
    return {"paid": paid, "declined": declined, "three_ds": three_ds, "browsing": browsing}


async def _state(h: ServiceHarness, carts: dict[str, str]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, cart in carts.items():
        collection = await h.collection(cart)
        assert collection is not None
        payment = collection.payment
        result[name] = {
            "status": collection.status,
            "sessions": [(s.id, s.status) for s in collection.sessions],
            "payment": payment.id if payment else None,
            "captures": [(c.id, c.amount) for c in payment.captures] if payment else [],
            "refunds": [(r.id, r.amount) for r in payment.refunds] if payment else [],
            "events": sorted((e.id, e.sent) for e in await h.stored_events(cart)),
        }
    return result


async def test_replaying_every_inbound_topic_changes_nothing(harness: ServiceHarness) -> None:
    h = harness
    carts = await _traffic(h)
    ids_before = {r.id for r in h.received}
    ledger_before = await h.ledger()
    state_before = await _state(h, carts)

    replayed = 0
    for topic in INBOUND_TOPICS:
        written = sum((await end_offsets(h, topic)).values())
        result = json_of(await invoke("replay", topic, "--json", *kafka_args(h)))
        assert result["read"] == result["sent"] == written, result
        replayed += result["sent"]
    assert replayed >= 9  # 4 carts, 4 checkouts, capture, refund

    await h.settle(quiet_s=3.0, timeout=60)
    assert {r.id for r in h.received} == ids_before, "a replay minted new outbound event ids"
    assert await h.ledger() == ledger_before, "a replay charged the provider again"
    assert await _state(h, carts) == state_before


async def test_replay_ranges_by_offset_time_and_cart(harness: ServiceHarness) -> None:
    h = harness
    carts = [_cart() for _ in range(3)]
    for cart in carts:
        await h.publish("cart.updated", builders.cart_updated(cart, 1000))
    await h.settle(quiet_s=1.0)
    ends = await end_offsets(h, "cart.updated")
    partition = next(p for p, end in ends.items() if end > 0)

    def dry(*args: str) -> list[str]:
        return ["replay", "cart.updated", "--dry-run", "--json", *args, *kafka_args(h)]

    one = json_of(
        await invoke(*dry("--partition", str(partition), "--from-offset", "0", "--to-offset", "0"))
    )
    assert one["matched"] == 1 and one["sent"] == 0
    assert one["ranges"] == [{"partition": partition, "start": 0, "end": 1}]

    recent = json_of(await invoke(*dry("--since", "10m")))
    assert recent["matched"] == sum(ends.values())
    future = json_of(await invoke(*dry("--since", "2999-01-01T00:00:00Z")))
    assert future["matched"] == 0
    past = json_of(await invoke(*dry("--until", "2000-01-01T00:00:00Z")))
    assert past["matched"] == 0

    before = await end_offsets(h, "cart.updated")
    only = json_of(
        await invoke("replay", "cart.updated", "--cart-id", carts[1], "--json", *kafka_args(h))
    )
    assert only["matched"] == only["sent"] == 1 and only["read"] == sum(before.values())
    after = await end_offsets(h, "cart.updated")
    assert sum(after.values()) - sum(before.values()) == 1

    wrong = await invoke("replay", "payment.authorized", *kafka_args(h))
    assert wrong.exit_code == 1 and "not an inbound topic" in wrong.stderr
    missing = await invoke("replay", "cart.updated", "--partition", "999", *kafka_args(h))
    assert missing.exit_code == 1 and "no partition 999" in missing.stderr
