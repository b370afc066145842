"""Reconciliation: settling what the service does not know, by asking the provider.

Three kinds of things can be left unknown: an authorization whose answer was
lost, a reserved capture/refund/cancel whose call did not finish, and a lost
authorization (one that is not the payment) still to be voided. The rule for
all three: ask the provider for the status first; repeat a call only when the
provider says it never happened (a repeat after the provider's idempotency
window would be a new operation); never repeat an authorization (the customer
is not there to authenticate it).

The service layer makes the calls; these functions decide which and apply what
came back, so the unit tests and the model test use the very same rules.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import partial
from typing import Literal

from service.domain.authorization import (
    authorization_call,
    finish_authorization,
    unknown_authorization_queries,
)
from service.domain.backoff import Backoff
from service.domain.calls import Answered, Ask, ProviderCall
from service.domain.model import (
    LostAuthorization,
    PaymentCollection,
    PendingOperation,
    ReleasedHold,
)
from service.domain.outcomes import OutcomeKind, ProviderOutcome
from service.domain.payment_operations import (
    apply_late_success,
    fail_pending,
    pending_call,
    settle_pending,
)
from service.domain.results import Decision

Answers = Answered

# Back-off after a pass that could not settle everything (the status query
# failed, the provider is not installed): the collection goes to the back of the
# queue, which is ordered by due time, so it cannot hold up the others; the
# delay grows slowly, as most such failures are brief.
RECONCILE_BACKOFF = Backoff(initial_s=0.5, max_s=60.0)

_NO_ANSWER = (OutcomeKind.UNKNOWN, OutcomeKind.PENDING)


def void_call(collection: PaymentCollection, void: LostAuthorization) -> ProviderCall:
    """The call that releases a lost authorization, naming its provider object, under
    its own stable key: a cancel of the hold, or a refund of all of it when it was
    captured too (automatic capture: a canceled charge cannot be canceled)."""
    return _about_void(collection, void, "refund" if void.captured else "cancel", void.void_key)


def _void_authorization_call(
    collection: PaymentCollection, void: LostAuthorization
) -> ProviderCall:
    """The authorization a void is about, for asking whether it exists at all."""
    return _about_void(collection, void, "authorize", void.authorization_key)


def _about_void(
    collection: PaymentCollection,
    void: LostAuthorization,
    operation: Literal["authorize", "cancel", "refund"],
    idempotency_key: str,
) -> ProviderCall:
    return ProviderCall(
        operation=operation,
        provider_id=void.provider_id,
        idempotency_key=idempotency_key,
        session_id=void.session_id,
        amount=void.amount,
        currency_code=void.currency_code,
        cart_id=collection.cart_id,
        data=dict(void.data),
        ref=f"void:{void.authorization_key}",
    )


def decide_reconcile(collection: PaymentCollection, now: datetime) -> Decision:
    """What the reconciler asks about a collection now (the unit of work's `decide`):
    a status query for everything unknown, then the calls the answers say to make
    (:func:`calls_to_repeat`, voids of lost authorizations found to exist)."""
    queries = status_queries(collection, now)
    if not queries:
        return Decision("ignored", collection)
    return Decision(
        "call",
        collection,
        calls=queries,
        how="status",
        chain=partial(_then_repeat, now=now),
        settle_fresh=True,
    )


def _then_repeat(decision: Decision, answered: Answered, *, now: datetime) -> Ask | None:
    """Status queries first; then the calls their answers ask to make (same keys)."""
    asked = len(decision.calls)
    if len(answered) < asked:
        return Ask(decision.calls[len(answered)], "status")
    statuses = answered[:asked]
    repeats = calls_to_repeat(statuses, decision.stored, now) + void_calls_for_found_authorizations(
        decision.stored, statuses
    )
    made = len(answered) - asked
    return Ask(repeats[made]) if made < len(repeats) else None


def settle_reconcile(collection: PaymentCollection, answered: Answered, now: datetime) -> Decision:
    """Apply the answers to whatever is stored when they arrive (stored only if that
    changed something)."""
    if not apply_reconcile(collection, answered, now):
        return Decision("ignored", collection)
    return Decision("settled", collection)


def status_queries(collection: PaymentCollection, now: datetime) -> list[ProviderCall]:
    """What to ask the provider about this collection now (status queries only).

    Reservations whose owner's lease has not expired are left to their owner.
    """
    queries = unknown_authorization_queries(collection, now)
    payment = collection.payment
    if payment is not None:
        queries += [
            pending_call(payment, collection, p)
            for p in payment.pending
            if p.lease_until is None or p.lease_until <= now
        ]
    for void in collection.voids:
        queries.append(
            void_call(collection, void)
            if void.confirmed
            else _void_authorization_call(collection, void)
        )
    return queries


def calls_to_repeat(
    statuses: Answers, collection: PaymentCollection | None = None, now: datetime | None = None
) -> list[ProviderCall]:
    """The money calls the provider says never happened: safe to make (same key), and
    only inside the provider's idempotency window (after it, a repeat would be a new
    request: :func:`past_window`).

    Authorizations are never repeated; a void whose authorization turned out to
    exist is made now.
    """
    repeats: list[ProviderCall] = []
    for call, outcome in statuses:
        if call.operation not in ("capture", "refund", "cancel") or not outcome.is_not_found:
            continue
        if collection is not None and now is not None and past_window(collection, call, now):
            continue
        repeats.append(call)
    return repeats


def past_window(collection: PaymentCollection, call: ProviderCall, now: datetime) -> bool:
    """Whether a reserved operation started longer ago than its provider remembers keys."""
    payment = collection.payment
    pending = _pending_of(collection, call)
    return payment is not None and pending is not None and payment.key_forgotten(pending, now)


def _pending_of(collection: PaymentCollection, call: ProviderCall) -> PendingOperation | None:
    payment = collection.payment
    if payment is None or not (call.ref or "").startswith("pending:"):
        return None
    pending = payment.pending_for((call.ref or "").removeprefix("pending:"))
    return pending if pending is not None and pending.provider_key == call.idempotency_key else None


def void_calls_for_found_authorizations(
    collection: PaymentCollection, statuses: Answers
) -> list[ProviderCall]:
    """Voids whose authorization was unconfirmed and the status says it exists."""
    calls = []
    for call, outcome in statuses:
        if call.operation != "authorize" or not (call.ref or "").startswith("void:"):
            continue
        void = _void_for(collection, call)
        if void is not None and outcome.kind == OutcomeKind.SUCCEEDED:
            confirmed = void.model_copy(
                update={
                    "data": {**void.data, **outcome.data},
                    "captured": void.captured or outcome.captured,
                }
            )
            calls.append(void_call(collection, confirmed))
    return calls


def _void_for(collection: PaymentCollection, call: ProviderCall) -> LostAuthorization | None:
    key = (call.ref or "").removeprefix("void:")
    return next((v for v in collection.voids if v.authorization_key == key), None)


def _last_answers(answers: Answers) -> list[tuple[ProviderCall, ProviderOutcome]]:
    """One answer per call: a repeat's answer replaces the status that asked for it."""
    last: dict[tuple[str, str, str], tuple[ProviderCall, ProviderOutcome]] = {}
    for call, outcome in answers:
        last[(call.operation, call.idempotency_key, call.ref or "")] = (call, outcome)
    return list(last.values())


def apply_reconcile(collection: PaymentCollection, answers: Answers, now: datetime) -> bool:
    """Apply status answers (and the answers to repeated calls) in place.

    Works on whatever is stored when the answers arrive, so an answer that comes
    late (after a handler or another pass wrote) is applied, not dropped. Returns
    whether anything changed; when something stays unknown, the collection backs
    off, so one that cannot be settled does not hold up the others.
    """
    if not answers:
        return False
    settled_any = False
    unsettled = False
    for call, outcome in _last_answers(answers):
        ref = call.ref or ""
        if ref.startswith("void:"):
            changed, done = _apply_void(collection, call, outcome, now)
        elif call.operation == "authorize":
            changed, done = _apply_authorization(collection, call, outcome, now)
        else:
            changed, done = _apply_pending(collection, call, outcome, now)
        settled_any = settled_any or changed
        unsettled = unsettled or not done
    if unsettled:
        collection.reconcile_attempts += 1
        delay_s = RECONCILE_BACKOFF.delay_s(collection.reconcile_attempts)
        collection.reconcile_after = now + timedelta(seconds=delay_s)
    elif collection.reconcile_after is not None or collection.reconcile_attempts:
        collection.reconcile_after = None
        collection.reconcile_attempts = 0
    collection.updated_at = now
    return settled_any or unsettled


def _question_failed(outcome: ProviderOutcome) -> bool:
    return outcome.kind in _NO_ANSWER or (
        outcome.kind == OutcomeKind.TRANSIENT and not outcome.is_not_found
    )


def _apply_authorization(
    collection: PaymentCollection, call: ProviderCall, outcome: ProviderOutcome, now: datetime
) -> tuple[bool, bool]:
    session_id = (call.ref or "").removeprefix("session:")
    session = collection.session_by_id(session_id)
    if session is None or not session.needs_reconcile:
        return False, True  # settled meanwhile (a webhook, the checkout)
    if authorization_call(collection, session).idempotency_key != call.idempotency_key:
        return False, True  # a newer attempt on the session: this answer is about another
    if _question_failed(outcome):
        return False, False
    attempt = collection.attempt_for(session.authorization_key or "")
    cause = attempt.event_id if attempt and attempt.event_id else session.id
    finish_authorization(collection, session.id, outcome, cause, now)
    return True, True


def _apply_pending(
    collection: PaymentCollection, call: ProviderCall, outcome: ProviderOutcome, now: datetime
) -> tuple[bool, bool]:
    payment = collection.payment
    if payment is None:
        return False, True
    command_id = (call.ref or "").removeprefix("pending:")
    pending = payment.pending_for(command_id)
    if pending is None or pending.provider_key != call.idempotency_key:
        # Settled meanwhile: a success still counts (the money moved).
        if outcome.kind == OutcomeKind.SUCCEEDED:
            return apply_late_success(collection, call, now), True
        return False, True
    if _question_failed(outcome) or outcome.is_not_found:
        # No answer, or not found and not (yet) repeated: the money may move still.
        # Past the provider's window nothing may be repeated and nothing guessed.
        if past_window(collection, call, now):
            return _needs_attention(collection, pending, outcome, now), False
        return False, False
    settle_pending(collection, pending, outcome, now)
    return True, True


def _needs_attention(
    collection: PaymentCollection,
    pending: PendingOperation,
    outcome: ProviderOutcome,
    now: datetime,
) -> bool:
    """The operation's outcome cannot be known without a person (promise 9): the
    provider cannot tell, and a repeat is no longer safe. The amount stays reserved,
    `payment.failed` (`needs_attention`, not retryable) says so once, and the
    reconciler keeps asking (the provider may tell later; the audit may find it)."""
    if pending.attention is not None:
        return False
    payment = collection.payment
    assert payment is not None
    pending.attention = (
        f"{pending.operation} {pending.command_id}: the provider cannot tell what became of "
        f"it ({outcome.message or outcome.kind.value}) and its idempotency window has passed"
    )
    fail_pending(
        collection,
        payment,
        pending,
        "needs_attention",
        pending.attention,
        retryable=False,
        now=now,
        discriminator=":attention",
    )
    collection.updated_at = now
    return True


def _apply_void(
    collection: PaymentCollection, call: ProviderCall, outcome: ProviderOutcome, now: datetime
) -> tuple[bool, bool]:
    void = _void_for(collection, call)
    if void is None:
        return False, True
    if call.operation == "authorize":
        # An unconfirmed lost authorization: does it exist?
        if _question_failed(outcome):
            return False, False
        if outcome.kind != OutcomeKind.SUCCEEDED:
            collection.voids.remove(void)  # nothing is held: nothing to void
            return True, True
        void.confirmed = True
        void.captured = void.captured or outcome.captured
        void.data = {**void.data, **outcome.data}
        return True, True  # the release is made in the same pass, or on the next
    if _question_failed(outcome) or outcome.is_not_found:
        return False, False
    if outcome.kind != OutcomeKind.SUCCEEDED:
        # Refused: the hold may have moved on meanwhile (captured: a cancel cannot
        # release it, a refund must), or be gone. Ask again what it is before trying
        # again; it is dropped only once the provider says nothing is held.
        void.confirmed = False
        return True, False
    # Released: booked for good.
    collection.voids.remove(void)
    if outcome.kind == OutcomeKind.SUCCEEDED:
        collection.released_holds.append(
            ReleasedHold(
                reference=void.reference or void.authorization_key,
                provider_id=void.provider_id,
                amount=void.amount,
                how="refund" if void.captured else "cancel",
                released_at=now,
            )
        )
    return True, True
