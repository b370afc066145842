"""The provider audit sweep: what a provider holds and no webhook said reaches the books."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from service.auditor import Auditor
from service.domain.calls import ProviderCall
from service.ports.providers import WebhookAction
from tests.support.world import World


def _refund_fact(intent: str, refund_id: str, amount: int, status: str = "refund_succeeded") -> Any:
    return WebhookAction(
        meaning=status,  # type: ignore[arg-type]
        session_id=None,
        cart_id="cart_1",
        provider_reference=intent,
        amount=amount,
        data={"refund_id": refund_id},
    )


async def _captured_payment(world: World) -> str:
    await world.checkout("cart_1", 5000, "k1")
    collection = await world.collection("cart_1")
    assert collection.payment is not None
    await world.command("capture", collection.payment.id)
    return collection.payment.id


def _auditor(world: World) -> Auditor:
    return Auditor(world.service, world.relay, world.metrics, window=timedelta(days=30), batch=10)


def _corrections(world: World, kind: str) -> float:
    value = world.metrics.registry.get_sample_value(
        "payments_provider_audit_corrections_total", {"provider": "fake", "kind": kind}
    )
    return value or 0.0


async def test_a_dashboard_refund_no_webhook_told_of_is_booked_once() -> None:
    world = World("fake")
    await _captured_payment(world)
    collection = await world.collection("cart_1")
    assert collection.payment is not None
    reference = collection.payment.reference  # the fake processor's hold
    assert reference == collection.payment.data["hold_id"]
    seen: list[ProviderCall] = []

    async def read_objects(call: ProviderCall) -> list[WebhookAction]:
        seen.append(call)
        return [_refund_fact(reference, "re_dash", 1200)]

    world.fake.read_objects = read_objects  # type: ignore[method-assign]
    auditor = _auditor(world)

    assert await auditor.run_once() == 1
    assert await auditor.run_once() == 0  # the same object again: nothing new

    collection = await world.collection("cart_1")
    assert collection.payment is not None
    assert collection.payment.refunded_total == 1200
    [refunded] = world.published("payment.refunded", "cart_1")
    assert refunded.payload["data"]["amount"] == 1200
    assert _corrections(world, "refund_succeeded") == 1
    assert seen and seen[0].payment_id == collection.payment.id


async def test_a_payment_outside_the_window_is_not_read() -> None:
    world = World("fake")
    await _captured_payment(world)
    calls: list[ProviderCall] = []

    async def read_objects(call: ProviderCall) -> list[WebhookAction]:
        calls.append(call)
        return []

    world.fake.read_objects = read_objects  # type: ignore[method-assign]
    world.advance(days=31)
    assert await _auditor(world).run_once() == 0
    assert calls == []
