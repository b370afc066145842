"""Admin capture, refund and cancel on the collection's payment.

Money rules: several partial captures up to the authorized amount; several
partial refunds up to the captured amount; cancel only while nothing is
captured; nothing on a canceled payment. A command reserves its amount as a
pending operation *before* its provider call, so that concurrent commands and
webhooks see it as taken and a crash resumes with the same provider key.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import assert_never

from schemas.outbound import PaymentFailed
from schemas.topics import (
    ADMIN_PAYMENT_CANCEL,
    ADMIN_PAYMENT_CAPTURE,
    ADMIN_PAYMENT_REFUND,
    PAYMENT_FAILED,
)
from service.domain import derived_ids as ids
from service.domain.bookings import record_cancel, record_capture, record_refund
from service.domain.calls import Answered, ProviderCall
from service.domain.commands import (
    CancelPayment,
    CapturePayment,
    PaymentCommand,
    RefundPayment,
    command_fingerprint,
)
from service.domain.events import standalone_event
from service.domain.failures import fail
from service.domain.model import (
    HistoryEntry,
    Operation,
    OutboxEvent,
    Payment,
    PaymentCollection,
    PendingOperation,
)
from service.domain.outcomes import OutcomeKind, ProviderOutcome
from service.domain.results import Decision


@dataclass(frozen=True, slots=True)
class Lease:
    """Who makes a reserved operation's provider call, and until when at most."""

    owner: str
    until: datetime


COMMAND_TYPES = {
    "capture": ADMIN_PAYMENT_CAPTURE,
    "refund": ADMIN_PAYMENT_REFUND,
    "cancel": ADMIN_PAYMENT_CANCEL,
}


def _history(payment: Payment, cmd: PaymentCommand, outcome: str, amount: int | None) -> None:
    payment.log(
        HistoryEntry(
            at=cmd.now,
            action=cmd.operation,
            command_id=cmd.command_id,
            amount=amount,
            requested_by=cmd.requested_by,
            key_id=cmd.key_id,
            note=cmd.note,
            outcome=outcome,
        )
    )


def _processed(collection: PaymentCollection, cmd: PaymentCommand) -> None:
    collection.remember(
        cmd.command_id, COMMAND_TYPES[cmd.operation], cmd.now, command_fingerprint(cmd)
    )


def _reject(
    collection: PaymentCollection,
    cmd: PaymentCommand,
    reason: str,
    message: str,
    *,
    amount: int | None = None,
    discriminator: str = "",
    record: bool = True,
    retryable: bool = False,
) -> Decision:
    payment = collection.payment
    fail(
        collection,
        operation=cmd.operation,
        reason=reason,
        message=message,
        retryable=retryable,
        causation_id=cmd.command_id,
        now=cmd.now,
        provider_id=payment.provider_id if payment else None,
        amount=amount,
        payment_id=cmd.payment_id,
        session_id=payment.session_id if payment else None,
        discriminator=discriminator,
    )
    if payment is not None:
        _history(payment, cmd, f"rejected: {reason}", amount)
    if record:
        _processed(collection, cmd)
    collection.updated_at = cmd.now
    return Decision("settled", collection, note=reason, rejected=True)


def pending_call(
    payment: Payment, collection: PaymentCollection, pending: PendingOperation
) -> ProviderCall:
    return ProviderCall(
        operation=pending.operation,
        provider_id=payment.provider_id,
        idempotency_key=pending.provider_key,
        session_id=payment.session_id,
        amount=pending.amount,
        currency_code=payment.currency_code,
        cart_id=collection.cart_id,
        payment_id=payment.id,
        data=payment.data,
        reason=pending.reason,
        final_capture=pending.final,
        ref=f"pending:{pending.command_id}",
    )


def decide_payment_command(
    collection: PaymentCollection | None,
    cmd: PaymentCommand,
    lease: Lease | None,
    conflict: str | None,
) -> Decision:
    """An admin command, before its provider call (the unit of work's `decide`).

    `conflict` is the fingerprint the command id was first claimed with, when that
    differs (a command id reused elsewhere with another meaning): refused, and its id
    stays free of effects here. A command about no payment is an `orphan`, answered
    `payment_not_found` (or the conflict) once and for good.
    """
    if collection is None:
        note = "idempotency_conflict" if conflict is not None else "payment_not_found"
        return Decision("orphan", events=unknown_payment_answer(cmd, conflict), note=note)
    if conflict is not None and not collection.has_processed(cmd.command_id):
        return reject_payment_command(
            collection,
            cmd,
            "idempotency_conflict",
            f"command id {cmd.command_id!r} was used before for {conflict}",
        )
    return begin_payment_command(collection, cmd, lease)


def settle_payment_command(
    collection: PaymentCollection, cmd: PaymentCommand, answered: Answered
) -> Decision:
    """Apply the provider's answer to what is stored when it arrives; `rejected`
    unless the operation took effect."""
    call, outcome = answered[-1]
    finish_payment_command(collection, cmd, outcome, call)
    succeeded = outcome.kind == OutcomeKind.SUCCEEDED
    return Decision("settled", collection, note=outcome.kind.value, rejected=not succeeded)


def unknown_payment_answer(cmd: PaymentCommand, conflict: str | None) -> list[OutboxEvent]:
    """`payment.failed` (`payment_not_found`, or the conflict) for a command that found
    no payment, keyed by its payment id: stored once, the same answer to a replay."""
    reason = "idempotency_conflict" if conflict is not None else "payment_not_found"
    message = (
        f"command id {cmd.command_id!r} was used before for {conflict}"
        if conflict is not None
        else f"no payment {cmd.payment_id!r}"
    )
    data = PaymentFailed.model_validate(
        {
            "cart_id": None,
            "collection_id": None,
            "provider_id": None,
            "currency_code": None,
            "operation": cmd.operation,
            "reason": reason,
            "message": message,
            "retryable": False,
            "amount": cmd.amount,
            "payment_id": cmd.payment_id,
        }
    )
    event = standalone_event(
        data, PAYMENT_FAILED, cmd.command_id, cmd.now, key=cmd.payment_id, subject=cmd.payment_id
    )
    return [event]


def payment_call(collection: PaymentCollection, payment: Payment) -> ProviderCall:
    """The payment as a call names it to its provider (reading its objects)."""
    return ProviderCall(
        operation="retrieve",
        provider_id=payment.provider_id,
        idempotency_key=f"{payment.id}:read",
        session_id=payment.session_id,
        amount=payment.amount,
        currency_code=payment.currency_code,
        cart_id=collection.cart_id,
        payment_id=payment.id,
        data=payment.data,
    )


def begin_payment_command(
    collection: PaymentCollection,
    cmd: PaymentCommand,
    lease: Lease | None = None,
) -> Decision:
    """Validate an admin command against the payment and reserve its amount.

    Returns `duplicate`, `settled` (rejected, or a repeated cancel answered with
    the stored event), or `call` with `reserve=True`: store the collection (the
    reservation) first, then make the call and hand its outcome to
    :func:`finish_payment_command`.

    `lease` names who makes the call and until when: the reconciler leaves the
    reservation alone until then, so it never repeats a call still in progress.
    A reservation stored by an earlier delivery is resumed (`how="resume"`: the
    money may have moved, so the provider is asked first). Changes `collection` in
    place.
    """
    payment = collection.payment
    if payment is None or payment.id != cmd.payment_id:
        return _reject(collection, cmd, "payment_not_found", f"no payment {cmd.payment_id!r}")
    repeated = _seen_before(collection, cmd)
    if repeated is None:
        repeated = _resume(collection, payment, cmd, lease)
    if repeated is not None:
        return repeated
    decided = _decide(collection, payment, cmd)
    if isinstance(decided, Decision):
        return decided
    return _reserve(collection, payment, cmd, decided, lease)


def _conflict(
    collection: PaymentCollection,
    cmd: PaymentCommand,
    message: str,
    reason: str = "idempotency_conflict",
) -> Decision:
    """Refuse a command id seen with another meaning; its id stays free of effects."""
    return _reject(
        collection,
        cmd,
        reason,
        message,
        discriminator=":conflict:" + command_fingerprint(cmd),
        record=False,
    )


def _seen_before(collection: PaymentCollection, cmd: PaymentCommand) -> Decision | None:
    """The command id took effect already: a duplicate, or a conflict if it meant otherwise."""
    seen = collection.processed_event(cmd.command_id)
    if seen is None:
        # Older than the inbox window: recognised by what it did (a capture or refund
        # booked or reserved under its id), which a replay must not do again.
        payment = collection.payment
        if payment is not None and payment.took_effect(cmd.operation, cmd.command_id):
            return Decision("duplicate", collection)
        return None
    if seen.fingerprint == command_fingerprint(cmd):
        return Decision("duplicate", collection)
    return _conflict(
        collection,
        cmd,
        f"command id {cmd.command_id!r} was used before for {seen.fingerprint}",
    )


def _resume(
    collection: PaymentCollection, payment: Payment, cmd: PaymentCommand, lease: Lease | None
) -> Decision | None:
    """The command's reservation is stored already: repeat its call with the same key."""
    pending = payment.pending_for(cmd.command_id)
    if pending is None:
        return None
    if pending.operation != cmd.operation or cmd.amount not in (None, pending.amount):
        return _conflict(
            collection,
            cmd,
            f"command id {cmd.command_id!r} is in flight as another {pending.operation}",
        )
    if pending.attention is not None or payment.key_forgotten(pending, cmd.now):
        # Past the provider's idempotency window a repeat would be a new request: the
        # reconciler's questions, the audit or a person (`payments resolve`) settle it,
        # and its answer (`needs_attention`) was or will be published once.
        return Decision("duplicate", collection, note="in flight past the provider's key window")
    # Resume: the reservation is stored already; repeat the call with its key,
    # under a new lease (stored first, like a new reservation).
    if lease is not None:
        pending.owner, pending.lease_until = lease.owner, lease.until
    collection.updated_at = cmd.now
    return Decision(
        "call",
        collection,
        calls=[pending_call(payment, collection, pending)],
        reserve=lease is not None,
        how="resume",
    )


def _decide(
    collection: PaymentCollection, payment: Payment, cmd: PaymentCommand
) -> Decision | PendingOperation:
    """Dispatch to the command's own decision: a refusal or answer, or what to reserve.

    `match` on the command's class, so mypy proves every command has a decision.
    """
    match cmd:
        case CapturePayment():
            return _decide_capture(collection, payment, cmd)
        case RefundPayment():
            return _decide_refund(collection, payment, cmd)
        case CancelPayment():
            return _decide_cancel(collection, payment, cmd)
        case _:  # pragma: no cover - every command class is matched above
            assert_never(cmd)


def _decide_capture(
    collection: PaymentCollection, payment: Payment, cmd: CapturePayment
) -> Decision | PendingOperation:
    """Partial captures up to what is capturable; nothing on a canceled payment.

    A capture whose answer depends on an operation still in flight (a cancel; a
    capture that may yet fail and free the amount) is answered `operation_in_flight`,
    never with the refusal the in-flight outcome might make true.
    """
    if payment.is_canceled:
        return _reject(
            collection, cmd, "payment_canceled", "the payment is canceled", amount=cmd.amount
        )
    if any(p.operation == "cancel" for p in payment.pending):
        return _in_flight(collection, cmd, "a cancel of the payment is in flight")
    # Never below zero, even if the provider's facts and our reservations overlap for
    # a moment (a release booked while a capture is in flight): a refusal naming a
    # negative amount would be refused by the contract, and the command never answered.
    available = max(0, payment.capturable)
    amount = cmd.amount if cmd.amount is not None else available
    if amount > available and amount <= available + payment.pending_capture:
        return _in_flight(collection, cmd, "a capture of the payment is in flight")
    reserved = _reserve_within(
        collection, cmd, available, "authorized and not yet captured", "amount_exceeds_authorized"
    )
    if isinstance(reserved, PendingOperation):
        # Without multicapture every capture is the last; with it, only the one that
        # takes all that is left. Stored with the reservation: a retry sends the same.
        reserved.final = not payment.capabilities.multicapture or reserved.amount == available
    return reserved


def _decide_refund(
    collection: PaymentCollection, payment: Payment, cmd: RefundPayment
) -> Decision | PendingOperation:
    """Partial refunds up to what is refundable: captured, and not refunded, reserved
    for a refund, or given back by a lost dispute."""
    waiting = payment.pending_capture + payment.pending_refund
    if payment.captured_total == 0:
        if payment.pending_capture:
            return _in_flight(collection, cmd, "a capture of the payment is in flight")
        return _reject(
            collection, cmd, "nothing_captured", "nothing is captured", amount=cmd.amount
        )
    available = payment.refundable
    amount = cmd.amount if cmd.amount is not None else available
    if waiting and (amount > available or available == 0) and amount <= available + waiting:
        return _in_flight(collection, cmd, "a capture or refund of the payment is in flight")
    return _reserve_within(
        collection,
        cmd,
        available,
        "captured and not yet refunded",
        "amount_exceeds_captured",
        reason=cmd.reason,
    )


def _decide_cancel(
    collection: PaymentCollection, payment: Payment, cmd: CancelPayment
) -> Decision | PendingOperation:
    """Cancel only while nothing is captured; a repeated cancel republishes its event."""
    if payment.is_canceled:
        # Cancel is idempotent in effect: answer with the stored event, same id.
        collection.republish(payment.canceled_event)
        _history(payment, cmd, "already canceled", None)
        _processed(collection, cmd)
        return Decision("settled", collection, note="already canceled: republished")
    if payment.captured_total > 0:
        return _reject(
            collection,
            cmd,
            "already_captured",
            "the payment has captures and cannot be canceled",
        )
    if payment.pending_capture > 0:
        return _in_flight(collection, cmd, "a capture of the payment is in flight")
    return _reservation(collection, cmd, payment.amount)


def _in_flight(collection: PaymentCollection, cmd: PaymentCommand, message: str) -> Decision:
    """The answer depends on an operation still in flight. While its owner is still at
    work on it (its lease runs) and the command may wait, `wait`: decided again in a
    moment, when it has settled. Otherwise `operation_in_flight` (retryable): the
    command id stays free, and the same command is decided again when sent again."""
    payment = collection.payment
    owned = payment is not None and any(
        p.lease_until is not None and p.lease_until > cmd.now for p in payment.pending
    )
    if cmd.patient and owned:
        return Decision("wait", collection, note=message)
    return _reject(
        collection,
        cmd,
        "operation_in_flight",
        f"{message}; its outcome decides this {cmd.operation}: send it again later",
        amount=cmd.amount,
        discriminator=":in_flight",
        record=False,
        retryable=True,
    )


def _reserve_within(
    collection: PaymentCollection,
    cmd: CapturePayment | RefundPayment,
    available: int,
    available_as: str,
    refusal: str,
    reason: str | None = None,
) -> Decision | PendingOperation:
    """Reserve the amount asked for (all that is `available` when none is named), or
    refuse it with `refusal` when it is not a positive part of `available`."""
    amount = cmd.amount if cmd.amount is not None else available
    problem = _amount_problem(cmd.operation, amount, available, available_as)
    if problem is not None:
        return _reject(collection, cmd, refusal, problem, amount=amount)
    return _reservation(collection, cmd, amount, reason=reason)


def _amount_problem(operation: str, amount: int, available: int, available_as: str) -> str | None:
    """Why `amount` cannot be taken out of `available` (None: it can)."""
    if 0 < amount <= available:
        return None
    if amount > 0:
        return f"{operation} of {amount} exceeds the {available} {available_as}"
    if available <= 0:
        return f"nothing left to {operation}"
    return "amount must be positive"


def _reservation(
    collection: PaymentCollection, cmd: PaymentCommand, amount: int, reason: str | None = None
) -> PendingOperation:
    return PendingOperation(
        operation=cmd.operation,
        command_id=cmd.command_id,
        amount=amount,
        provider_key=ids.provider_key(collection.id, cmd.operation, cmd.command_id),
        reason=reason,
        fingerprint=command_fingerprint(cmd),
        started_at=cmd.now,
    )


def _reserve(
    collection: PaymentCollection,
    payment: Payment,
    cmd: PaymentCommand,
    reserved: PendingOperation,
    lease: Lease | None,
) -> Decision:
    """Take the amount (stored before the call is made) and plan the call under its key."""
    if lease is not None:
        reserved.owner, reserved.lease_until = lease.owner, lease.until
    payment.pending.append(reserved)
    _history(payment, cmd, "started", reserved.amount)
    collection.updated_at = cmd.now
    return Decision(
        "call", collection, calls=[pending_call(payment, collection, reserved)], reserve=True
    )


def finish_payment_command(
    collection: PaymentCollection,
    cmd: PaymentCommand,
    outcome: ProviderOutcome,
    call: ProviderCall | None = None,
) -> PaymentCollection:
    """Apply the provider's answer to a reserved capture, refund or cancel.

    `call` is the call that was answered: should the reservation have been
    settled meanwhile as a failure (the reconciler took over), a success is
    still applied, never dropped.
    """
    payment = collection.payment
    assert payment is not None
    pending = payment.pending_for(cmd.command_id)
    if pending is None:  # settled meanwhile (a webhook or the reconciler)
        if call is not None and outcome.kind == OutcomeKind.SUCCEEDED:
            apply_late_success(collection, call, cmd.now)
        if not collection.has_processed(cmd.command_id):
            _processed(collection, cmd)
        return collection
    return settle_pending(collection, pending, outcome, cmd.now, cmd=cmd)


def resolve_attention(
    collection: PaymentCollection, command_id: str, happened: bool, by: str, now: datetime
) -> Decision:
    """A person looked at an operation that needs attention and says what the provider
    did: it happened (booked, announced) or it did not (the amount is free again,
    `payment.failed`). Only an operation marked `needs_attention` can be resolved."""
    payment = collection.payment
    pending = payment.pending_for(command_id) if payment is not None else None
    if payment is None or pending is None or pending.attention is None:
        return Decision("ignored", collection, note=f"no operation {command_id!r} needs attention")
    outcome = (
        ProviderOutcome.succeeded()
        if happened
        else ProviderOutcome.failed(f"{pending.operation} did not happen at the provider ({by})")
    )
    settle_pending(collection, pending, outcome, now)
    payment.log(
        HistoryEntry(
            at=now,
            action="resolve",
            command_id=command_id,
            amount=pending.amount,
            requested_by=by,
            outcome=f"needs_attention resolved: {'happened' if happened else 'did not happen'}",
        )
    )
    return Decision("settled", collection, note="resolved")


def apply_late_success(collection: PaymentCollection, call: ProviderCall, now: datetime) -> bool:
    """The provider says a capture, refund or cancel succeeded whose reservation is
    gone: settled as a failure by whoever answered first (a handler that gave up,
    a reconciler pass). The money moved, so the books follow the provider.

    Returns whether anything changed (nothing when the success is recorded already).
    """
    payment = collection.payment
    command_id = (call.ref or "").removeprefix("pending:")
    if payment is None or not command_id or call.operation not in ("capture", "refund", "cancel"):
        return False
    if payment.pending_for(command_id) is not None:
        return False
    operation: Operation = call.operation
    late = PendingOperation(
        operation=operation,
        command_id=command_id,
        amount=call.amount,
        provider_key=call.idempotency_key,
        reason=call.reason,
        started_at=now,
    )
    if operation == "capture":
        if any(c.command_id == command_id for c in payment.captures):
            return False
        if payment.is_canceled or call.amount > payment.capturable:
            return False
    elif operation == "refund":
        if any(r.command_id == command_id for r in payment.refunds):
            return False
        if call.amount > payment.refundable:
            return False
    elif payment.is_canceled or payment.captured_total > 0:
        return False
    payment.pending.append(late)
    settle_pending(collection, late, ProviderOutcome.succeeded(), now, late=True)
    return True


def settle_pending(
    collection: PaymentCollection,
    pending: PendingOperation,
    outcome: ProviderOutcome,
    now: datetime,
    *,
    cmd: PaymentCommand | None = None,
    late: bool = False,
) -> PaymentCollection:
    """Settle a reserved operation with a provider outcome (command, reconciler, webhook).

    An unknown outcome keeps the reservation: the amount stays taken until the
    provider tells what happened.
    """
    payment = collection.payment
    assert payment is not None
    if outcome.kind in (OutcomeKind.UNKNOWN, OutcomeKind.PENDING):
        # The owner is done and got no answer: release the lease, so the
        # reconciler asks at once instead of waiting for it to run out. A pending
        # answer names the provider's object (a refund accepted, not money yet):
        # every later fact about it finds the reservation by that id.
        pending.owner = None
        pending.lease_until = None
        if outcome.reference is not None:
            pending.reference = outcome.reference
        collection.updated_at = now
        return collection
    payment.pending.remove(pending)
    collection.updated_at = now
    # A capture reported meanwhile (a webhook) makes a cancel impossible, whatever
    # the provider answered: completed/partially_captured -> canceled is illegal.
    captured_meanwhile = pending.operation == "cancel" and payment.captured_total > 0
    if outcome.kind == OutcomeKind.SUCCEEDED and not captured_meanwhile:
        _book_success(collection, payment, pending, outcome.reference or pending.reference, now)
        result = "succeeded"
    else:
        result = _book_failure(collection, payment, pending, outcome, now, captured_meanwhile)
    _record_settled(collection, payment, pending, result, now, cmd=cmd, late=late)
    return collection


def refuse_pending(
    collection: PaymentCollection,
    pending: PendingOperation,
    reason: str,
    message: str,
    now: datetime,
) -> None:
    """A reserved operation the provider's own facts show cannot have happened: the
    reservation is released, `payment.failed` (`reason`, not retryable) answers it."""
    payment = collection.payment
    assert payment is not None
    payment.pending.remove(pending)
    collection.updated_at = now
    fail_pending(collection, payment, pending, reason, message, retryable=False, now=now)
    _record_settled(collection, payment, pending, reason, now, cmd=None, late=False)


def _book_success(
    collection: PaymentCollection,
    payment: Payment,
    pending: PendingOperation,
    reference: str | None,
    now: datetime,
) -> None:
    """The provider did what the reservation asked: the books follow."""
    if pending.operation == "capture":
        record_capture(
            collection,
            payment,
            command_id=pending.command_id,
            amount=pending.amount,
            causation_id=pending.command_id,
            now=now,
            releases_rest=pending.final and payment.capabilities.partial_capture_releases_rest,
        )
    elif pending.operation == "refund":
        record_refund(
            collection,
            payment,
            command_id=pending.command_id,
            amount=pending.amount,
            reason=pending.reason,
            causation_id=pending.command_id,
            now=now,
            reference=reference,
        )
    elif payment.is_canceled:
        # A second cancel that was in flight at the same time: already canceled,
        # so answer with the stored payment.canceled (same id) as a repeated
        # cancel does, instead of a second event and a new canceled_at.
        collection.republish(payment.canceled_event)
    else:
        record_cancel(collection, payment, causation_id=pending.command_id, now=now)


def _book_failure(
    collection: PaymentCollection,
    payment: Payment,
    pending: PendingOperation,
    outcome: ProviderOutcome,
    now: datetime,
    captured_meanwhile: bool,
) -> str:
    """The reservation is released without effect: `payment.failed`. Returns the reason."""
    reason, retryable = (
        ("already_captured", False)
        if captured_meanwhile
        else ("provider_unavailable", True)
        if outcome.kind == OutcomeKind.TRANSIENT
        else ("provider_error", False)
    )
    fail_pending(
        collection,
        payment,
        pending,
        reason,
        outcome.message or reason,
        retryable=retryable,
        now=now,
    )
    return reason


def fail_pending(
    collection: PaymentCollection,
    payment: Payment,
    pending: PendingOperation,
    reason: str,
    message: str,
    *,
    retryable: bool,
    now: datetime,
    discriminator: str = "",
) -> None:
    """`payment.failed` answering a reserved operation (its command is the cause)."""
    fail(
        collection,
        operation=pending.operation,
        reason=reason,
        message=message,
        retryable=retryable,
        causation_id=pending.command_id,
        now=now,
        provider_id=payment.provider_id,
        amount=pending.amount,
        payment_id=payment.id,
        session_id=payment.session_id,
        discriminator=discriminator,
    )


def _record_settled(
    collection: PaymentCollection,
    payment: Payment,
    pending: PendingOperation,
    result: str,
    now: datetime,
    *,
    cmd: PaymentCommand | None,
    late: bool,
) -> None:
    """History and inbox entry: the command's own, or those of a reconciler or late answer."""
    if cmd is not None:
        _history(payment, cmd, result, pending.amount)
        _processed(collection, cmd)
        return
    payment.log(
        HistoryEntry(
            at=now,
            action=pending.operation,
            command_id=pending.command_id,
            amount=pending.amount,
            outcome=f"{'applied late' if late else 'settled by reconciliation'}: {result}",
        )
    )
    if not collection.has_processed(pending.command_id):
        collection.remember(
            pending.command_id, COMMAND_TYPES[pending.operation], now, pending.fingerprint
        )


def reject_payment_command(
    collection: PaymentCollection, cmd: PaymentCommand, reason: str, message: str
) -> Decision:
    """Answer a command with `payment.failed` without recording its id as applied.

    Used for a command id already claimed with another fingerprint elsewhere
    (a different payment): this id must stay free of effects here.
    """
    return _conflict(collection, cmd, message, reason)
