"""What the service answers to a provider's outcomes, over the in-memory fakes.

Moved from tests/integration/test_lifecycle_sandbox_outcomes.py (which keeps a
decline, 3-D Secure, a lost answer and capture on authorization end to end with
the real sandbox over the real broker): the fake processor plays the provider,
and the provider caller's retries are the service's own. The sandbox's test
payment methods themselves are tested in tests/integration/test_providers.py.
"""

from __future__ import annotations

import pytest

from service.domain import derived_ids as ids
from service.domain.statuses import SessionStatus
from tests.support.world import World

pytestmark = pytest.mark.asyncio


async def test_requires_action_then_failed() -> None:
    world = World()
    await world.cart("cart_1", 5000)
    await world.checkout(
        "cart_1", 5000, "K1", event_id="evt_1", payment_data={"payment_method": "3ds"}
    )
    assert len(world.published("payment.requires_action", "cart_1")) == 1
    # The customer's authentication fails: the provider declines the same key.
    collection = await world.collection("cart_1")
    world.fake.declines.add(ids.provider_key(collection.id, "authorize", "K1"))
    await world.checkout(
        "cart_1",
        5000,
        "K1",
        event_id="evt_2",
        payment_data={"payment_method": "3ds", "action_result": "failed"},
    )
    (failed,) = world.published("payment.failed", "cart_1")
    assert failed.causation_id == "evt_2"
    data = failed.payload["data"]
    assert (data["operation"], data["reason"], data["retryable"]) == (
        "authorize",
        "declined",
        False,
    )
    collection = await world.collection("cart_1")
    assert collection.payment is None
    session = collection.session_for("fake")
    assert session is not None and session.status == SessionStatus.ERROR
    assert [op for op, _, _ in world.fake.operations] == ["decline"]
    assert world.published("payment.authorized", "cart_1") == []


async def test_a_transient_error_is_retried_and_authorizes_once() -> None:
    world = World()
    world.fake.inject("authorize", "transient")  # the first attempt; the caller tries again
    await world.checkout("cart_1", 5000, "K1", event_id="evt_1")
    (authorized,) = world.published("payment.authorized", "cart_1")
    assert authorized.causation_id == "evt_1"
    assert [(op, amount) for op, _, amount in world.fake.operations] == [("authorize", 5000)]
    assert world.published("payment.failed", "cart_1") == []


async def test_provider_error_on_every_attempt_is_provider_unavailable() -> None:
    world = World()
    attempts = world.caller.policy.max_attempts
    world.fake.inject("authorize", *["transient"] * attempts)
    await world.checkout("cart_1", 5000, "K1", event_id="evt_1")
    (failed,) = world.published("payment.failed", "cart_1")
    assert failed.causation_id == "evt_1"
    data = failed.payload["data"]
    assert (data["operation"], data["reason"], data["retryable"]) == (
        "authorize",
        "provider_unavailable",
        True,
    )
    assert world.fake.count("authorize") == 0
    assert [method for method, _ in world.fake.calls].count("authorize") == attempts
    collection = await world.collection("cart_1")
    assert collection.payment is None
    session = collection.session_for("fake")
    assert session is not None and session.status == SessionStatus.ERROR
