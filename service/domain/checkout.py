"""`checkout.completed`: authorize the chosen session, Medusa's cart completion.

The checkout's idempotency key is the recovery point: the same key resumes the
same attempt (the provider sees the same key, so it charges at most once), and
after `requires_more` the same key is valid again for the second try.

Entry points: :func:`decide_checkout` (before the provider calls) and
:func:`settle_checkout` (with their answers). What an authorization's outcome does
to the collection is in `authorization.py`.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from schemas.topics import CHECKOUT_COMPLETED
from service.domain import derived_ids as ids
from service.domain.authorization import (
    SYSTEM_PROVIDER,
    authorize_session,
    finish_authorization,
    record_lost_authorizations,
    unknown_authorization_queries,
)
from service.domain.calls import Answered, Answers, Ask, ProviderCall
from service.domain.cart import initiate_call, new_collection, new_session
from service.domain.commands import CompleteCheckout
from service.domain.failures import fail
from service.domain.model import (
    CheckoutAttempt,
    PaymentCollection,
    PaymentSession,
)
from service.domain.outcomes import OutcomeKind, ProviderOutcome
from service.domain.reconcile import apply_reconcile
from service.domain.results import Decision
from service.domain.statuses import (
    CollectionStatus,
    SessionStatus,
    collection_transition,
)

__all__ = [
    "SYSTEM_PROVIDER",
    "begin_checkout",
    "decide_checkout",
    "finish_checkout",
    "next_checkout_call",
    "settle_checkout",
]


def decide_checkout(
    collection: PaymentCollection | None,
    cmd: CompleteCheckout,
    lease_until: datetime | None,
    answers: Answers,
) -> Decision:
    """A checkout, before its provider calls (the unit of work's `decide`).

    An earlier authorization of the cart whose outcome is unknown is asked about
    first (`ask`): a new authorization now could hold the card twice. With the
    answers, they are applied and the checkout is decided (:func:`begin_checkout`).
    Authorizations obtained by an earlier try of this message that are not the
    payment are recorded to be voided, whatever the decision.
    """
    if collection is not None:
        queries = unknown_authorization_queries(collection, cmd.now)
        if queries:
            statuses = answers.to([Ask(query, "status") for query in queries])
            if statuses is None:
                return Decision("ask", collection, calls=queries, how="status")
            apply_reconcile(collection, statuses, cmd.now)
    decision = begin_checkout(collection, cmd, lease_until)
    if decision.collection is not None and decision.kind != "duplicate":
        record_lost_authorizations(decision.collection, answers, cmd.now)
    return decision


def settle_checkout(
    collection: PaymentCollection, cmd: CompleteCheckout, answered: Answered, answers: Answers
) -> Decision:
    """Apply the answers to a checkout's calls to what is stored when they arrive."""
    finish_checkout(collection, cmd, answered)
    record_lost_authorizations(collection, answers, cmd.now)
    return Decision("settled", collection)


def _processed(collection: PaymentCollection, cmd: CompleteCheckout) -> None:
    collection.remember(
        cmd.event_id,
        CHECKOUT_COMPLETED,
        cmd.now,
        fingerprint=f"{cmd.idempotency_key}|{cmd.amount}|{cmd.provider_id}",
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

    Changes `collection` in place (a new one when None) and records its events.
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
    return Decision("call", collection, calls=calls, reserve=True, chain=next_checkout_call)


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
    collection.republish(
        payment.authorized_event or collection.outbox_event(payment.authorized_event_id)
    )
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
        collection.add_attempt(attempt)
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
    session.capabilities = cmd.capabilities
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


def next_checkout_call(decision: Decision, answered: Answered) -> Ask | None:
    """The next call of a checkout, given the answers so far (None: done).

    Initiate first when the session is new; no authorize when it failed (there
    is no session at the provider); the authorize call carries what initiate
    returned (e.g. the PaymentIntent id), as it was planned before.
    """
    if len(answered) >= len(decision.calls):
        return None
    call = decision.calls[len(answered)]
    initiated = next((outcome for made, outcome in answered if made.operation == "initiate"), None)
    if initiated is not None:
        if initiated.kind != OutcomeKind.SUCCEEDED:
            return None
        if call.operation == "authorize":
            call = replace(call, data={**call.data, **initiated.data})
    return Ask(call)


def _authorize_zero(collection: PaymentCollection, cmd: CompleteCheckout) -> Decision:
    """Amount 0: authorized by the `system` provider, with no provider call."""
    session = collection.session_for(SYSTEM_PROVIDER) or new_session(
        collection, SYSTEM_PROVIDER, cmd.now
    )
    session.initiated = True
    session.authorization_key = cmd.idempotency_key
    collection.add_attempt(
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
    authorize_session(collection, session, ProviderOutcome.succeeded(), cmd.event_id, cmd.now)
    _processed(collection, cmd)
    return Decision("settled", collection, note="zero amount authorized by system")


def finish_checkout(
    decision: Decision | PaymentCollection,
    cmd: CompleteCheckout,
    outcomes: Answered,
) -> PaymentCollection:
    """Apply the answers to a checkout's calls (initiate, then authorize).

    Takes the decision's collection, or whatever is stored when the answers
    arrive (the reservation was stored first, so others may have written since).
    An answer about an attempt that is no longer the session's (settled and
    replaced meanwhile) is not applied here: the service records it as a lost
    authorization if it holds money.
    """
    collection = decision.stored if isinstance(decision, Decision) else decision
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
