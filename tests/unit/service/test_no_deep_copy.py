"""No deep copy of the aggregate per decision (issue 15).

The handlers hand the domain the aggregate they just loaded, which is private to
the attempt, so the decisions change it in place: a whole flow makes no deep
copy. What makes that safe is checked too: a decision that stores nothing (a
duplicate) has changed nothing, so what is republished and marked sent is the
stored state.
"""

from __future__ import annotations

from typing import Any

import pytest

from service.domain.model import PaymentCollection
from tests.support.world import World


@pytest.fixture
def deep_copies(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    made: list[str] = []
    original = PaymentCollection.model_copy

    def counted(self: PaymentCollection, *args: Any, **kwargs: Any) -> PaymentCollection:
        if kwargs.get("deep"):
            made.append(self.cart_id)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(PaymentCollection, "model_copy", counted)
    return made


async def test_a_whole_flow_makes_no_deep_copy(deep_copies: list[str]) -> None:
    world = World("fake")

    await world.cart("cart_f", 1000)
    await world.checkout("cart_f", 1000, "key_f")
    payment = (await world.collection("cart_f")).payment
    assert payment is not None
    captured = await world.command("capture", payment.id, command_id="cmd_cap")
    refunded = await world.command("refund", payment.id, amount=300, command_id="cmd_ref")

    assert (captured.status, refunded.status) == ("applied", "applied")
    assert deep_copies == []


async def test_a_duplicate_command_changes_and_stores_nothing(deep_copies: list[str]) -> None:
    world = World("fake")
    await world.cart("cart_d", 1000)
    await world.checkout("cart_d", 1000, "key_d")
    payment = (await world.collection("cart_d")).payment
    assert payment is not None
    await world.command("capture", payment.id, amount=400, command_id="cmd_once")
    before = dict(world.store.documents)
    saves = world.store.saves

    again = await world.command("capture", payment.id, amount=400, command_id="cmd_once")

    assert again.status == "duplicate"
    assert world.store.saves == saves
    assert world.store.documents == before, "the duplicate changed the stored state"
    stored = (await world.collection("cart_d")).payment
    assert stored is not None and stored.captured_total == 400
    assert deep_copies == []
