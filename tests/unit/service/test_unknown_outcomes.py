"""Issue 16: money decisions under unknown outcomes, one named test per sequence.

Each test drives the service layer (PaymentService, the reconciler and the relay)
over the in-memory store and a fake processor that keeps its own ledger, and
compares the books with the processor's ledger at the end.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from schemas.inbound import ProviderWebhook
from service.domain import derived_ids as ids
from service.domain.authorization import finish_authorization
from service.domain.events import new_event
from service.domain.outcomes import ProviderOutcome
from service.domain.payment_operations import settle_pending
from tests.support.world import World, handle

pytestmark = pytest.mark.asyncio


def lose_everything(world: World, provider: str = "fake", operation: str = "authorize") -> None:
    """Every attempt of the next call acts but its answer is lost, and so are the
    status queries made on its behalf: the outcome stays unknown."""
    processor = world.processors[provider]
    attempts = world.caller.policy.max_attempts
    processor.inject(operation, *["lose"] * attempts)
    processor.inject("get_status", *["status_fail"] * attempts)


async def books_agree(world: World, cart_id: str) -> None:
    """Every live hold at the processors is the collection's payment, and amounts agree."""
    collection = await world.collection(cart_id)
    holds = [h for p in world.processors.values() for h in p.live_holds(cart_id)]
    payment = collection.payment
    if payment is None:
        assert holds == [], f"holds the books do not know: {holds}"
        return
    assert len(holds) == 1, f"more than one live authorization: {holds}"
    (hold,) = holds
    assert payment.data.get("hold_id") == hold.id
    assert payment.amount == hold.amount
    assert payment.captured_total == hold.captured
    assert payment.refunded_total == hold.refunded


# -- 1. a new checkout while an earlier authorization is unknown --------------------------


async def test_seq1_new_checkout_while_earlier_authorization_unknown_authorizes_once() -> None:
    world = World("fake", capture=True)
    lose_everything(world)
    first = await world.checkout("cart_1", 5000, "K1")
    assert first.saved and (await world.collection("cart_1")).needs_reconcile
    assert world.published("payment.authorized") == []

    await world.checkout("cart_1", 5000, "K2")  # the storefront gave up on K1
    await world.reconcile()
    world.advance(seconds=30)
    await world.reconcile()

    assert world.fake.count("authorize") == 1, world.fake.operations
    authorized = world.published("payment.authorized", "cart_1")
    assert len({e.id for e in authorized}) == 1
    assert not (await world.collection("cart_1")).needs_reconcile
    await books_agree(world, "cart_1")


async def test_seq1_new_checkout_on_another_provider_waits_for_the_unknown_one() -> None:
    world = World("stripe", "manual")
    lose_everything(world, "stripe")
    # Asked again before K2 (every attempt of the question): no answer.
    world.processors["stripe"].inject(
        "get_status", *["status_fail"] * world.caller.policy.max_attempts
    )
    await world.checkout("cart_1", 5000, "K1", provider="stripe")
    result = await world.checkout("cart_1", 5000, "K2", provider="manual")

    # K1 may be authorized: no second authorization while nobody knows.
    assert world.processors["manual"].count("authorize") == 0
    (failed,) = world.published("payment.failed", "cart_1")
    assert failed.payload["data"]["retryable"] is True
    assert result.status == "rejected"

    world.advance(seconds=30)
    await world.reconcile()
    (authorized,) = world.published("payment.authorized", "cart_1")
    assert authorized.payload["data"]["provider_id"] == "stripe"
    await world.checkout("cart_1", 5000, "K3", provider="manual")
    assert {e.id for e in world.published("payment.authorized", "cart_1")} == {authorized.id}
    assert world.processors["manual"].count("authorize") == 0
    await books_agree(world, "cart_1")


async def test_seq1_authorization_found_after_another_one_won_is_voided_once() -> None:
    world = World("stripe", "manual")
    await world.cart("cart_1", 5000)
    lose_everything(world, "stripe")
    await world.checkout("cart_1", 5000, "K1", provider="stripe")
    # The state the old begin_checkout left behind: the manual session authorized
    # while the stripe one is still unknown.
    loaded = await world.store.load_by_cart("cart_1")
    assert loaded is not None
    collection = loaded.collection
    manual = next(s for s in collection.sessions if s.provider_id == "manual")
    manual.authorization_key = "K2"
    finish_authorization(collection, manual.id, ProviderOutcome.succeeded(), "co_2", world.now)
    await world.store.save(collection, loaded.version)

    world.advance(seconds=30)
    await world.reconcile()  # finds K1 authorized: records it to be voided
    world.advance(seconds=30)
    await world.reconcile()  # voids it
    saves = world.store.saves
    world.advance(seconds=600)
    await world.reconcile()

    assert world.processors["stripe"].live_holds("cart_1") == []
    stripe_session = next(
        s for s in (await world.collection("cart_1")).sessions if s.provider_id == "stripe"
    )
    assert not stripe_session.needs_reconcile
    assert world.store.saves == saves, "the reconciler keeps saving a settled collection"


# -- 2. the authorized amount comes from the provider, not from the session -----------------


async def test_seq2_cart_update_during_unknown_authorization_keeps_the_provider_amount() -> None:
    world = World("fake")
    await world.cart("cart_1", 5000, version=1)
    lose_everything(world)
    await world.checkout("cart_1", 5000, "K1")
    await world.cart("cart_1", 9000, version=2)

    world.advance(seconds=30)
    await world.reconcile()

    (authorized,) = world.published("payment.authorized", "cart_1")
    assert authorized.payload["data"]["amount"] == 5000
    assert world.published("payment.failed", "cart_1") == []
    await books_agree(world, "cart_1")


@pytest.mark.parametrize(
    "update", [{"amount": 0}, {"amount": 5000, "region": "nowhere"}], ids=["zero", "region"]
)
async def test_seq2_cart_update_does_not_delete_a_session_whose_authorization_is_unknown(
    update: dict[str, object],
) -> None:
    world = World("fake", capture=True)
    world.registry.regions["nowhere"] = ()
    await world.cart("cart_1", 5000, version=1)
    lose_everything(world)
    await world.checkout("cart_1", 5000, "K1")
    await world.cart("cart_1", version=2, **update)  # type: ignore[arg-type]

    session = next(s for s in (await world.collection("cart_1")).sessions)
    assert session.needs_reconcile and session.amount == 5000
    world.advance(seconds=30)
    await world.reconcile()
    await books_agree(world, "cart_1")  # the hold is known to the books, not orphaned


# -- 3. the reconciler races a handler that is still working -------------------------------


async def _authorized(world: World, cart_id: str = "cart_1", amount: int = 5000) -> str:
    await world.checkout(cart_id, amount, f"K_{cart_id}")
    payment = (await world.collection(cart_id)).payment
    assert payment is not None
    return payment.id


async def test_seq3_reconciler_leaves_a_reservation_whose_lease_has_not_expired() -> None:
    world = World("fake")
    payment_id = await _authorized(world)
    reconciler_calls: list[tuple[str, str]] = []

    async def reconciler_runs_meanwhile() -> None:
        world.advance(seconds=6)  # past the reconciler's minimum age, within the lease
        before = len(world.fake.calls)
        await world.reconcile()
        reconciler_calls.extend(world.fake.calls[before:])

    world.fake.on("capture", reconciler_runs_meanwhile)
    await world.command("capture", payment_id, amount=2000, command_id="cap_1")

    assert reconciler_calls == [], "the reconciler took a reservation its owner still holds"
    payment = (await world.collection("cart_1")).payment
    assert payment is not None and payment.captured_total == 2000 and not payment.pending
    await books_agree(world, "cart_1")


async def test_seq3_reservation_names_its_owner_and_lease() -> None:
    world = World("fake")
    payment_id = await _authorized(world)
    seen: list[object] = []

    async def look() -> None:
        payment = (await world.collection("cart_1")).payment
        assert payment is not None
        seen.extend(payment.pending)

    world.fake.on("capture", look)
    await world.command("capture", payment_id, amount=2000, command_id="cap_1")
    (pending,) = seen
    assert pending.owner  # type: ignore[attr-defined]
    lease = pending.lease_until - world.now  # type: ignore[attr-defined]
    # At least every attempt's timeout and status query: the handler is surely done by then.
    assert lease >= timedelta(seconds=world.caller.policy.timeout_s * 2 * 2)


async def test_seq3_late_success_of_the_reconciler_is_applied_not_dropped() -> None:
    world = World("fake")
    payment_id = await _authorized(world)
    lose_everything(world, operation="capture")
    await world.command("capture", payment_id, amount=2000, command_id="cap_1")
    payment = (await world.collection("cart_1")).payment
    assert payment is not None and payment.pending  # outcome unknown: reserved

    async def slow_handler_stores_its_failure(*_: object) -> None:
        # The handler (presumed dead) stores `provider_unavailable` just before the
        # reconciler's write: the reconciler's version check fails.
        loaded = await world.store.load_by_cart("cart_1")
        assert loaded is not None and loaded.collection.payment is not None
        collection = loaded.collection
        (pending,) = collection.payment.pending  # type: ignore[union-attr]
        settle_pending(collection, pending, ProviderOutcome.transient("gave up"), world.now)
        await world.store.save(collection, loaded.version)

    world.advance(hours=1)
    world.store.before_save = slow_handler_stores_its_failure
    await world.reconcile()

    assert world.fake.count("capture") == 1
    await books_agree(world, "cart_1")


# -- 4. the reconciler asks before it repeats a money call ----------------------------------


@pytest.mark.parametrize("operation", ["capture", "refund"])
async def test_seq4_reconciler_asks_status_before_repeating_after_the_key_window(
    operation: str,
) -> None:
    world = World("fake")
    payment_id = await _authorized(world)
    if operation == "refund":
        await world.command("capture", payment_id, amount=5000)
    lose_everything(world, operation=operation)
    await world.command(operation, payment_id, amount=2000, command_id="op_1")
    payment = (await world.collection("cart_1")).payment
    assert payment is not None and payment.pending

    world.advance(hours=25)  # the processor forgot the key
    await world.reconcile()

    assert sum(1 for op, key, _ in world.fake.operations if op == operation and "op_1" in key) <= 1
    await books_agree(world, "cart_1")
    assert not (await world.collection("cart_1")).needs_reconcile


# -- 5. a command answered payment_not_found gives the same answer on replay -----------------


async def test_seq5_not_found_command_replayed_after_the_payment_exists_gives_the_same_answer() -> (
    None
):
    world = World("fake")
    session_id = ids.session_id(ids.collection_id("cart_1"), "fake", 1)
    payment_id = ids.payment_id(session_id)
    first = await world.command("capture", payment_id, amount=1000, command_id="cap_early")
    (answer,) = world.published("payment.failed")
    assert answer.payload["data"]["reason"] == "payment_not_found"

    assert await _authorized(world) == payment_id
    again = await world.command("capture", payment_id, amount=1000, command_id="cap_early")

    assert world.fake.count("capture") == 0
    assert [e.id for o in again.orphans for e in o.events] == [answer.id]
    assert again.status == first.status
    await books_agree(world, "cart_1")


# -- 6. provider idempotency keys are namespaced ----------------------------------------------


async def test_seq6_two_carts_with_the_same_checkout_key_both_authorize() -> None:
    world = World("fake")
    await world.checkout("cart_1", 5000, "same-key")
    await world.checkout("cart_2", 7000, "same-key")

    assert world.published("payment.failed") == []
    assert len(world.published("payment.authorized")) == 2
    await books_agree(world, "cart_1")
    await books_agree(world, "cart_2")


async def test_seq6_provider_keys_name_collection_and_operation() -> None:
    world = World("fake")
    payment_id = await _authorized(world)
    await world.command("capture", payment_id, amount=1000, command_id="K_cart_1")
    keys = {key for op, key, _ in world.fake.operations}
    assert "K_cart_1" not in keys  # neither the checkout's key nor the command id as-is
    assert len(keys) == 2


# -- 7. background loops neither starve nor lag -----------------------------------------------


async def test_seq7_uninstalled_provider_does_not_starve_the_reconciler() -> None:
    world = World("gone", "fake")
    for n in range(120):
        lose_everything(world, "gone")
        await world.checkout(f"stuck_{n}", 5000, "K", provider="gone")
    world.advance(seconds=1)
    lose_everything(world, "fake")
    await world.checkout("cart_ok", 5000, "K")
    del world.registry.providers["gone"]  # uninstalled, its sessions stay

    world.advance(seconds=30)
    await world.reconcile()
    world.advance(seconds=30)
    await world.reconcile()

    assert not (await world.collection("cart_ok")).needs_reconcile
    assert len(world.published("payment.authorized", "cart_ok")) == 1


async def _with_unsent_event(world: World, cart_id: str) -> str:
    await world.cart(cart_id, 5000)
    loaded = await world.store.load_by_cart(cart_id)
    assert loaded is not None
    collection = loaded.collection
    event = new_event(
        collection,
        _failed_data(collection),
        "payment.failed",
        f"cause_{cart_id}",
        world.now,
    )
    await world.store.save(collection, loaded.version)
    return event.id


def _failed_data(collection: object) -> object:
    from schemas.outbound import PaymentFailed

    return PaymentFailed.model_validate(
        {
            "cart_id": collection.cart_id,  # type: ignore[attr-defined]
            "collection_id": collection.id,  # type: ignore[attr-defined]
            "provider_id": "fake",
            "currency_code": "usd",
            "operation": "authorize",
            "reason": "declined",
            "message": "declined",
            "retryable": False,
        }
    )


async def test_seq7_one_failed_publish_does_not_abort_the_relay_pass() -> None:
    world = World("fake")
    bad = await _with_unsent_event(world, "cart_bad")
    good = await _with_unsent_event(world, "cart_good")
    world.publisher.fail_ids.add(bad)
    world.advance(seconds=60)

    await world.relay.run_once(timedelta(seconds=5))

    assert good in {e.id for e in world.publisher.published}


async def test_seq7_relay_min_age_counts_from_the_event_creation() -> None:
    world = World("fake")
    event_id = await _with_unsent_event(world, "cart_busy")
    world.advance(seconds=60)
    # The busy cart is written again and again; its old event must not wait for a lull.
    loaded = await world.store.load_by_cart("cart_busy")
    assert loaded is not None
    loaded.collection.updated_at = world.now
    await world.store.save(loaded.collection, loaded.version)

    await world.relay.run_once(timedelta(seconds=5))

    assert event_id in {e.id for e in world.publisher.published}


async def test_seq7_relay_takes_the_oldest_events_first() -> None:
    world = World("fake")
    first = await _with_unsent_event(world, "cart_a")
    world.advance(seconds=1)
    await _with_unsent_event(world, "cart_b")
    world.relay.batch_size = 1
    world.advance(seconds=60)
    await world.relay.run_once(timedelta(seconds=5))
    assert [e.id for e in world.publisher.published] == [first]


# -- found by the model test (tests/unit/model/test_payment_model.py) -------------------------


class Crash(BaseException):
    """The process dies in the middle of a provider call."""


async def _crash() -> None:
    raise Crash


async def test_model_crash_after_authorizing_then_cart_update_keeps_the_attempt() -> None:
    # The checkout stored nothing before its call: the process died after the
    # provider authorized, cart.updated then changed the session to 3000, and
    # the hold of 5000 belonged to nobody (the webhook then booked 3000).
    world = World("fake")
    await world.cart("cart_1", 5000, version=1)
    world.fake.inject("authorize", "lose")
    world.fake.on("get_status", _crash)
    with pytest.raises(Crash):
        await world.checkout("cart_1", 5000, "K1", event_id="co_1")
    await world.cart("cart_1", 3000, version=2)

    world.advance(hours=1)  # the lease of the dead handler is over
    await world.reconcile()

    (authorized,) = world.published("payment.authorized", "cart_1")
    assert authorized.payload["data"]["amount"] == 5000
    await books_agree(world, "cart_1")


async def test_model_authorized_webhook_books_the_amount_the_provider_holds() -> None:
    world = World("fake")
    await world.cart("cart_1", 5000, version=1)
    world.fake.inject("authorize", "lose")
    world.fake.on("get_status", _crash)
    with pytest.raises(Crash):
        await world.checkout("cart_1", 5000, "K1", event_id="co_1")
    await world.cart("cart_1", 3000, version=2)
    (hold,) = world.fake.holds.values()

    # The provider's webhook reports the hold before the reconciler asks.
    webhook = {
        "meaning": "authorized",
        "cart_id": "cart_1",
        "session_id": hold.session_id,
        "amount": hold.amount,
        "data": {"hold_id": hold.id},
    }
    data = ProviderWebhook.model_validate(
        {
            "provider_id": "fake",
            "received_at": world.now.isoformat(),
            "headers": {},
            "payload": json.dumps(webhook),
        }
    )
    await world.deliver(await handle(world.service, "wh_1", data))

    (authorized,) = world.published("payment.authorized", "cart_1")
    assert authorized.payload["data"]["amount"] == 5000
    await books_agree(world, "cart_1")


async def test_model_resumed_command_after_the_key_window_asks_status_first() -> None:
    # The handler died after the provider refunded (answer lost, then the process
    # killed during the status query); the command was redelivered a day later,
    # past the provider's key window: repeating the call refunded a second time.
    world = World("fake", capture=True)
    payment_id = await _authorized(world)
    world.fake.inject("refund", "lose")
    world.fake.on("get_status", _crash)
    with pytest.raises(Crash):
        await world.command("refund", payment_id, amount=2000, command_id="ref_1")
    world.advance(hours=25)

    await world.command("refund", payment_id, amount=2000, command_id="ref_1")

    assert world.fake.count("refund") == 1, world.fake.operations
    await books_agree(world, "cart_1")
