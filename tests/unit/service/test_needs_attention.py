"""needs_attention: an outcome the provider cannot tell, past the window in which a
repeat is safe, is never guessed (contract promise 9); a person resolves it."""

from __future__ import annotations

from service.domain.capabilities import Capabilities
from service.domain.outcomes import ProviderOutcome
from tests.support.world import World

DAY_S = 24 * 3600


def _status_fails(world: World) -> None:
    """Every status query of the next reconciler pass fails (could not tell)."""
    world.fake.inject("get_status", *["status_fail"] * world.caller.policy.max_attempts)


async def _capture_in_doubt(world: World) -> str:
    """A capture whose answer and every status query were lost: reserved, unknown."""
    world.fake.capabilities = Capabilities(idempotency_window_s=DAY_S)
    await world.checkout("cart_1", 5000, "k1")
    collection = await world.collection("cart_1")
    assert collection.payment is not None
    attempts = world.caller.policy.max_attempts
    world.fake.inject("capture", *["lose"] * attempts)
    world.fake.inject("get_status", *["status_fail"] * attempts)
    await world.command("capture", collection.payment.id, amount=2000, command_id="cap_1")
    return collection.payment.id


async def test_inside_the_window_an_unknown_capture_stays_unknown_and_is_asked_again() -> None:
    world = World("fake")
    await _capture_in_doubt(world)
    _status_fails(world)
    world.advance(hours=1)
    await world.reconcile()
    collection = await world.collection("cart_1")
    assert collection.needs_attention == []
    assert world.published("payment.failed", "cart_1") == []


async def test_past_the_window_it_needs_attention_once_and_nothing_is_repeated() -> None:
    world = World("fake")
    await _capture_in_doubt(world)
    calls_before = world.fake.count("capture")
    for _ in range(3):
        _status_fails(world)
        world.advance(hours=25)
        await world.reconcile()
    collection = await world.collection("cart_1")
    [attention] = collection.needs_attention
    assert attention.command_id == "cap_1" and attention.amount == 2000
    [failed] = world.published("payment.failed", "cart_1")
    data = failed.payload["data"]
    assert (data["reason"], data["retryable"], data["operation"]) == (
        "needs_attention",
        False,
        "capture",
    )
    assert world.fake.count("capture") == calls_before  # never repeated past the window
    assert collection.payment is not None and collection.payment.pending_capture == 2000


async def test_a_person_resolves_it_and_the_books_follow() -> None:
    world = World("fake")
    await _capture_in_doubt(world)
    _status_fails(world)
    world.advance(hours=25)
    await world.reconcile()
    collection = await world.collection("cart_1")
    loaded = await world.store.load(collection.id)
    assert loaded is not None
    decision = loaded.collection.resolve("cap_1", True, "ops@example.com", world.now)
    assert decision.kind == "settled"
    assert loaded.collection.needs_attention == []
    assert loaded.collection.payment is not None
    assert loaded.collection.payment.captured_total == 2000
    assert [e.type for e in loaded.collection.recorded] == ["payment.captured"]
    # Only an operation marked needs_attention can be resolved.
    again = loaded.collection.resolve("cap_1", False, "ops@example.com", world.now)
    assert again.kind == "ignored"


async def test_the_provider_telling_later_settles_it_without_a_person() -> None:
    world = World("fake")
    await _capture_in_doubt(world)
    _status_fails(world)
    world.advance(hours=25)
    await world.reconcile()
    assert (await world.collection("cart_1")).needs_attention != []
    world.advance(hours=1)
    await world.reconcile()  # the status query answers this time: the capture happened
    collection = await world.collection("cart_1")
    assert collection.needs_attention == []
    assert collection.payment is not None and collection.payment.captured_total == 2000
    assert ProviderOutcome  # the fake's records answer by key, kept for good
