"""Provider facts: what a provider says its objects are, applied to the books.

A fact comes as a webhook, or as an object the audit sweep read (`read_objects`). The
rule for every fact, whatever it is about and whenever it comes (contract promise 9):

- **Provider objects are identities.** A fact names its object (the authorization's
  PaymentIntent or hold, a refund's id, a dispute's id) and is matched by that id
  only, never by amount or recency. A session is found by its id or by its object,
  never by its provider alone.
- **Applied, kept, or proven irrelevant.** A fact that cannot be applied yet (what it
  is about is not booked yet, or an operation of ours on it is in flight, whose own
  answer decides) is *parked* on the aggregate and tried again whenever the
  aggregate changes (:func:`retry_parked`). Nothing is consumed and dropped.
- **Statuses only move forward.** A refund goes pending → succeeded → failed (a
  succeeded refund can still fail at Stripe; failed and canceled are final); a
  dispute opens and is decided once; captures are cumulative per authorization.
  A late or repeated fact of a lower rank changes nothing. A replay of a signed
  event under another envelope id is recognised by the provider's own event id
  (:data:`PROVIDER_EVENT_WINDOW`) and, past that window, by the objects' state.
- **At most one live hold per cart.** A hold that becomes live on an object that is
  not the payment's (another session finished 3-D Secure late, a session deleted
  since) is recorded to be released at the provider, whenever it appears.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from schemas.topics import PAYMENT_PROVIDER_WEBHOOK
from service.domain import derived_ids as ids
from service.domain.authorization import finish_authorization
from service.domain.bookings import record_cancel, record_capture, record_refund
from service.domain.calls import ProviderCall
from service.domain.disputes import apply_dispute
from service.domain.failures import fail
from service.domain.model import (
    OBJECT_RANK,
    REFUND_RANK,
    HistoryEntry,
    LostAuthorization,
    Notification,
    ParkedFact,
    Payment,
    PaymentCollection,
    PaymentSession,
    PendingOperation,
    Refund,
    RefundStatus,
)
from service.domain.outcomes import ProviderOutcome
from service.domain.payment_operations import payment_call, refuse_pending, settle_pending
from service.domain.results import Decision
from service.domain.statuses import CollectionStatus, SessionStatus, collection_transition

Applied = Literal["applied", "parked", "irrelevant"]

AUTHORIZATION_MEANINGS = frozenset(
    {"authorized", "captured", "failed", "requires_more", "canceled"}
)
REFUND_MEANINGS = frozenset({"refund_pending", "refund_succeeded", "refund_failed"})

PROVIDER_COMMAND_PREFIX = "provider:"
"""`command_id` of what the provider did on its own: ``provider:<its object id>``."""

PROVIDER_EVENT_WINDOW = 50
"""How many of the provider's event ids a collection remembers (recognising a
signed event replayed under a new envelope id); older replays are recognised by
the objects' state, which a repeated fact does not change."""

MAX_PARKED = 100
"""Parked facts kept per collection, each distinct (one per object, meaning and status):
bounded by the provider objects of one cart and the words each can have."""


# -- entry: a webhook ---------------------------------------------------------------------


def decide_notification(
    collection: PaymentCollection | None,
    event_id: str,
    notification: Notification,
    now: datetime,
) -> Decision:
    """A provider webhook for a cart (the unit of work's `decide`)."""
    if collection is None:
        return Decision("ignored", note="no collection for the webhook's cart")
    if collection.has_processed(event_id):
        return Decision("duplicate", collection)
    seen = notification.event_id is not None and notification.event_id in collection.provider_events
    applied: Applied = "irrelevant" if seen else take_fact(collection, notification, event_id, now)
    _remember(collection, event_id, notification.event_id, now)
    note = "provider event seen before" if seen else "" if applied != "irrelevant" else "stale"
    return Decision("settled", collection, note=note, changed=applied != "irrelevant")


def take_fact(
    collection: PaymentCollection, fact: Notification, cause: str, now: datetime
) -> Applied:
    """Apply a fact, or park it; then try what was parked before (it may now apply)."""
    applied = apply_fact(collection, fact, cause, now)
    if applied == "parked":
        _park(collection, fact, cause, now)
    elif applied == "applied":
        retry_parked(collection, now)
    return applied


def audit_facts(
    collection: PaymentCollection, facts: list[Notification], now: datetime
) -> Decision:
    """What the provider's objects are now, read by the audit sweep: each difference
    from the books is applied as a fact. A fact that cannot apply yet is not kept: the
    next pass reads it again. `corrections` names the kind of each one applied."""
    corrections: list[str] = []
    for fact in facts:
        cause = f"audit:{fact.meaning}:{_object_key(fact)[1]}:{fact.amount}"
        if apply_fact(collection, fact, cause, now) == "applied":
            corrections.append(fact.meaning)
    if not corrections:
        return Decision("ignored", collection)
    retry_parked(collection, now)
    return Decision("settled", collection, note=",".join(corrections), corrections=corrections)


def audit_reads(collection: PaymentCollection) -> list[ProviderCall]:
    """What the audit reads at the providers for a collection: the payment's objects,
    and those of every other session whose authorization was asked for and whose
    object is not released yet. A customer may finish such an authorization late (a
    3-D Secure challenge) and its webhooks be lost: only a read finds that money (a
    second hold to release, or the cart's payment after all). A session whose
    authorization is in flight or unknown is the reconciler's (status first, within its
    owner's lease): the audit does not race it."""
    payment = collection.payment
    reads = [payment_call(collection, payment)] if payment is not None else []
    released = {r.reference for r in collection.released_holds}
    for session in collection.sessions:
        reference = session.reference
        if (
            session.authorization_key is None
            or session.needs_reconcile
            or reference is None
            or reference in released
            or (payment is not None and session.id == payment.session_id)
        ):
            continue
        reads.append(
            ProviderCall(
                operation="retrieve",
                provider_id=session.provider_id,
                idempotency_key=f"{session.id}:read",
                session_id=session.id,
                amount=session.amount,
                currency_code=session.currency_code,
                cart_id=collection.cart_id,
                data=session.data,
                ref=f"session:{session.id}",
            )
        )
    return reads


def retry_parked(collection: PaymentCollection, now: datetime) -> bool:
    """Apply whatever parked facts can be now (in the order they came); True if any
    was. Called whenever the aggregate changes."""
    progress = False
    while collection.parked:
        remaining = []
        for parked in collection.parked:
            if apply_fact(collection, parked.notification, parked.cause, now) == "parked":
                remaining.append(parked)
        done = len(remaining) < len(collection.parked)
        collection.parked = remaining
        if not done:
            break
        progress = True
    if progress:
        collection.updated_at = now
    return progress


def _park(collection: PaymentCollection, fact: Notification, cause: str, now: datetime) -> None:
    """Keep a fact for later, in arrival order; the same word about the same object is
    kept once (facts come out of order: an older status may arrive after a newer one,
    so each is kept and the forward-only rules sort them out when they apply)."""
    key = _fact_key(fact)
    if any(_fact_key(p.notification) == key for p in collection.parked):
        return
    collection.parked = [
        *collection.parked,
        ParkedFact(notification=fact, cause=cause, parked_at=now),
    ][-MAX_PARKED:]
    collection.updated_at = now


def _fact_key(fact: Notification) -> tuple[str, str, str, str]:
    """One object, one word about it: what a repeat of the same fact shares."""
    kind, obj = _object_key(fact)
    status = str(fact.data.get("status") or fact.data.get("refund_status") or "")
    return kind, obj, fact.meaning, f"{status}:{fact.amount}"


def _object_key(fact: Notification) -> tuple[str, str]:
    """Which provider object a fact is about (a newer fact about it supersedes)."""
    if fact.meaning in REFUND_MEANINGS:
        return "refund", str(fact.data.get("refund_id"))
    if fact.meaning == "disputed":
        return "dispute", str(fact.data.get("dispute_id"))
    return "authorization", str(fact.reference or fact.session_id)


def _remember(
    collection: PaymentCollection, event_id: str, provider_event: str | None, now: datetime
) -> None:
    collection.remember(event_id, PAYMENT_PROVIDER_WEBHOOK, now)
    if provider_event is not None and provider_event not in collection.provider_events:
        collection.provider_events = [*collection.provider_events, provider_event][
            -PROVIDER_EVENT_WINDOW:
        ]
    collection.updated_at = now


# -- the one rule ---------------------------------------------------------------------------


def apply_fact(
    collection: PaymentCollection, fact: Notification, cause: str, now: datetime
) -> Applied:
    """Apply one fact in place: `applied`, `parked` (try again later) or `irrelevant`."""
    payment = collection.payment
    if fact.meaning in AUTHORIZATION_MEANINGS:
        return _authorization_fact(collection, fact, cause, now)
    if payment is None:
        return "parked"  # a refund or dispute of an authorization not booked yet
    if not _is_payment_object(collection, payment, fact):
        return "irrelevant"
    if fact.meaning in REFUND_MEANINGS:
        return _refund_fact(collection, payment, fact, cause, now)
    if fact.meaning == "disputed":
        if payment.captured_total == 0:
            return "parked"  # a dispute is of a charge: its capture is not booked yet
        changed = apply_dispute(
            collection, event_id=cause, amount=fact.amount, data=fact.data, now=now
        )
        return "applied" if changed else "irrelevant"
    return "irrelevant"


def _session_of(collection: PaymentCollection, fact: Notification) -> PaymentSession | None:
    """The session a fact is about: by its id, or by its provider object."""
    if fact.session_id:
        found = collection.session_by_id(fact.session_id)
        if found is not None:
            return found
    if fact.reference:
        return next((s for s in collection.sessions if s.reference == fact.reference), None)
    return None


def _is_payment_object(collection: PaymentCollection, payment: Payment, fact: Notification) -> bool:
    reference = payment_reference(collection, payment)
    if fact.reference and reference:
        return fact.reference == reference
    session = _session_of(collection, fact)
    return session is not None and session.id == payment.session_id


def payment_reference(collection: PaymentCollection, payment: Payment) -> str | None:
    """The provider's object of the payment: as answered, else its session's."""
    if payment.reference:
        return payment.reference
    session = collection.session_by_id(payment.session_id)
    return session.reference if session is not None else None


# -- authorizations -------------------------------------------------------------------------


def _authorization_fact(
    collection: PaymentCollection, fact: Notification, cause: str, now: datetime
) -> Applied:
    payment = collection.payment
    session = _session_of(collection, fact)
    if payment is not None and _is_payment_object(collection, payment, fact):
        return _payment_authorization_fact(collection, payment, fact, cause, now)
    if payment is None and session is not None:
        return _session_fact(collection, session, fact, cause, now)
    if fact.meaning in ("authorized", "captured"):
        return _live_hold_elsewhere(collection, fact, session, now)
    return "irrelevant"


_FACT_RANK = {
    "requires_more": OBJECT_RANK["open"],
    "failed": OBJECT_RANK["open"],
    "authorized": OBJECT_RANK["authorized"],
    "captured": OBJECT_RANK["captured"],
    "canceled": OBJECT_RANK["canceled"],
}


def _session_fact(
    collection: PaymentCollection,
    session: PaymentSession,
    fact: Notification,
    cause: str,
    now: datetime,
) -> Applied:
    """A fact about the object of a session that is not (yet) the payment."""
    rank = _FACT_RANK[fact.meaning]
    if rank < session.object_rank:
        return "irrelevant"  # an older state of an object that has moved on
    if fact.meaning == "canceled":
        if session.needs_reconcile:
            return "parked"  # its authorization is being settled: the cancel follows it
        session.object_rank = rank
        return "irrelevant"  # nothing is held on it
    outcome = _authorization_outcome(fact, session)
    if outcome is None:
        return "irrelevant"
    finish_authorization(collection, session.id, outcome, cause, now)
    if fact.meaning == "captured" and collection.payment is not None:
        # Booked as held first (what the provider authorized), then the capture, as
        # the provider did them: a partial capture of a larger hold is not the hold.
        _captured(collection, collection.payment, fact, cause, now)
    return "applied"


def _authorization_outcome(fact: Notification, session: PaymentSession) -> ProviderOutcome | None:
    """What a fact says about a session's authorization (None: nothing it may change)."""
    if fact.meaning == "authorized":
        # The amount the provider reports holding, not the session's (the
        # cart may have changed since the authorization was asked for).
        return ProviderOutcome.succeeded(fact.data, amount=fact.amount, reference=fact.reference)
    if fact.meaning == "captured":
        if fact.amount is None:  # captured, how much unsaid: all that was held
            return ProviderOutcome.succeeded(fact.data, captured=True, reference=fact.reference)
        # What was held is the object's amount; `fact.amount` is what was captured of it.
        held = fact.data.get("amount")
        return ProviderOutcome.succeeded(
            fact.data,
            amount=held if isinstance(held, int) else fact.amount,
            reference=fact.reference,
        )
    if fact.meaning == "requires_more" and session.status == SessionStatus.PENDING:
        return ProviderOutcome.requires_more(fact.action or {}, fact.data)
    if fact.meaning == "failed" and session.status in (
        SessionStatus.PENDING,
        SessionStatus.REQUIRES_MORE,
    ):
        return ProviderOutcome.declined(fact.message or "payment failed")
    return None


def _live_hold_elsewhere(
    collection: PaymentCollection,
    fact: Notification,
    session: PaymentSession | None,
    now: datetime,
) -> Applied:
    """A hold live on an object that is not the payment's: released at the provider,
    whenever it appears (at most one live hold per cart)."""
    reference = fact.reference or (session.reference if session else None)
    if reference is None:
        return "irrelevant"  # nothing to name: the fact cannot be told from the payment's
    if any(r.reference == reference for r in collection.released_holds):
        return "irrelevant"
    known = next((v for v in collection.voids if v.reference == reference), None)
    if known is not None:
        if fact.meaning == "captured" and not known.captured:
            known.captured = True  # charged meanwhile: released by a refund, not a cancel
            known.confirmed = True
            collection.updated_at = now
            return "applied"
        return "irrelevant"
    if session is not None and session.needs_reconcile:
        return "parked"  # its own authorization is being settled: that decides first
    collection.voids.append(
        LostAuthorization(
            provider_id=fact.provider_id,
            session_id=session.id if session else fact.session_id or "",
            authorization_key=f"{PROVIDER_COMMAND_PREFIX}{reference}",
            amount=fact.amount or 0,
            currency_code=session.currency_code if session else collection.currency_code,
            data={**fact.data, "id": reference},
            reference=reference,
            captured=fact.meaning == "captured",
            found_at=now,
        )
    )
    collection.updated_at = now
    return "applied"


def _payment_authorization_fact(
    collection: PaymentCollection, payment: Payment, fact: Notification, cause: str, now: datetime
) -> Applied:
    if fact.meaning == "captured":
        return _captured(collection, payment, fact, cause, now)
    if fact.meaning == "canceled":
        return _canceled(collection, payment, cause, now)
    return "irrelevant"  # authorized, requires more or failed: the payment is past that


def _captured(
    collection: PaymentCollection, payment: Payment, fact: Notification, cause: str, now: datetime
) -> Applied:
    """The provider reports `fact.amount` captured in all (cumulative)."""
    total = fact.amount
    if total is None:
        return "irrelevant"
    ours = [p for p in payment.pending if p.operation == "capture"]
    if len(ours) == 1 and payment.captured_total + ours[0].amount == total:
        # Our one capture in flight is what the provider reports: the fact answers it.
        # (With several in flight, an amount cannot tell which: their answers decide.)
        settle_pending(collection, ours[0], ProviderOutcome.succeeded(), now)
        return "applied"
    if ours and total > 0 and fact.capturable == 0 and not payment.capabilities.multicapture:
        # Without multicapture the first capture is final and the total never moves
        # after it: a final total that none of ours explains was another capture (the
        # dashboard's), and ours were refused. Waiting for their answers could be for
        # ever (past the provider's key window nobody can tell).
        for pending in ours:
            refuse_pending(
                collection,
                pending,
                "amount_exceeds_authorized",
                f"the provider captured {total} in another, final capture: nothing was "
                "left to capture",
                now,
            )
        ours = []
    if total <= payment.captured_total:
        if total == payment.captured_total and fact.capturable == 0 and not ours:
            return _rest_released(collection, payment, cause, now)
        return "irrelevant"  # booked already (or an older state)
    if ours:
        return "parked"  # a capture of ours is in flight: its own answer decides first
    if payment.is_canceled:
        return "irrelevant"
    extra = min(total, payment.amount - payment.released_amount) - payment.captured_total
    if extra <= 0:
        return "irrelevant"
    released = fact.capturable == 0 or payment.capabilities.partial_capture_releases_rest
    record_capture(
        collection,
        payment,
        command_id=cause,
        amount=extra,
        source="webhook",
        causation_id=cause,
        now=now,
        releases_rest=released and total < payment.amount - payment.released_amount,
    )
    return "applied"


def _rest_released(
    collection: PaymentCollection, payment: Payment, cause: str, now: datetime
) -> Applied:
    """The provider released what was left to capture (a final partial capture at a
    provider that allows one): nothing is left to capture or cancel."""
    rest = payment.amount - payment.captured_total - payment.released_amount
    if rest <= 0 or payment.captured_total == 0 or payment.is_canceled:
        return "irrelevant"
    payment.released_amount += rest
    if collection.status != CollectionStatus.COMPLETED:
        collection.status = collection_transition(collection.status, CollectionStatus.COMPLETED)
    payment.log(
        HistoryEntry(
            at=now,
            action="release",
            command_id=cause,
            amount=rest,
            outcome="the rest of the authorization was released at the provider",
        )
    )
    collection.updated_at = now
    return "applied"


def _canceled(
    collection: PaymentCollection, payment: Payment, cause: str, now: datetime
) -> Applied:
    """The authorization was canceled at the provider (expiry, dashboard, our cancel)."""
    cancel = next((p for p in payment.pending if p.operation == "cancel"), None)
    if cancel is not None:
        settle_pending(collection, cancel, ProviderOutcome.succeeded(), now)
        return "applied"
    if any(p.operation == "capture" for p in payment.pending):
        return "parked"  # a capture of ours is in flight: it decides (it cannot both be)
    if payment.is_canceled:
        return "irrelevant"
    if payment.captured_total > 0:
        # Canceled after partial captures (multicapture): what was captured stays, the
        # rest of the authorization is released.
        return _rest_released(collection, payment, cause, now)
    if collection.status not in (
        CollectionStatus.AUTHORIZED,
        CollectionStatus.PARTIALLY_AUTHORIZED,
    ):
        return "irrelevant"
    record_cancel(collection, payment, causation_id=cause, now=now)
    payment.log(
        HistoryEntry(
            at=now,
            action="cancel",
            command_id=cause,
            outcome="canceled at the provider (authorization expired or canceled there)",
        )
    )
    return "applied"


# -- refunds --------------------------------------------------------------------------------

_REFUND_STATUS: dict[str, RefundStatus] = {
    "refund_pending": "pending",
    "refund_succeeded": "succeeded",
    "refund_failed": "failed",
}


def _refund_status(fact: Notification) -> RefundStatus:
    if fact.meaning == "refund_failed" and fact.data.get("refund_status") == "canceled":
        return "canceled"
    return _REFUND_STATUS[fact.meaning]


def _refund_fact(
    collection: PaymentCollection, payment: Payment, fact: Notification, cause: str, now: datetime
) -> Applied:
    reference = fact.data.get("refund_id")
    if not isinstance(reference, str) or not reference:
        return "irrelevant"
    status = _refund_status(fact)
    known = payment.refund_object(reference) or _ours_by_key(collection, payment, fact, reference)
    if known is not None:
        return _refund_moves(
            collection, payment, known, status, _refund_failure(reference, fact), cause, now
        )
    pending = _our_pending_refund(payment, fact, reference)
    if pending is not None:
        return _our_refund_settles(collection, pending, reference, status, fact, now)
    return _refund_elsewhere(collection, payment, fact, reference, status, cause, now)


def _ours_by_key(
    collection: PaymentCollection, payment: Payment, fact: Notification, reference: str
) -> Refund | None:
    """A refund of ours booked before the provider's id was known to us: named by our
    key in the refund's metadata; it takes the id now."""
    key = fact.data.get("provider_key")
    if not isinstance(key, str) or not key:
        return None
    for refund in payment.refunds:
        if (
            refund.reference is None
            and ids.provider_key(collection.id, "refund", refund.command_id) == key
        ):
            refund.reference = reference
            return refund
    return None


def _our_pending_refund(
    payment: Payment, fact: Notification, reference: str
) -> PendingOperation | None:
    """Our refund still reserved that the fact is about: by the refund's id once the
    provider named it, else by our key in the refund's metadata."""
    key = fact.data.get("provider_key")
    for pending in payment.pending:
        if pending.operation != "refund":
            continue
        if pending.reference == reference or (isinstance(key, str) and pending.provider_key == key):
            return pending
    return None


def _refund_moves(
    collection: PaymentCollection,
    payment: Payment,
    refund: Refund,
    status: RefundStatus,
    failure: str,
    cause: str,
    now: datetime,
) -> Applied:
    """A known refund object's status moves forward only."""
    if REFUND_RANK[status] <= REFUND_RANK[refund.status]:
        return "irrelevant"
    if status == "succeeded":
        if refund.amount > payment.unrefunded:
            return "parked"  # its capture is not booked yet
        record_refund(
            collection,
            payment,
            command_id=refund.command_id,
            amount=refund.amount,
            reason=refund.reason,
            causation_id=cause,
            now=now,
            reference=refund.reference,
        )
        return "applied"
    was_money = refund.status == "succeeded"
    refund.status = status
    if was_money:
        _refund_reversed(collection, payment, refund, failure, cause, now)
    collection.updated_at = now
    return "applied"


def _our_refund_settles(
    collection: PaymentCollection,
    pending: PendingOperation,
    reference: str,
    status: RefundStatus,
    fact: Notification,
    now: datetime,
) -> Applied:
    """A refund of ours still reserved: the fact is its answer."""
    if status == "pending":
        if pending.reference == reference:
            return "irrelevant"
        pending.reference = reference
        collection.updated_at = now
        return "applied"
    if status == "succeeded":
        outcome = ProviderOutcome.succeeded(reference=reference, amount=pending.amount)
    else:
        outcome = ProviderOutcome.failed(_refund_failure(reference, fact), code="refund_failed")
    settle_pending(collection, pending, outcome, now)
    if status != "succeeded":
        _keep_refund_object(collection, pending.command_id, pending.amount, reference, status, now)
    return "applied"


def _refund_elsewhere(
    collection: PaymentCollection,
    payment: Payment,
    fact: Notification,
    reference: str,
    status: RefundStatus,
    cause: str,
    now: datetime,
) -> Applied:
    """A refund made outside the service (the dashboard): booked when it is money back
    and fits what is captured and not refunded; kept as an object whatever its status,
    so every later fact about it is recognised."""
    amount = fact.amount
    if amount is None or amount <= 0:
        return "irrelevant"
    command_id = PROVIDER_COMMAND_PREFIX + reference
    if status != "succeeded":
        _keep_refund_object(collection, command_id, amount, reference, status, now)
        return "applied"
    if amount > payment.unrefunded:
        return "parked"  # more than is captured and not refunded: its capture is not booked yet
    reason = fact.data.get("reason")
    record_refund(
        collection,
        payment,
        command_id=command_id,
        amount=amount,
        reason=reason[:255] if isinstance(reason, str) and reason else None,
        causation_id=cause,
        now=now,
        reference=reference,
    )
    payment.log(
        HistoryEntry(
            at=now,
            action="refund",
            command_id=command_id,
            amount=amount,
            outcome="refunded at the provider",
        )
    )
    return "applied"


def _keep_refund_object(
    collection: PaymentCollection,
    command_id: str,
    amount: int,
    reference: str,
    status: RefundStatus,
    now: datetime,
) -> None:
    """A refund object that is not money back (pending, failed, canceled), kept by id."""
    payment = collection.payment
    assert payment is not None
    if payment.refund_object(reference) is not None:
        return
    payment.refunds.append(
        Refund(
            id=ids.refund_id(payment.id, command_id),
            amount=amount,
            command_id=command_id,
            reference=reference,
            status=status,
            created_at=now,
        )
    )
    collection.updated_at = now


def _refund_failure(reference: str, fact: Notification) -> str:
    message = f"refund {reference} failed at the provider"
    reason = fact.data.get("failure_reason")
    if isinstance(reason, str) and reason:
        message += f": {reason}"
    return message


def _refund_reversed(
    collection: PaymentCollection,
    payment: Payment,
    refund: Refund,
    message: str,
    cause: str,
    now: datetime,
) -> None:
    """A refund booked as money back failed at the provider: the money is back with the
    merchant, so the books follow; `payment.failed` says so."""
    payment.log(
        HistoryEntry(
            at=now,
            action="refund_failed",
            command_id=refund.command_id,
            amount=refund.amount,
            outcome=f"refund {refund.id} reversed: {message}",
        )
    )
    fail(
        collection,
        operation="refund",
        reason="provider_error",
        message=message,
        retryable=False,
        causation_id=cause,
        now=now,
        provider_id=payment.provider_id,
        amount=refund.amount,
        payment_id=payment.id,
        session_id=payment.session_id,
    )
