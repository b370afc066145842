"""Property test: random event sequences against one collection keep every invariant.

Each example drives one cart's collection through a random sequence of cart
updates, checkouts, admin captures/refunds/cancels (with reused command ids and
crashes between a reservation and its provider call), provider webhooks,
reconciler runs and redeliveries, with provider outcomes drawn at random.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from domain_testkit import CART_ID, NOW, REGIONS, validate_event
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from service.domain import derived_ids as ids
from service.domain.calls import ProviderCall
from service.domain.cart import finish_cart_update
from service.domain.checkout import finish_checkout, next_checkout_call
from service.domain.commands import (
    CancelPayment,
    CapturePayment,
    CompleteCheckout,
    PaymentCommand,
    RefundPayment,
    UpdateCart,
    command_operation,
)
from service.domain.model import Meaning, PaymentCollection
from service.domain.outcomes import ProviderOutcome
from service.domain.payment_operations import finish_payment_command
from service.domain.reconcile import (
    apply_reconcile,
    calls_to_repeat,
    status_queries,
    void_calls_for_found_authorizations,
)
from service.domain.statuses import (
    CollectionStatus,
    SessionStatus,
    can_move_collection,
    can_move_session,
)
from tests.unit.domain.domain_testkit import (
    apply_notification,
    begin_checkout,
    begin_payment_command,
    decide_cart_update,
)

PROVIDERS = ("manual", "sandbox", "stripe")  # stripe is enabled in no region
AMOUNTS = (0, 1000, 2500, 5000)
COMMAND_IDS = ("cmd_1", "cmd_2", "cmd_3", "cmd_4", "cmd_5")
COMMAND_AMOUNTS = (250, 500, 1250)
ACTION = {"type": "redirect_to_url", "url": "https://bank.example/3ds"}

ANY_OUTCOME = st.sampled_from(
    [
        ProviderOutcome.succeeded({"ref": "r1"}),
        ProviderOutcome.succeeded({"ref": "r1"}),
        ProviderOutcome.succeeded({"ref": "r1"}),
        ProviderOutcome.succeeded({"ref": "r1"}),
        ProviderOutcome.succeeded({"ref": "r1"}),
        ProviderOutcome.succeeded({"ref": "r2"}, captured=True),
        ProviderOutcome.requires_more(ACTION, {"step": "3ds"}),
        ProviderOutcome.pending(),
        ProviderOutcome.declined("card declined", "card_declined"),
        ProviderOutcome.invalid_data("bad token"),
        ProviderOutcome.failed("bad request"),
        ProviderOutcome.transient("503"),
        ProviderOutcome.unknown("timeout"),
        ProviderOutcome.canceled(),
    ]
)
SESSION_CALL_OUTCOME = st.sampled_from(
    [
        ProviderOutcome.succeeded({"ref": "s1"}),
        ProviderOutcome.succeeded({"ref": "s1"}),
        ProviderOutcome.succeeded({"ref": "s1"}),
        ProviderOutcome.succeeded(),
        ProviderOutcome.succeeded(),
        ProviderOutcome.failed("bad request"),
        ProviderOutcome.transient("503"),
        ProviderOutcome.unknown("timeout"),
    ]
)
COMMAND_OUTCOME = st.sampled_from(
    [
        ProviderOutcome.succeeded(),
        ProviderOutcome.succeeded(),
        ProviderOutcome.failed("bad request"),
        ProviderOutcome.declined("no"),
        ProviderOutcome.transient("503"),
        ProviderOutcome.unknown("timeout"),
        ProviderOutcome.pending(),
    ]
)
NOT_FOUND = ProviderOutcome.not_found("no record of this operation")
STATUS_OUTCOME = st.one_of(ANY_OUTCOME, st.just(NOT_FOUND))
PENDING_STATUS_OUTCOME = st.one_of(COMMAND_OUTCOME, st.just(NOT_FOUND))
#: Steps while nothing is authorized, and once a payment exists.
STEPS_BEFORE = st.sampled_from(
    ["cart", "cart", "checkout", "checkout", "checkout", "webhook", "reconcile", "redeliver"]
)
STEPS_AFTER = st.sampled_from(
    ["cart", "checkout", "command", "command", "command", "command", "command", "resume",
     "resume", "webhook", "webhook", "webhook", "reconcile", "redeliver"]
)  # fmt: skip


def _closure(statuses: list[Any], can_move: Any) -> dict[Any, set[Any]]:
    """Everything reachable through the table: one decision may take several edges
    (authorize + capture at once: awaiting -> authorized -> completed)."""
    reach = {s: {t for t in statuses if can_move(s, t)} for s in statuses}
    changed = True
    while changed:
        changed = False
        for targets in reach.values():
            more = set().union(*(reach[t] for t in targets)) - targets
            if more:
                targets |= more
                changed = True
    return reach


COLLECTION_REACH = _closure(list(CollectionStatus), can_move_collection)
SESSION_REACH = _closure(list(SessionStatus), can_move_session)


@dataclass
class World:
    """The stored collection and what the outside world remembers."""

    collection: PaymentCollection | None = None
    seq: int = 0
    delivered: list[UpdateCart | CompleteCheckout | dict[str, Any]] = field(default_factory=list)
    in_flight: dict[str, PaymentCommand] = field(default_factory=dict)
    payment_id: str | None = None

    def next_id(self, prefix: str) -> str:
        self.seq += 1
        return f"{prefix}_{self.seq}"


# -- steps ------------------------------------------------------------------------------


def _cart(world: World, data: st.DataObject, cmd: UpdateCart | None = None) -> None:
    if cmd is None:
        region = data.draw(st.sampled_from(sorted(REGIONS)), label="region")
        cmd = UpdateCart(
            event_id=world.next_id("evt_cart"),
            cart_id=CART_ID,
            region_id=region,
            currency_code=data.draw(
                st.sampled_from(["usd", "usd", "USD", "eur"]), label="currency"
            ),
            amount=data.draw(st.sampled_from((*AMOUNTS, 5000, 5000)), label="amount"),
            enabled_providers=REGIONS[region],
            now=NOW,
            version=data.draw(st.none() | st.integers(0, 4), label="version"),
            provider_id=data.draw(st.none() | st.sampled_from(PROVIDERS), label="provider"),
            payment_data=data.draw(st.none() | st.just({"payment_method": "pm"}), label="pdata"),
            context=data.draw(st.sampled_from([{}, {"ip": "10.0.0.1"}]), label="context"),
        )
        world.delivered.append(cmd)
    decision = decide_cart_update(world.collection, cmd)
    if decision.kind in ("duplicate", "ignored"):
        return
    answers = [
        (call, data.draw(SESSION_CALL_OUTCOME, label=call.operation)) for call in decision.calls
    ]
    world.collection = finish_cart_update(decision, answers, cmd.now)


def _checkout(world: World, data: st.DataObject, cmd: CompleteCheckout | None = None) -> None:
    if cmd is None:
        region = data.draw(st.sampled_from(["eu", "eu", "us"]), label="region")
        existing = world.collection
        amount, currency = (existing.amount, existing.currency_code) if existing else (5000, "usd")
        odd = data.draw(st.integers(0, 5), label="odd") == 0
        cmd = CompleteCheckout(
            event_id=world.next_id("evt_checkout"),
            cart_id=CART_ID,
            idempotency_key=data.draw(st.sampled_from(["k1", "k2", "k3"]), label="key"),
            region_id=region,
            currency_code=data.draw(st.sampled_from(["usd", "eur"]), label="currency")
            if odd
            else currency,
            amount=data.draw(st.sampled_from(AMOUNTS), label="amount") if odd else amount,
            provider_id=data.draw(st.sampled_from(PROVIDERS), label="provider")
            if odd
            else data.draw(st.sampled_from(REGIONS[region]), label="provider"),
            enabled_providers=REGIONS[region],
            now=NOW,
            payment_data=data.draw(st.sampled_from([{}, {"action_result": "succeeded"}])),
        )
        world.delivered.append(cmd)
    decision = begin_checkout(world.collection, cmd)
    if decision.kind == "duplicate":
        return
    if decision.kind == "settled":
        assert decision.calls == []
        world.collection = decision.collection
        return
    answers: list[tuple[ProviderCall, ProviderOutcome]] = []
    # The calls the service makes, in its order (the domain's `next_checkout_call`).
    while (ask := next_checkout_call(decision, answers)) is not None:
        call = ask.call
        if call.operation == "initiate":
            outcome = data.draw(SESSION_CALL_OUTCOME, label="initiate")
        else:
            outcome = data.draw(ANY_OUTCOME, label="authorize")
        answers.append((call, outcome))
    world.collection = finish_checkout(decision, cmd, answers)


def _run_command(world: World, data: st.DataObject, cmd: PaymentCommand) -> None:
    assert world.collection is not None
    decision = begin_payment_command(world.collection, cmd)
    if decision.kind == "duplicate":
        world.in_flight.pop(cmd.command_id, None)
        return
    world.collection = decision.collection  # a settled answer, or the reservation
    if decision.kind == "settled":
        assert not decision.reserve
        return
    [call] = decision.calls
    # Namespaced by collection and operation (issue 16).
    assert call.idempotency_key == ids.provider_key(
        world.collection.id, command_operation(cmd), cmd.command_id
    )
    if decision.reserve:
        assert world.collection.payment is not None
        assert world.collection.payment.pending_for(cmd.command_id) is not None
    world.in_flight[cmd.command_id] = cmd
    if data.draw(st.integers(0, 4), label="crash") == 0:
        return  # died after storing the reservation, before the provider call
    outcome = data.draw(COMMAND_OUTCOME, label="command outcome")
    world.collection = finish_payment_command(world.collection.model_copy(deep=True), cmd, outcome)
    if world.collection.has_processed(cmd.command_id):
        world.in_flight.pop(cmd.command_id)


def _command(world: World, data: st.DataObject) -> None:
    collection = world.collection
    if collection is None or collection.payment is None:
        return  # the service answers a command for no payment without a collection
    command_id = data.draw(st.sampled_from(COMMAND_IDS), label="command id")
    total = collection.payment.amount
    amount = data.draw(
        st.sampled_from([None, None, 0, total // 4, total // 3, total // 2, total, total + 1]),
        label="command amount",
    )
    common: dict[str, Any] = {
        "command_id": command_id,
        "payment_id": collection.payment.id,
        "requested_by": "ops",
        "now": NOW,
    }
    cmd: PaymentCommand
    match data.draw(st.sampled_from(["capture", "refund", "cancel"]), label="operation"):
        case "capture":
            cmd = CapturePayment(**common, amount=amount)
        case "refund":
            cmd = RefundPayment(**common, amount=amount, reason="r")
        case _:
            cmd = CancelPayment(**common)
    _run_command(world, data, cmd)


def _resume(world: World, data: st.DataObject) -> None:
    if not world.in_flight:
        return
    command_id = data.draw(st.sampled_from(sorted(world.in_flight)), label="resume")
    _run_command(world, data, world.in_flight[command_id])


def _webhook(world: World, data: st.DataObject, redelivered: dict[str, Any] | None = None) -> None:
    collection = world.collection
    if collection is None:
        return
    if redelivered is None:
        session_ids = [s.id for s in collection.sessions] + ["payses_unknown"]
        meanings: list[Meaning] = ["authorized", "captured", "failed", "requires_more", "canceled"]
        if collection.payment is not None:
            meanings += ["captured", "captured", "canceled"]
            # Issue 13: money the provider moved on its own (provider_events, disputes).
            meanings += ["refund_succeeded", "refund_failed", "refund_pending", "disputed"]
        meaning = data.draw(st.sampled_from(meanings), label="meaning")
        extra: dict[str, Any] = {}
        if meaning.startswith("refund_") and collection.payment is not None:
            keys = [p.provider_key for p in collection.payment.pending if p.operation == "refund"]
            extra["data"] = {
                "refund_id": data.draw(st.sampled_from(["re_1", "re_2"]), label="refund id"),
                "provider_key": data.draw(st.none() | st.sampled_from(keys or ["k"]), label="key"),
            }
        elif meaning == "disputed":
            extra["data"] = {
                "dispute_id": "du_1",
                "status": data.draw(st.sampled_from(["open", "won", "lost"]), label="dispute"),
                "reason": "fraudulent",
            }
        redelivered = {
            **extra,
            "event_id": world.next_id("evt_wh"),
            "meaning": meaning,
            "session_id": data.draw(st.none() | st.sampled_from(session_ids), label="session"),
            "provider_id": data.draw(st.sampled_from(PROVIDERS), label="wh provider"),
            "amount": data.draw(
                st.none() | st.sampled_from((*AMOUNTS, 1250, *COMMAND_AMOUNTS)), label="wh amount"
            ),
            "action": ACTION,
            "message": "from webhook",
            "now": NOW,
        }
        world.delivered.append(redelivered)
    updated = collection.model_copy(deep=True)
    seen = updated.has_processed(redelivered["event_id"])
    changed = apply_notification(updated, **redelivered)
    if seen:
        assert not changed
        assert updated == collection
    world.collection = updated


def _reconcile(world: World, data: st.DataObject) -> None:
    """What `PaymentService.reconcile` does (the same domain functions), with the
    provider's answers drawn: status queries first, then the repeats they allow."""
    if world.collection is None:
        return
    collection = world.collection.model_copy(deep=True)
    statuses = [
        (
            call,
            data.draw(
                STATUS_OUTCOME if call.operation == "authorize" else PENDING_STATUS_OUTCOME,
                label=f"status of {call.operation}",
            ),
        )
        for call in status_queries(collection, NOW)
    ]
    repeats = calls_to_repeat(statuses) + void_calls_for_found_authorizations(collection, statuses)
    answers = statuses + [
        (call, data.draw(COMMAND_OUTCOME, label=f"repeated {call.operation}")) for call in repeats
    ]
    apply_reconcile(collection, answers, NOW)
    world.collection = collection


def _redeliver(world: World, data: st.DataObject) -> None:
    if not world.delivered:
        return
    event = data.draw(st.sampled_from(world.delivered), label="redeliver")
    processed = world.collection is not None and world.collection.has_processed(
        event.event_id if not isinstance(event, dict) else event["event_id"]
    )
    before = world.collection
    if isinstance(event, UpdateCart):
        _cart(world, data, event)
    elif isinstance(event, CompleteCheckout):
        _checkout(world, data, event)
    else:
        _webhook(world, data, event)
    if processed:
        assert world.collection == before, "a redelivered event took effect twice"


STEP_FUNCTIONS: dict[str, Callable[[World, st.DataObject], None]] = {
    "cart": _cart,
    "checkout": _checkout,
    "command": _command,
    "resume": _resume,
    "webhook": _webhook,
    "reconcile": _reconcile,
    "redeliver": _redeliver,
}


# -- invariants -------------------------------------------------------------------------


def _check(world: World, before: PaymentCollection | None) -> None:
    after = world.collection
    if after is None:
        return
    # Outbox: ids unique, nothing lost or rewritten, every payload on contract.
    outbox_ids = [e.id for e in after.events]
    assert len(outbox_ids) == len(set(outbox_ids)), "duplicate outbox event id"
    known = {e.id: e for e in before.events} if before is not None else {}
    assert set(known) <= set(outbox_ids), "an outbox event was lost"
    for outbound in after.events:
        old = known.get(outbound.id)
        if old is None:
            validate_event(outbound, after.cart_id)
        else:
            assert outbound.payload == old.payload, "a stored event was rewritten"
    counts = Counter(e.type for e in after.events)
    assert counts["payment.authorized"] <= 1
    assert counts["payment.canceled"] <= 1
    # Inbox: each inbound id takes effect once.
    processed_ids = [p.id for p in after.processed]
    assert len(processed_ids) == len(set(processed_ids)), "an event id was processed twice"

    # Statuses never move backwards (possibly several legal edges in one decision).
    if before is not None:
        assert after.status in COLLECTION_REACH[before.status], (before.status, after.status)
        old_sessions = {s.id: s.status for s in before.sessions}
        for session in after.sessions:
            if session.id in old_sessions:
                assert session.status in SESSION_REACH[old_sessions[session.id]], (
                    old_sessions[session.id],
                    session.status,
                )
    providers = [s.provider_id for s in after.sessions]
    assert len(providers) == len(set(providers)), "two sessions for one provider"
    assert sum(s.status == SessionStatus.AUTHORIZED for s in after.sessions) <= 1

    # At most one payment, and once set it never changes.
    payment = after.payment
    if world.payment_id is not None:
        assert payment is not None and payment.id == world.payment_id, "the payment changed"
    if payment is None:
        assert after.status in (
            CollectionStatus.NOT_PAID,
            CollectionStatus.AWAITING,
            CollectionStatus.FAILED,
        )
        return
    world.payment_id = payment.id
    if before is not None and before.payment is not None:
        assert (payment.session_id, payment.amount) == (
            before.payment.session_id,
            before.payment.amount,
        )
    paid_session = after.session_by_id(payment.session_id)
    assert paid_session is not None
    assert paid_session.status in (SessionStatus.AUTHORIZED, SessionStatus.CANCELED)

    # Money.
    assert payment.captured_total <= payment.amount
    assert payment.refunded_total <= payment.captured_total
    assert payment.pending_capture + payment.captured_total <= payment.amount
    assert payment.pending_refund + payment.refunded_total <= payment.captured_total
    assert all(c.amount > 0 for c in payment.captures)
    assert all(r.amount > 0 for r in payment.refunds)
    assert len({c.id for c in payment.captures}) == len(payment.captures)
    assert len({r.id for r in payment.refunds}) == len(payment.refunds)
    pending_ids = [p.command_id for p in payment.pending]
    assert len(pending_ids) == len(set(pending_ids))
    assert not set(pending_ids) & set(processed_ids), "a settled command is still reserved"
    # One event per money movement, never two.
    assert counts["payment.captured"] == len(payment.captures)
    # A refund the provider reversed later (refund succeeded, then failed) was
    # announced once and answered once by payment.failed; it is no longer booked.
    reversed_refunds = [h for h in payment.history if h.action == "refund_failed"]
    money_back = [r for r in payment.refunds if r.status == "succeeded"]
    assert counts["payment.refunded"] == len(money_back) + len(reversed_refunds)
    assert counts["payment.authorized"] == 1
    assert counts["payment.canceled"] == int(payment.is_canceled)
    if payment.is_canceled:
        assert payment.captured_total == 0
        assert after.status == CollectionStatus.CANCELED
    if payment.captured_total and payment.captured_total == payment.amount:
        assert after.status == CollectionStatus.COMPLETED


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.data())
def test_random_sequences_keep_every_invariant(data: st.DataObject) -> None:
    """Up to 25 random steps against one collection, as many examples as the Hypothesis
    profile says (`dev` 40, `ci` 100, `prove` 2,000: `tests/conftest.py`)."""
    world = World()
    steps = data.draw(st.integers(4, 25), label="steps")
    for _ in range(steps):
        authorized = world.collection is not None and world.collection.payment is not None
        step = data.draw(STEPS_AFTER if authorized else STEPS_BEFORE, label="step")
        before = world.collection
        STEP_FUNCTIONS[step](world, data)
        _check(world, before)
    final = world.collection
    event(f"steps: {steps // 5 * 5}+")
    event(f"final status: {final.status if final else None}")
    if final is not None and final.payment is not None:
        p = final.payment
        event(f"captures={min(len(p.captures), 3)} refunds={min(len(p.refunds), 2)}")
        event(f"canceled={p.is_canceled} pending={len(p.pending)}")
