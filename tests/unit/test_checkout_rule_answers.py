"""Cart and checkout rules as the service answers them, over the in-memory fakes.

The handler, unit of work, store and publisher of `tests/support/world.py`: what a
rule decides is checked here as the published answer (type, reason, operation,
retryable, causation), the stored collection and the provider's calls. These were
integration tests over the real broker (tests/integration/test_lifecycle_checkout_rules.py),
which now keeps one rejection and the republish of a stored event end to end; the
pure rules are also in tests/unit/domain/test_domain_checkout.py and test_domain_cart.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from service.domain.model import OutboxEvent, PaymentCollection
from service.domain.statuses import CollectionStatus, SessionStatus
from tests.support.world import World

pytestmark = pytest.mark.asyncio

REGIONS = {"eu": ("manual", "sandbox"), "us": ("sandbox",)}


def _world() -> World:
    world = World("sandbox", "manual")
    world.registry.regions = dict(REGIONS)
    return world


def _only(events: list[Any]) -> OutboxEvent:
    assert len(events) == 1, [(e.type, e.id) for e in events]
    event: OutboxEvent = events[0]
    return event


def _data(event: OutboxEvent) -> dict[str, Any]:
    data = event.payload["data"]
    assert isinstance(data, dict)
    return data


async def _stored(world: World, cart_id: str) -> PaymentCollection | None:
    loaded = await world.store.load_by_cart(cart_id)
    return None if loaded is None else loaded.collection


def _authorize_calls(world: World) -> list[tuple[str, str, int]]:
    return [op for p in world.processors.values() for op in p.operations if op[0] == "authorize"]


def _calls(world: World) -> list[tuple[str, str]]:
    return [call for p in world.processors.values() for call in p.calls]


async def _rejected(world: World, cart: str, event_id: str, reason: str) -> dict[str, Any]:
    failed = _only(world.published("payment.failed", cart))
    assert failed.causation_id == event_id
    assert failed.key == cart
    data = _data(failed)
    assert (data["operation"], data["reason"], data["retryable"]) == ("authorize", reason, False)
    return data


async def test_checkout_without_cart_updated() -> None:
    world = _world()
    await world.checkout(
        "cart_1", 4200, "K1", provider="sandbox", event_id="evt_co", currency_code="EUR"
    )
    authorized = _only(world.published("payment.authorized", "cart_1"))
    assert authorized.causation_id == "evt_co"
    data = _data(authorized)
    assert (data["amount"], data["currency_code"], data["provider_id"]) == (4200, "eur", "sandbox")
    collection = await world.collection("cart_1")
    assert collection.amount == 4200
    assert collection.status == CollectionStatus.AUTHORIZED
    assert [(s.provider_id, s.status) for s in collection.sessions] == [
        ("sandbox", SessionStatus.AUTHORIZED)
    ]
    assert collection.payment is not None and collection.payment.id == data["payment_id"]
    assert [(op, amount) for op, _, amount in _authorize_calls(world)] == [("authorize", 4200)]


async def test_stale_cart_update_is_ignored() -> None:
    world = _world()
    await world.cart("cart_1", 6000, version=2)
    stale = await world.cart("cart_1", 5000, version=1)
    assert stale.status == "ignored"  # counted as outcome="ignored" by the consumer
    collection = await world.collection("cart_1")
    assert (collection.amount, collection.cart_version) == (6000, 2)
    assert collection.sessions and all(s.amount == 6000 for s in collection.sessions)
    # The checkout agrees with the newer amount, not the stale one.
    await world.checkout("cart_1", 6000, "K1", provider="sandbox")
    assert world.published("payment.failed", "cart_1") == []
    assert len(world.published("payment.authorized", "cart_1")) == 1


async def test_region_change_deletes_dropped_provider_session() -> None:
    world = _world()
    await world.cart("cart_1", 5000, region="eu")
    first = await world.collection("cart_1")
    assert sorted(s.provider_id for s in first.sessions) == ["manual", "sandbox"]
    sandbox = first.session_for("sandbox")
    assert sandbox is not None

    await world.cart("cart_1", 5000, region="us")
    second = await world.collection("cart_1")
    assert second.region_id == "us"
    assert [s.provider_id for s in second.sessions] == ["sandbox"]
    assert second.sessions[0].id == sandbox.id  # the same session, not re-created
    # (the delete call for manual's session: test_domain_cart.py)

    # manual is no longer available in region us.
    await world.checkout("cart_1", 5000, "K1", provider="manual", region="us", event_id="evt_co")
    data = await _rejected(world, "cart_1", "evt_co", "provider_not_available")
    assert data["provider_id"] == "manual"


async def test_cart_update_after_authorization_changes_nothing() -> None:
    world = _world()
    await world.cart("cart_1", 5000, version=1)
    await world.checkout("cart_1", 5000, "K1", provider="sandbox")
    before = await world.collection("cart_1")
    late = await world.cart("cart_1", 9999, version=2, region="us")
    assert late.status == "ignored"
    after = await world.collection("cart_1")
    assert (after.amount, after.region_id, after.cart_version) == (5000, "eu", 1)
    assert after.status == CollectionStatus.AUTHORIZED
    assert [(s.id, s.amount, s.status) for s in after.sessions] == [
        (s.id, s.amount, s.status) for s in before.sessions
    ]
    assert after.payment is not None and after.payment.amount == 5000


async def test_amount_mismatch() -> None:
    world = _world()
    await world.cart("cart_1", 5000)
    await world.checkout("cart_1", 4000, "K1", provider="sandbox", event_id="evt_co")
    await _rejected(world, "cart_1", "evt_co", "amount_mismatch")
    assert _authorize_calls(world) == []
    assert (await world.collection("cart_1")).payment is None


async def test_currency_mismatch() -> None:
    world = _world()
    await world.cart("cart_1", 5000)  # usd
    await world.checkout(
        "cart_1", 5000, "K1", provider="sandbox", event_id="evt_co", currency_code="eur"
    )
    await _rejected(world, "cart_1", "evt_co", "currency_mismatch")
    assert _authorize_calls(world) == []
    assert (await world.collection("cart_1")).payment is None


async def test_unknown_provider() -> None:
    world = _world()
    await world.checkout("cart_1", 5000, "K1", provider="stripe", event_id="evt_co")
    await _rejected(world, "cart_1", "evt_co", "provider_not_available")
    assert _calls(world) == []
    collection = await _stored(world, "cart_1")
    assert collection is None or collection.payment is None


async def test_zero_amount_authorized_by_system() -> None:
    world = _world()
    await world.cart("cart_1", 0)
    assert (await world.collection("cart_1")).sessions == []
    await world.checkout("cart_1", 0, "K1", provider="sandbox", event_id="evt_co")
    authorized = _only(world.published("payment.authorized", "cart_1"))
    assert authorized.causation_id == "evt_co"
    data = _data(authorized)
    assert (data["provider_id"], data["amount"]) == ("system", 0)
    assert data["payment_id"] and data["session_id"]
    assert _calls(world) == []
    collection = await world.collection("cart_1")
    assert collection.payment is not None and collection.payment.provider_id == "system"
    assert collection.status == CollectionStatus.AUTHORIZED


async def test_later_checkout_with_new_key_republishes_same_event() -> None:
    world = _world()
    await world.checkout("cart_1", 5000, "K1", provider="sandbox")
    original = _only(world.published("payment.authorized", "cart_1"))
    await world.checkout("cart_1", 5000, "K2", provider="sandbox")
    await world.checkout("cart_1", 5000, "K1", provider="sandbox")
    answers = world.published("payment.authorized", "cart_1")
    assert len(answers) == 3
    assert {e.id for e in answers} == {original.id}
    assert all(e.payload == original.payload for e in answers)  # byte for byte the same
    assert {e.id for e in world.publisher.published if e.key == "cart_1"} == {original.id}
    assert len(_authorize_calls(world)) == 1
    collection = await world.collection("cart_1")
    assert collection.payment is not None
    assert collection.payment.id == _data(original)["payment_id"]


async def test_same_key_different_amount_is_idempotency_conflict() -> None:
    world = _world()
    await world.checkout("cart_1", 5000, "K1", provider="sandbox")
    await world.checkout("cart_1", 6000, "K1", provider="sandbox", event_id="evt_co")
    await _rejected(world, "cart_1", "evt_co", "idempotency_conflict")
    assert [(op, amount) for op, _, amount in _authorize_calls(world)] == [("authorize", 5000)]
    collection = await world.collection("cart_1")
    assert collection.payment is not None and collection.payment.amount == 5000
