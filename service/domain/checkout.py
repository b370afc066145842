"""`checkout.completed`: authorize the chosen session, Medusa's cart completion.

The checkout's idempotency key is the recovery point: the same key resumes the
same attempt (the provider sees the same key, so it charges at most once), and
after `requires_more` the same key is valid again for the second try.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from schemas.outbound import PaymentAuthorized, PaymentRequiresAction
from schemas.topics import CHECKOUT_COMPLETED, PAYMENT_AUTHORIZED, PAYMENT_REQUIRES_ACTION
from service.domain import ids
from service.domain.bookings import record_capture
from service.domain.calls import ProviderCall
from service.domain.cart import initiate_call, new_collection, new_session
from service.domain.commands import CompleteCheckout
from service.domain.events import new_event
from service.domain.failures import fail
from service.domain.model import (
    CheckoutAttempt,
    LostAuthorization,
    Payment,
    PaymentCollection,
    PaymentSession,
    ProcessedEvent,
)
from service.domain.outcomes import OutcomeKind, ProviderOutcome
from service.domain.results import Decision
from service.domain.statuses import (
    CollectionStatus,
    SessionStatus,
    collection_transition,
    session_transition,
)

SYSTEM_PROVIDER = "system"


def _processed(collection: PaymentCollection, cmd: CompleteCheckout) -> None:
    collection.processed.append(
        ProcessedEvent(
            id=cmd.event_id,
            type=CHECKOUT_COMPLETED,
            at=cmd.now,
            fingerprint=f"{cmd.idempotency_key}|{cmd.amount}|{cmd.provider_id}",
        )
    )


def _reject(
    collection: PaymentCollection,
    cmd: CompleteCheckout,
    reason: str,
    message: str,
    *,
    session_id: str | None = None,
    discriminator: str = "",
    retryable: bool = False,
) -> Decision:
    fail(
        collection,
        operation="authorize",
        reason=reason,
        message=message,
        retryable=retryable,
        causation_id=cmd.event_id,
        now=cmd.now,
        provider_id=cmd.provider_id,
        amount=cmd.amount,
        session_id=session_id,
        discriminator=discriminator,
    )
    collection.updated_at = cmd.now
    _processed(collection, cmd)
    return Decision("settled", collection, note=reason, rejected=True)


def begin_checkout(
    collection: PaymentCollection | None,
    cmd: CompleteCheckout,
    lease_until: datetime | None = None,
    *,
    owned: bool = False,
) -> Decision:
    """Validate a checkout and plan its authorization.

    Returns `duplicate`, `settled` (rejected, answered from the stored
    authorization, or a zero amount authorized without a provider), or `call`
    with the initiate (if the session is new) and authorize calls; hand the
    authorize outcome to :func:`finish_checkout`.

    A `call` decision is a reservation (`reserve=True`): the session is marked in
    flight (`needs_reconcile`, leased until `lease_until`) and must be stored before
    the calls, so that a crash after the provider acted leaves a trace the
    reconciler settles, and `cart.updated` cannot change the session meanwhile.

    `owned=True`: changed in place, not copied (as in :func:`decide_cart_update`).
    """
    if collection is None:
        # The matching cart.updated may not have been processed yet: the two
        # topics are not ordered against each other, so the checkout creates
        # the collection itself.
        collection = new_collection(
            cmd.cart_id, cmd.region_id, cmd.currency_code, cmd.amount, cmd.now
        )
        created = True
    else:
        if not owned:
            collection = collection.model_copy(deep=True)
        created = False
        if collection.has_processed(cmd.event_id):
            return Decision("duplicate", collection)

    answered = _answer_without_provider(collection, cmd, created)
    if answered is not None:
        return answered
    if cmd.amount == 0:
        return _authorize_zero(collection, cmd)
    if cmd.provider_id not in cmd.enabled_providers:
        return _reject(
            collection,
            cmd,
            "provider_not_available",
            f"provider {cmd.provider_id!r} is not installed or not enabled in region "
            f"{cmd.region_id!r}",
        )

    session = collection.session_for(cmd.provider_id)
    if session is None:
        if collection.context == {} and cmd.context:
            collection.context = dict(cmd.context)
        session = new_session(collection, cmd.provider_id, cmd.now)
    if session.status == SessionStatus.CANCELED:  # pragma: no cover - only when authorized
        return _reject(collection, cmd, "provider_error", "the session is canceled")
    attempt = _reserve_attempt(collection, cmd, session, lease_until)
    calls = _checkout_calls(collection, cmd, session, attempt)
    return Decision("call", collection, calls=calls, reserve=True)


def _answer_without_provider(
    collection: PaymentCollection, cmd: CompleteCheckout, created: bool
) -> Decision | None:
    """The checks that answer a checkout before any provider call, in order (None: go on)."""
    for check in (_conflicting_attempt, _canceled_or_authorized, _earlier_outcome_unknown):
        answer = check(collection, cmd)
        if answer is not None:
            return answer
    return None if created else _cart_mismatch(collection, cmd)


def _conflicting_attempt(collection: PaymentCollection, cmd: CompleteCheckout) -> Decision | None:
    attempt = collection.attempt_for(cmd.idempotency_key)
    if attempt is None or (attempt.amount == cmd.amount and attempt.provider_id == cmd.provider_id):
        return None
    return _reject(
        collection,
        cmd,
        "idempotency_conflict",
        f"idempotency key {cmd.idempotency_key!r} was used with amount {attempt.amount} "
        f"and provider {attempt.provider_id!r}",
    )


def _canceled_or_authorized(
    collection: PaymentCollection, cmd: CompleteCheckout
) -> Decision | None:
    if collection.status == CollectionStatus.CANCELED:
        # Checked before the republish below: a canceled (voided) payment must not
        # be answered with its old payment.authorized.
        return _reject(collection, cmd, "collection_canceled", "the payment collection is canceled")
    payment = collection.payment
    if payment is None:
        return None
    # Already authorized: answer with the stored payment.authorized, same id.
    collection.republish(payment.authorized_event_id)
    collection.updated_at = cmd.now
    _processed(collection, cmd)
    return Decision("settled", collection, note="already authorized: republished")


def _earlier_outcome_unknown(
    collection: PaymentCollection, cmd: CompleteCheckout
) -> Decision | None:
    if not any(
        s.authorization_key != cmd.idempotency_key or s.provider_id != cmd.provider_id
        for s in collection.sessions
        if s.needs_reconcile
    ):
        return None
    # An earlier authorization may have succeeded: a new one now could hold
    # the card twice. The service asks the provider before deciding (see
    # `unknown_authorization_queries`); this is what is left when even the
    # question had no answer. Re-sending the same key stays possible: the
    # provider de-duplicates it.
    return _reject(
        collection,
        cmd,
        "provider_unavailable",
        "an earlier authorization of this cart has an unknown outcome; "
        "try again once it is settled",
        discriminator=":unknown",
        retryable=True,
    )


def _cart_mismatch(collection: PaymentCollection, cmd: CompleteCheckout) -> Decision | None:
    currency = cmd.currency_code.lower()
    if collection.currency_code != currency:
        return _reject(
            collection,
            cmd,
            "currency_mismatch",
            f"checkout currency {currency!r} differs from the collection's "
            f"{collection.currency_code!r}",
        )
    if collection.amount != cmd.amount:
        return _reject(
            collection,
            cmd,
            "amount_mismatch",
            f"checkout amount {cmd.amount} differs from the collection's {collection.amount}",
        )
    return None


def _reserve_attempt(
    collection: PaymentCollection,
    cmd: CompleteCheckout,
    session: PaymentSession,
    lease_until: datetime | None,
) -> CheckoutAttempt:
    """Mark the session in flight under this attempt: the recovery point stored first."""
    collection.selected_provider_id = cmd.provider_id
    if collection.sessions and collection.status == CollectionStatus.NOT_PAID:
        collection.status = collection_transition(collection.status, CollectionStatus.AWAITING)
    attempt = collection.attempt_for(cmd.idempotency_key)
    if attempt is None:
        attempt = CheckoutAttempt(
            idempotency_key=cmd.idempotency_key,
            amount=cmd.amount,
            provider_id=cmd.provider_id,
            session_id=session.id,
            provider_key=ids.provider_key(collection.id, "authorize", cmd.idempotency_key),
            outcome="started",
            event_id=cmd.event_id,
            created_at=cmd.now,
            updated_at=cmd.now,
        )
        collection.checkout_attempts.append(attempt)
    else:
        attempt.tries += 1
        attempt.updated_at = cmd.now
        attempt.session_id = session.id
        attempt.event_id = cmd.event_id
    session.authorization_key = cmd.idempotency_key
    # What this attempt asks the provider to hold; the reconciler asks about the
    # same amount, and the payment takes what the provider answers.
    session.amount = cmd.amount
    session.currency_code = cmd.currency_code.lower()
    session.needs_reconcile = True
    session.lease_until = lease_until
    session.updated_at = cmd.now
    attempt.outcome = "started"
    collection.updated_at = cmd.now
    return attempt


def _checkout_calls(
    collection: PaymentCollection,
    cmd: CompleteCheckout,
    session: PaymentSession,
    attempt: CheckoutAttempt,
) -> list[ProviderCall]:
    """Initiate (a new session only), then authorize under the attempt's provider key."""
    calls: list[ProviderCall] = []
    if not session.initiated:
        calls.append(initiate_call(collection, session))
    calls.append(
        ProviderCall(
            operation="authorize",
            provider_id=cmd.provider_id,
            idempotency_key=attempt.provider_key or cmd.idempotency_key,
            session_id=session.id,
            amount=cmd.amount,
            currency_code=session.currency_code,
            cart_id=collection.cart_id,
            data=session.data,
            payment_data=dict(cmd.payment_data),
            context={**session.context, **cmd.context},
            ref=f"session:{session.id}",
        )
    )
    return calls


def next_checkout_call(
    decision: Decision, outcomes: list[tuple[ProviderCall, ProviderOutcome]]
) -> ProviderCall | None:
    """The next call of a checkout, given the answers so far (None: done).

    Initiate first when the session is new; no authorize when it failed (there
    is no session at the provider); the authorize call carries what initiate
    returned (e.g. the PaymentIntent id), as it was planned before.
    """
    if len(outcomes) >= len(decision.calls):
        return None
    call = decision.calls[len(outcomes)]
    initiated = next((outcome for made, outcome in outcomes if made.operation == "initiate"), None)
    if initiated is not None:
        if initiated.kind != OutcomeKind.SUCCEEDED:
            return None
        if call.operation == "authorize":
            call = replace(call, data={**call.data, **initiated.data})
    return call


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
    if is_payment_authorization(collection, call.idempotency_key) or any(
        s.needs_reconcile
        and authorization_call(collection, s).idempotency_key == call.idempotency_key
        for s in collection.sessions
    ):
        return False  # the payment, or a session's unknown outcome the reconciler settles
    if any(v.authorization_key == call.idempotency_key for v in collection.voids):
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
            found_at=now,
        )
    )
    collection.updated_at = now
    return True


def is_payment_authorization(collection: PaymentCollection, provider_key: str) -> bool:
    """Whether the authorization made under `provider_key` is the collection's payment."""
    payment = collection.payment
    if payment is None:
        return False
    session = collection.session_by_id(payment.session_id)
    if session is None or session.authorization_key is None:
        return False
    return authorization_call(collection, session).idempotency_key == provider_key


def _authorize_zero(collection: PaymentCollection, cmd: CompleteCheckout) -> Decision:
    """Amount 0: authorized by the `system` provider, with no provider call."""
    session = collection.session_for(SYSTEM_PROVIDER) or new_session(
        collection, SYSTEM_PROVIDER, cmd.now
    )
    session.initiated = True
    session.authorization_key = cmd.idempotency_key
    collection.checkout_attempts.append(
        CheckoutAttempt(
            idempotency_key=cmd.idempotency_key,
            amount=0,
            provider_id=cmd.provider_id,
            session_id=session.id,
            provider_key=None,
            outcome="authorized",
            created_at=cmd.now,
            updated_at=cmd.now,
        )
    )
    _authorized(collection, session, ProviderOutcome.succeeded(), cmd.event_id, cmd.now)
    _processed(collection, cmd)
    return Decision("settled", collection, note="zero amount authorized by system")


def _authorized(
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
    payment_id = ids.payment_id(session.id)
    amount = _held_amount(session, outcome)
    collection.status = collection_transition(collection.status, CollectionStatus.AUTHORIZED)
    collection.selected_provider_id = session.provider_id
    event = new_event(
        collection,
        PaymentAuthorized.model_validate(
            {
                "cart_id": collection.cart_id,
                "collection_id": collection.id,
                "provider_id": session.provider_id,
                "currency_code": collection.currency_code,
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
    payment = Payment(
        id=payment_id,
        session_id=session.id,
        provider_id=session.provider_id,
        amount=amount,
        currency_code=collection.currency_code,
        data=dict(outcome.data),
        authorized_at=now,
        authorized_event_id=event.id,
    )
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
    if kind == OutcomeKind.SUCCEEDED:
        _authorized(collection, session, outcome, causation_id, now)
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


def finish_checkout(
    decision: Decision | PaymentCollection,
    cmd: CompleteCheckout,
    outcomes: list[tuple[ProviderCall, ProviderOutcome]],
) -> PaymentCollection:
    """Apply the answers to a checkout's calls (initiate, then authorize).

    Takes the decision's collection, or whatever is stored when the answers
    arrive (the reservation was stored first, so others may have written since).
    An answer about an attempt that is no longer the session's (settled and
    replaced meanwhile) is not applied here: the service records it as a lost
    authorization if it holds money.
    """
    collection = decision.collection if isinstance(decision, Decision) else decision
    session_id = outcomes[0][0].session_id
    session = collection.session_by_id(session_id)
    if session is None or session.authorization_key != cmd.idempotency_key:
        if not collection.has_processed(cmd.event_id):
            _processed(collection, cmd)
        return collection
    session.lease_until = None
    for call, outcome in outcomes:
        if call.operation == "initiate" and session is not None:
            if outcome.kind == OutcomeKind.SUCCEEDED:
                session.data = {**session.data, **outcome.data}
                session.initiated = True
    authorize_outcome = next(
        (outcome for call, outcome in outcomes if call.operation == "authorize"), None
    )
    if authorize_outcome is None:
        # The initiate call failed, so authorize was never made: report the
        # initiate failure as the authorization's.
        authorize_outcome = next(outcome for _, outcome in outcomes)
    if collection.status == CollectionStatus.FAILED and authorize_outcome.kind in (
        OutcomeKind.SUCCEEDED,
        OutcomeKind.REQUIRES_MORE,
    ):
        collection.status = collection_transition(collection.status, CollectionStatus.AWAITING)
    finish_authorization(collection, session_id, authorize_outcome, cmd.event_id, cmd.now)
    if not collection.has_processed(cmd.event_id):
        _processed(collection, cmd)
    return collection
