"""What an authorization's outcome does to a collection, whoever learns it first.

The checkout that made the call, the reconciler that asked about it, and a webhook
that reports it all apply an authorization outcome here: authorized (the session
becomes the payment, the others are canceled), requires more, failed, or still
unknown. An authorization that is not the payment is recorded to be voided: at most
one live authorization per cart.
"""

from __future__ import annotations

from datetime import datetime

from schemas.outbound import PaymentAuthorized, PaymentRequiresAction
from schemas.topics import PAYMENT_AUTHORIZED, PAYMENT_REQUIRES_ACTION
from service.domain import derived_ids as ids
from service.domain.bookings import record_capture
from service.domain.calls import Answers, ProviderCall
from service.domain.capabilities import LENIENT
from service.domain.cart import apply_deferred_cart
from service.domain.events import new_event
from service.domain.failures import fail
from service.domain.model import (
    OBJECT_RANK,
    CheckoutAttempt,
    LostAuthorization,
    Payment,
    PaymentCollection,
    PaymentSession,
)
from service.domain.outcomes import OutcomeKind, ProviderOutcome
from service.domain.statuses import (
    CollectionStatus,
    SessionStatus,
    collection_transition,
    session_transition,
)

SYSTEM_PROVIDER = "system"


def authorization_call(collection: PaymentCollection, session: PaymentSession) -> ProviderCall:
    """The session's last authorization call, as the provider saw it (for status queries)."""
    key = session.authorization_key or ""
    attempt = collection.attempt_for(key)
    return ProviderCall(
        operation="authorize",
        provider_id=session.provider_id,
        idempotency_key=(attempt.provider_key if attempt and attempt.provider_key else key),
        session_id=session.id,
        amount=attempt.amount if attempt is not None else session.amount,
        currency_code=session.currency_code,
        cart_id=collection.cart_id,
        data=session.data,
        ref=f"session:{session.id}",
    )


def unknown_authorization_queries(
    collection: PaymentCollection, now: datetime
) -> list[ProviderCall]:
    """Status queries for every authorization whose outcome is unknown, except
    those a handler is still making (lease not expired)."""
    return [
        authorization_call(collection, s)
        for s in collection.sessions
        if s.needs_reconcile
        and s.authorization_key is not None
        and (s.lease_until is None or s.lease_until <= now)
    ]


def record_lost_authorization(
    collection: PaymentCollection,
    call: ProviderCall,
    outcome: ProviderOutcome,
    now: datetime,
) -> bool:
    """Remember an authorization that is not the payment, to be voided.

    `outcome` is what the provider answered to `call` (an authorize): succeeded
    (it holds money) or unknown (it may). Returns whether anything was recorded.
    """
    if outcome.kind not in (OutcomeKind.SUCCEEDED, OutcomeKind.UNKNOWN):
        return False
    reference = outcome.reference or _object_of(call)
    if reference is not None and reference == _payment_object(collection):
        return False  # the payment's own object (Stripe: every attempt shares one intent)
    if is_payment_authorization(collection, call.idempotency_key) or any(
        s.needs_reconcile
        and authorization_call(collection, s).idempotency_key == call.idempotency_key
        for s in collection.sessions
    ):
        return False  # the payment, or a session's unknown outcome the reconciler settles
    if any(
        v.authorization_key == call.idempotency_key
        or (reference is not None and v.reference == reference)
        for v in collection.voids
    ):
        return False
    collection.voids.append(
        LostAuthorization(
            provider_id=call.provider_id,
            session_id=call.session_id,
            authorization_key=call.idempotency_key,
            amount=outcome.amount if outcome.amount is not None else call.amount,
            currency_code=call.currency_code,
            data={**call.data, **outcome.data},
            confirmed=outcome.kind == OutcomeKind.SUCCEEDED,
            reference=reference,
            captured=outcome.captured,
            found_at=now,
        )
    )
    collection.updated_at = now
    return True


def _object_of(call: ProviderCall) -> str | None:
    """The provider object a call was about, if it named one before the call (Stripe:
    the session's PaymentIntent, which every authorization attempt shares)."""
    value = call.data.get("id")
    return value if isinstance(value, str) and value else None


def _payment_object(collection: PaymentCollection) -> str | None:
    payment = collection.payment
    if payment is None:
        return None
    if payment.reference:
        return payment.reference
    session = collection.session_by_id(payment.session_id)
    return session.reference if session is not None else None


def is_payment_authorization(collection: PaymentCollection, provider_key: str) -> bool:
    """Whether the authorization made under `provider_key` is the collection's payment."""
    payment = collection.payment
    if payment is None:
        return False
    session = collection.session_by_id(payment.session_id)
    if session is None or session.authorization_key is None:
        return False
    return authorization_call(collection, session).idempotency_key == provider_key


def authorize_session(
    collection: PaymentCollection,
    session: PaymentSession,
    outcome: ProviderOutcome,
    causation_id: str,
    now: datetime,
) -> None:
    session.status = session_transition(session.status, SessionStatus.AUTHORIZED)
    session.data = {**session.data, **outcome.data}
    session.needs_reconcile = False
    session.last_error = None
    session.updated_at = now
    _cancel_other_sessions(collection, session, now)
    collection.status = collection_transition(collection.status, CollectionStatus.AUTHORIZED)
    collection.selected_provider_id = session.provider_id
    collection.deferred_cart = None  # authorized: the collection no longer follows its cart
    payment = _new_payment(collection, session, outcome, causation_id, now)
    collection.payment = payment
    if outcome.captured and payment.amount > 0:
        # The provider captured on authorization (configured `capture: true`).
        record_capture(
            collection,
            payment,
            command_id=f"auto:{causation_id}",
            amount=payment.amount,
            source="auto",
            causation_id=causation_id,
            now=now,
        )
    collection.updated_at = now


def _new_payment(
    collection: PaymentCollection,
    session: PaymentSession,
    outcome: ProviderOutcome,
    causation_id: str,
    now: datetime,
) -> Payment:
    """The session's authorization as the payment, announced by `payment.authorized`.

    What was authorized is frozen: the session's currency as the attempt asked the
    provider (cart.updated cannot change it while the call is in flight), the amount
    as the provider answered, the provider's object, and what that provider allows.
    """
    payment_id = ids.payment_id(session.id)
    amount = _held_amount(session, outcome)
    answered = outcome.data.get("currency_code")
    currency = answered.lower() if isinstance(answered, str) and answered else session.currency_code
    event = new_event(
        collection,
        PaymentAuthorized.model_validate(
            {
                "cart_id": collection.cart_id,
                "collection_id": collection.id,
                "provider_id": session.provider_id,
                "currency_code": currency,
                "payment_id": payment_id,
                "session_id": session.id,
                "amount": amount,
                "authorized_at": now,
            }
        ),
        PAYMENT_AUTHORIZED,
        causation_id,
        now,
    )
    return Payment(
        id=payment_id,
        session_id=session.id,
        provider_id=session.provider_id,
        amount=amount,
        currency_code=currency,
        data=dict(outcome.data),
        authorized_at=now,
        authorized_event_id=event.id,
        authorized_event=event,
        reference=outcome.reference or session.reference,
        capabilities=session.capabilities or LENIENT,
    )


def _cancel_other_sessions(
    collection: PaymentCollection, session: PaymentSession, now: datetime
) -> None:
    """One session becomes the payment: the others are canceled."""
    for other in collection.sessions:
        if other.id != session.id and other.status != SessionStatus.CANCELED:
            other.status = session_transition(other.status, SessionStatus.CANCELED)
            other.updated_at = now


def _held_amount(session: PaymentSession, outcome: ProviderOutcome) -> int:
    """What the provider holds, which is what it answered, not what the session
    asked for (the cart may have changed while the answer was unknown)."""
    if session.provider_id == SYSTEM_PROVIDER:
        return 0
    return outcome.amount if outcome.amount is not None else session.amount


def outcome_rank(outcome: ProviderOutcome) -> int:
    """Where an authorization outcome puts its provider object (`OBJECT_RANK`)."""
    if outcome.kind == OutcomeKind.SUCCEEDED:
        return OBJECT_RANK["captured" if outcome.captured else "authorized"]
    if outcome.kind == OutcomeKind.CANCELED:
        return OBJECT_RANK["canceled"]
    return OBJECT_RANK["open"]


def finish_authorization(
    collection: PaymentCollection,
    session_id: str,
    outcome: ProviderOutcome,
    causation_id: str,
    now: datetime,
) -> PaymentCollection:
    """Apply an authorization outcome to the session and the collection.

    Used by the checkout (with the checkout's event id as cause) and by the
    reconciler and webhooks (settling an outcome that was unknown). An outcome
    for a collection that is already authorized changes nothing.
    """
    session = collection.session_by_id(session_id)
    if session is None:
        return collection
    if collection.payment is not None:
        _settle_beside_payment(collection, session, outcome, now)
        return collection
    attempt = next(
        (
            a
            for a in collection.checkout_attempts
            if a.session_id == session_id and a.idempotency_key == session.authorization_key
        ),
        None,
    )
    kind = outcome.kind
    session.updated_at = now
    collection.updated_at = now
    session.object_rank = max(session.object_rank, outcome_rank(outcome))
    if kind == OutcomeKind.SUCCEEDED:
        authorize_session(collection, session, outcome, causation_id, now)
        if attempt is not None:
            attempt.outcome = "authorized"
        return collection
    if kind in (OutcomeKind.UNKNOWN, OutcomeKind.PENDING):
        # Not a failure: the provider may have authorized. The reconciler (or a
        # webhook) settles it by asking the provider with the same key.
        session.needs_reconcile = True
        session.data = {**session.data, **outcome.data}
        if attempt is not None:
            attempt.outcome = "unknown" if kind == OutcomeKind.UNKNOWN else "pending"
        return collection
    session.needs_reconcile = False
    if kind == OutcomeKind.REQUIRES_MORE:
        _requires_more(collection, session, attempt, outcome, causation_id, now)
    else:
        _authorization_failed(collection, session, attempt, outcome, causation_id, now)
    apply_deferred_cart(collection, now)
    return collection


def _settle_beside_payment(
    collection: PaymentCollection, session: PaymentSession, outcome: ProviderOutcome, now: datetime
) -> None:
    """An outcome settled after another authorization became the payment: if this
    one holds money too, it must be voided, never left on the card."""
    if not session.needs_reconcile or outcome.kind in (OutcomeKind.UNKNOWN, OutcomeKind.PENDING):
        return
    session.needs_reconcile = False
    session.updated_at = now
    if outcome.kind == OutcomeKind.SUCCEEDED:
        record_lost_authorization(collection, authorization_call(collection, session), outcome, now)
    collection.updated_at = now


def _requires_more(
    collection: PaymentCollection,
    session: PaymentSession,
    attempt: CheckoutAttempt | None,
    outcome: ProviderOutcome,
    causation_id: str,
    now: datetime,
) -> None:
    """3-D Secure or similar: the customer must act; `payment.requires_action`."""
    session.status = session_transition(session.status, SessionStatus.REQUIRES_MORE)
    session.data = {**session.data, **outcome.data}
    if attempt is not None:
        attempt.outcome = "requires_more"
    new_event(
        collection,
        PaymentRequiresAction.model_validate(
            {
                "cart_id": collection.cart_id,
                "collection_id": collection.id,
                "provider_id": session.provider_id,
                "currency_code": collection.currency_code,
                "session_id": session.id,
                "amount": session.amount,
                "action": outcome.action or {},
            }
        ),
        PAYMENT_REQUIRES_ACTION,
        causation_id,
        now,
    )


_FAILURES: dict[OutcomeKind, tuple[str, bool]] = {
    OutcomeKind.DECLINED: ("declined", False),
    OutcomeKind.INVALID_DATA: ("invalid_payment_data", False),
    OutcomeKind.FAILED: ("provider_error", False),
    OutcomeKind.CANCELED: ("provider_error", False),
    OutcomeKind.TRANSIENT: ("provider_unavailable", True),
}
"""`payment.failed` reason and retryability of each failed authorization outcome."""


def _authorization_failed(
    collection: PaymentCollection,
    session: PaymentSession,
    attempt: CheckoutAttempt | None,
    outcome: ProviderOutcome,
    causation_id: str,
    now: datetime,
) -> None:
    """The authorization failed: the session errs, the collection fails unless it may
    be retried, and `payment.failed` tells why."""
    reason, retryable = _FAILURES[outcome.kind]
    session.status = session_transition(session.status, SessionStatus.ERROR)
    session.last_error = f"{reason}: {outcome.message}"
    if attempt is not None:
        attempt.outcome = reason
    if outcome.kind != OutcomeKind.TRANSIENT:
        collection.status = collection_transition(collection.status, CollectionStatus.FAILED)
    fail(
        collection,
        operation="authorize",
        reason=reason,
        message=outcome.message or reason,
        retryable=retryable,
        causation_id=causation_id,
        now=now,
        provider_id=session.provider_id,
        amount=session.amount,
        session_id=session.id,
    )


def record_lost_authorizations(
    collection: PaymentCollection, answers: Answers, now: datetime
) -> list[ProviderCall]:
    """Every authorization a handler obtained that is not the payment nor a session's
    pending outcome (another writer won, the attempt was replaced) is recorded to be
    voided: at most one live authorization per cart. Returns the ones recorded now."""
    return [
        call
        for call, outcome in answers.of("authorize")
        if record_lost_authorization(collection, call, outcome, now)
    ]
