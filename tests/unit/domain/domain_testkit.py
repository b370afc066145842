"""Builders and checks shared by the domain unit tests (pure: no I/O)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from schemas.topics import EVENT_MODELS
from service.domain import cart as cart_rules
from service.domain import checkout as checkout_rules
from service.domain import payment_operations as operation_rules
from service.domain.calls import ProviderCall
from service.domain.cart import finish_cart_update
from service.domain.checkout import finish_checkout
from service.domain.commands import (
    CancelPayment,
    CapturePayment,
    CompleteCheckout,
    PaymentCommand,
    RefundPayment,
    UpdateCart,
)
from service.domain.model import Meaning, Notification, OutboxEvent, PaymentCollection
from service.domain.outcomes import OutcomeKind, ProviderOutcome
from service.domain.payment_operations import finish_payment_command
from service.domain.results import Decision

NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
LATER = NOW + timedelta(minutes=5)
CART_ID = "cart_01"
#: Region id -> providers enabled there, in a stable order.
REGIONS: dict[str, tuple[str, ...]] = {
    "eu": ("manual", "sandbox"),
    "us": ("sandbox",),
    "none": (),
}
OK = ProviderOutcome.succeeded()

Resolver = Callable[[ProviderCall], ProviderOutcome]

T = TypeVar("T")


def _copied(collection: T) -> T:
    """The domain changes the aggregate it is given in place (the unit of work hands it
    a fresh load each time); these tests keep the one they pass in, to compare."""
    return collection.model_copy(deep=True) if collection is not None else collection  # type: ignore[attr-defined,no-any-return]


def decide_cart_update(collection: PaymentCollection | None, cmd: UpdateCart) -> Decision:
    return cart_rules.decide_cart_update(_copied(collection), cmd)


def begin_checkout(
    collection: PaymentCollection | None, cmd: CompleteCheckout, lease_until: Any = None
) -> Decision:
    return checkout_rules.begin_checkout(_copied(collection), cmd, lease_until)


def begin_payment_command(
    collection: PaymentCollection, cmd: PaymentCommand, lease: Any = None
) -> Decision:
    return operation_rules.begin_payment_command(_copied(collection), cmd, lease)


def cart_update(
    event_id: str = "evt_cart_1",
    *,
    amount: int = 5000,
    region_id: str = "eu",
    currency_code: str = "usd",
    providers: tuple[str, ...] | None = None,
    now: datetime = NOW,
    **fields: Any,
) -> UpdateCart:
    return UpdateCart(
        event_id=event_id,
        cart_id=CART_ID,
        region_id=region_id,
        currency_code=currency_code,
        amount=amount,
        enabled_providers=REGIONS[region_id] if providers is None else providers,
        now=now,
        **fields,
    )


def checkout(
    event_id: str = "evt_checkout_1",
    *,
    key: str = "idem_1",
    amount: int = 5000,
    provider_id: str = "sandbox",
    region_id: str = "eu",
    currency_code: str = "usd",
    providers: tuple[str, ...] | None = None,
    now: datetime = NOW,
    **fields: Any,
) -> CompleteCheckout:
    return CompleteCheckout(
        event_id=event_id,
        cart_id=CART_ID,
        idempotency_key=key,
        region_id=region_id,
        currency_code=currency_code,
        amount=amount,
        provider_id=provider_id,
        enabled_providers=REGIONS[region_id] if providers is None else providers,
        now=now,
        **fields,
    )


def capture(
    command_id: str, payment_id: str, amount: int | None = None, *, now: datetime = LATER
) -> CapturePayment:
    return CapturePayment(
        command_id=command_id,
        payment_id=payment_id,
        requested_by="ops@example.com",
        now=now,
        amount=amount,
        key_id="k1",
    )


def refund(
    command_id: str,
    payment_id: str,
    amount: int | None = None,
    *,
    reason: str | None = None,
    now: datetime = LATER,
) -> RefundPayment:
    return RefundPayment(
        command_id=command_id,
        payment_id=payment_id,
        requested_by="ops@example.com",
        now=now,
        amount=amount,
        reason=reason,
    )


def cancel(command_id: str, payment_id: str, *, now: datetime = LATER) -> CancelPayment:
    return CancelPayment(
        command_id=command_id, payment_id=payment_id, requested_by="ops@example.com", now=now
    )


def answer(
    decision: Decision, outcome: ProviderOutcome | Resolver = OK
) -> list[tuple[ProviderCall, ProviderOutcome]]:
    """Answer a decision's calls as the service layer does.

    Like `PaymentService._checkout_calls`, a failed initiate stops the calls: there is
    no session at the provider to authorize.
    """
    resolve: Resolver = outcome if callable(outcome) else (lambda _call: outcome)
    answers: list[tuple[ProviderCall, ProviderOutcome]] = []
    for call in decision.calls:
        result = resolve(call)
        answers.append((call, result))
        if call.operation == "initiate" and result.kind != OutcomeKind.SUCCEEDED:
            if any(c.operation == "authorize" for c in decision.calls):
                break
    return answers


def by_operation(authorize: ProviderOutcome = OK, *, initiate: ProviderOutcome = OK) -> Resolver:
    def resolve(call: ProviderCall) -> ProviderOutcome:
        if call.operation == "authorize":
            return authorize
        if call.operation == "initiate":
            return initiate
        return OK

    return resolve


def run_cart_update(
    collection: PaymentCollection | None,
    cmd: UpdateCart,
    outcome: ProviderOutcome | Resolver = OK,
) -> tuple[Decision, PaymentCollection]:
    decision = decide_cart_update(collection, cmd)
    if decision.kind != "call":
        return decision, decision.collection
    return decision, finish_cart_update(decision, answer(decision, outcome), cmd.now)


def run_checkout(
    collection: PaymentCollection | None,
    cmd: CompleteCheckout,
    authorize: ProviderOutcome = OK,
    *,
    initiate: ProviderOutcome = OK,
) -> tuple[Decision, PaymentCollection]:
    decision = begin_checkout(collection, cmd)
    if decision.kind != "call":
        return decision, decision.collection
    answers = answer(decision, by_operation(authorize, initiate=initiate))
    return decision, finish_checkout(decision, cmd, answers)


def run_command(
    collection: PaymentCollection, cmd: PaymentCommand, outcome: ProviderOutcome = OK
) -> tuple[Decision, PaymentCollection]:
    decision = begin_payment_command(collection, cmd)
    if decision.kind != "call":
        return decision, decision.collection
    assert len(decision.calls) == 1
    return decision, finish_payment_command(decision.stored, cmd, outcome)


def cart_with_sessions(region_id: str = "eu", amount: int = 5000) -> PaymentCollection:
    _, collection = run_cart_update(None, cart_update(region_id=region_id, amount=amount))
    return collection


def authorized_collection(*, captured: bool = False, amount: int = 5000) -> PaymentCollection:
    """A collection whose sandbox session authorized (and maybe captured) `amount`."""
    collection = cart_with_sessions(amount=amount)
    _, collection = run_checkout(
        collection, checkout(amount=amount), ProviderOutcome.succeeded(captured=captured)
    )
    assert collection.payment is not None
    return collection


def payment_id_of(collection: PaymentCollection) -> str:
    assert collection.payment is not None
    return collection.payment.id


# -- outbox checks -----------------------------------------------------------------------


def validate_event(event: OutboxEvent, cart_id: str = CART_ID) -> None:
    """The stored event is a valid contract event of its type, consistent with its record."""
    model = EVENT_MODELS[event.type]
    parsed = model.model_validate(event.payload)
    assert parsed.id == event.id
    assert parsed.type == event.type
    assert parsed.subject == cart_id
    assert parsed.time is not None
    assert event.payload["causationid"] == event.causation_id
    assert event.key == cart_id


def validate_outbox(collection: PaymentCollection) -> None:
    ids = [e.id for e in collection.events]
    assert len(ids) == len(set(ids)), "outbox event ids must be unique"
    for event in collection.events:
        validate_event(event, collection.cart_id)


def new_events(before: PaymentCollection | None, after: PaymentCollection) -> list[OutboxEvent]:
    known = {e.id for e in before.events} if before is not None else set()
    return [e for e in after.events if e.id not in known]


def data_of(event: OutboxEvent) -> dict[str, Any]:
    data = event.payload["data"]
    assert isinstance(data, dict)
    return data


def types_of(events: Iterable[OutboxEvent]) -> list[str]:
    return [e.type for e in events]


def only_event(events: list[OutboxEvent], event_type: str) -> OutboxEvent:
    matching = [e for e in events if e.type == event_type]
    assert len(matching) == 1, types_of(events)
    return matching[0]


# -- provider facts ----------------------------------------------------------------------


def apply_notification(
    collection: PaymentCollection,
    *,
    event_id: str,
    meaning: Meaning,
    session_id: str | None,
    provider_id: str,
    now: datetime,
    amount: int | None = None,
    data: dict[str, Any] | None = None,
    action: dict[str, Any] | None = None,
    message: str = "",
    reference: str | None = None,
    provider_event: str | None = None,
    capturable: int | None = None,
) -> bool:
    """Apply one webhook's fact to `collection` in place, as the unit of work has the
    aggregate do it; True when it changed something (applied or kept for later)."""
    notification = Notification(
        meaning=meaning,
        provider_id=provider_id,
        session_id=session_id,
        reference=reference,
        event_id=provider_event,
        amount=amount,
        capturable=capturable,
        data=data or {},
        action=action,
        message=message,
    )
    decision = collection.notify(event_id, notification, now)
    return decision.kind == "settled" and decision.changed
