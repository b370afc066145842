"""Capture, refund and cancel rules as the service answers them, over the in-memory fakes.

Moved from tests/integration/test_lifecycle_admin_rules.py, which keeps the cancel
flow and one command for an unknown payment (the answer without a collection)
end to end over the real broker; the pure rules are also in
tests/unit/domain/test_domain_payment_commands.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from schemas.topics import EVENT_MODELS
from service.domain.model import OutboxEvent
from service.domain.statuses import CollectionStatus
from tests.support.world import World

pytestmark = pytest.mark.asyncio


async def _authorized(world: World, cart: str = "cart_1", amount: int = 5000) -> str:
    await world.checkout(cart, amount, f"idem_{cart}")
    (authorized,) = world.published("payment.authorized", cart)
    return str(authorized.payload["data"]["payment_id"])


def _answer(world: World, event_type: str, command_id: str) -> OutboxEvent:
    answers = [e for e in world.published(event_type) if e.causation_id == command_id]
    assert len(answers) == 1, [(e.type, e.causation_id) for e in world.publisher.published]
    return answers[0]


def _data(event: OutboxEvent) -> dict[str, Any]:
    data = event.payload["data"]
    assert isinstance(data, dict)
    return data


def _ops(world: World, operation: str) -> list[int]:
    return [amount for op, _, amount in world.fake.operations if op == operation]


async def test_capture_beyond_authorized() -> None:
    world = World()
    payment_id = await _authorized(world)
    await world.command("capture", payment_id, amount=6000, command_id="cmd_1")
    failed = _answer(world, "payment.failed", "cmd_1")
    data = _data(failed)
    assert (data["operation"], data["reason"]) == ("capture", "amount_exceeds_authorized")
    assert data["payment_id"] == payment_id
    assert data["retryable"] is False
    assert failed.key == "cart_1"

    # After a partial capture, the remainder is the limit.
    await world.command("capture", payment_id, amount=4000, command_id="cmd_2")
    _answer(world, "payment.captured", "cmd_2")
    await world.command("capture", payment_id, amount=1001, command_id="cmd_3")
    assert _data(_answer(world, "payment.failed", "cmd_3"))["reason"] == "amount_exceeds_authorized"
    collection = await world.collection("cart_1")
    assert collection.payment is not None and collection.payment.captured_total == 4000
    assert _ops(world, "capture") == [4000]


async def test_cancel_then_capture_is_payment_canceled() -> None:
    world = World()
    payment_id = await _authorized(world)
    await world.command("cancel", payment_id, command_id="cmd_1")
    canceled = _data(_answer(world, "payment.canceled", "cmd_1"))
    assert canceled["payment_id"] == payment_id and canceled["canceled_at"]
    await world.command("capture", payment_id, amount=1000, command_id="cmd_2")
    data = _data(_answer(world, "payment.failed", "cmd_2"))
    assert (data["operation"], data["reason"]) == ("capture", "payment_canceled")
    assert _ops(world, "capture") == []


async def test_cancel_after_capture_is_already_captured() -> None:
    world = World()
    payment_id = await _authorized(world)
    await world.command("capture", payment_id, amount=1000, command_id="cmd_1")
    _answer(world, "payment.captured", "cmd_1")
    await world.command("cancel", payment_id, command_id="cmd_2")
    data = _data(_answer(world, "payment.failed", "cmd_2"))
    assert (data["operation"], data["reason"]) == ("cancel", "already_captured")
    assert data["payment_id"] == payment_id
    collection = await world.collection("cart_1")
    assert collection.payment is not None and collection.payment.canceled_at is None
    assert collection.status == CollectionStatus.PARTIALLY_CAPTURED
    assert _ops(world, "cancel") == []


async def test_refund_with_nothing_captured() -> None:
    world = World()
    payment_id = await _authorized(world)
    await world.command("refund", payment_id, amount=100, command_id="cmd_1")
    data = _data(_answer(world, "payment.failed", "cmd_1"))
    assert (data["operation"], data["reason"]) == ("refund", "nothing_captured")
    assert data["payment_id"] == payment_id
    assert _ops(world, "refund") == []
    collection = await world.collection("cart_1")
    assert collection.payment is not None and collection.payment.refunds == []


@pytest.mark.parametrize("command", ["capture", "refund", "cancel"])
async def test_unknown_payment_id(command: str) -> None:
    world = World()
    amount = None if command == "cancel" else 100
    result = await world.command(command, "pay_unknown", amount=amount, command_id="cmd_1")
    assert result.orphans, "answered without a collection to store it in"
    failed = _answer(world, "payment.failed", "cmd_1")
    assert failed.key == "pay_unknown"
    data = _data(failed)
    assert (data["reason"], data["operation"]) == ("payment_not_found", command)
    assert data["payment_id"] == "pay_unknown"
    # The contract's own model accepts it: cart, collection, provider and currency null.
    EVENT_MODELS["payment.failed"].model_validate(failed.payload)
    for field in ("cart_id", "collection_id", "provider_id", "currency_code"):
        assert field in data and data[field] is None, data
    assert failed.payload["subject"] == "pay_unknown"
    assert world.fake.calls == []
