"""`cart.updated`: keep one payment session per provider enabled in the region."""

from __future__ import annotations

from datetime import datetime

from schemas.topics import CART_UPDATED
from service.domain import derived_ids as ids
from service.domain.calls import Answered, ProviderCall
from service.domain.commands import UpdateCart
from service.domain.model import DeferredCart, PaymentCollection, PaymentSession
from service.domain.outcomes import OutcomeKind, ProviderOutcome
from service.domain.results import Decision
from service.domain.statuses import CollectionStatus, collection_transition


def new_collection(
    cart_id: str, region_id: str, currency_code: str, amount: int, now: datetime
) -> PaymentCollection:
    return PaymentCollection(
        id=ids.collection_id(cart_id),
        cart_id=cart_id,
        region_id=region_id,
        currency_code=currency_code.lower(),
        amount=amount,
        created_at=now,
        updated_at=now,
    )


def new_session(collection: PaymentCollection, provider_id: str, now: datetime) -> PaymentSession:
    """Add a session for `provider_id`; its id is new even if one existed before."""
    collection.session_seq += 1
    session = PaymentSession(
        id=ids.session_id(collection.id, provider_id, collection.session_seq),
        provider_id=provider_id,
        amount=collection.amount,
        currency_code=collection.currency_code,
        context=dict(collection.context),
        created_at=now,
        updated_at=now,
    )
    collection.sessions.append(session)
    return session


def initiate_call(collection: PaymentCollection, session: PaymentSession) -> ProviderCall:
    return ProviderCall(
        operation="initiate",
        provider_id=session.provider_id,
        idempotency_key=f"{session.id}:initiate",
        session_id=session.id,
        amount=session.amount,
        currency_code=session.currency_code,
        cart_id=collection.cart_id,
        context=session.context,
    )


def is_frozen(collection: PaymentCollection) -> bool:
    """An authorized or canceled collection no longer follows its cart."""
    return collection.payment is not None or collection.status in (
        CollectionStatus.CANCELED,
        CollectionStatus.COMPLETED,
    )


def decide_cart_update(collection: PaymentCollection | None, cmd: UpdateCart) -> Decision:
    """Plan the session changes a `cart.updated` asks for.

    Returns `duplicate`, `ignored` (stale version, or the collection is frozen),
    or `call` with the initiate/update/update-data/delete calls to make; hand
    their outcomes to :func:`finish_cart_update`. Changes `collection` in place (a
    new one when None).
    """
    if collection is None:
        collection = new_collection(
            cmd.cart_id, cmd.region_id, cmd.currency_code, cmd.amount, cmd.now
        )
    else:
        skipped = _skipped(collection, cmd)
        if skipped is not None:
            return skipped
        if _authorization_in_flight(collection) and _changes_money(collection, cmd):
            return _defer(collection, cmd)

    changed = _follow_cart(collection, cmd)
    wanted = list(cmd.enabled_providers) if cmd.amount > 0 else []
    calls = _drop_unwanted_sessions(collection, wanted)
    calls += _sync_wanted_sessions(collection, wanted, changed, cmd)
    calls += _select_provider(collection, wanted, cmd)

    if collection.sessions and collection.status == CollectionStatus.NOT_PAID:
        collection.status = collection_transition(collection.status, CollectionStatus.AWAITING)
    collection.remember(cmd.event_id, CART_UPDATED, cmd.now)
    return Decision("call", collection, calls=calls)


def _skipped(collection: PaymentCollection, cmd: UpdateCart) -> Decision | None:
    """A repeated, frozen-out or stale update changes nothing (None: apply it)."""
    if collection.has_processed(cmd.event_id):
        return Decision("duplicate", collection)
    if is_frozen(collection):
        return Decision("ignored", collection, note="collection is authorized or closed")
    if (
        cmd.version is not None
        and collection.cart_version is not None
        and cmd.version < collection.cart_version
    ):
        return Decision(
            "ignored",
            collection,
            note=f"stale cart version {cmd.version} < {collection.cart_version}",
        )
    return None


def _authorization_in_flight(collection: PaymentCollection) -> bool:
    """An authorization is being made or its outcome is unknown: what it asked the
    provider for (amount, currency) is what the payment will be, if it becomes one."""
    return any(s.needs_reconcile for s in collection.sessions)


def _changes_money(collection: PaymentCollection, cmd: UpdateCart) -> bool:
    return (
        collection.amount != cmd.amount
        or collection.currency_code != cmd.currency_code.lower()
        or collection.context != cmd.context
    )


def _defer(collection: PaymentCollection, cmd: UpdateCart) -> Decision:
    """Frozen while an authorization is in flight or unknown: the cart's new amount,
    currency and context wait, and apply once it settles without a payment
    (:func:`apply_deferred_cart`); a later update replaces this one."""
    collection.deferred_cart = DeferredCart(
        event_id=cmd.event_id,
        region_id=cmd.region_id,
        currency_code=cmd.currency_code.lower(),
        amount=cmd.amount,
        version=cmd.version,
        context=dict(cmd.context),
    )
    if cmd.email is not None:
        collection.email = cmd.email
    if cmd.customer is not None:
        collection.customer = dict(cmd.customer)
    collection.updated_at = cmd.now
    collection.remember(cmd.event_id, CART_UPDATED, cmd.now)
    return Decision("settled", collection, note="deferred: an authorization is in flight")


def apply_deferred_cart(collection: PaymentCollection, now: datetime) -> bool:
    """The cart update that waited for an authorization, once it settled without a
    payment (declined, failed, 3-D Secure pending): the collection follows the cart
    again; the sessions follow at the next authorization, which names the amount."""
    deferred = collection.deferred_cart
    if deferred is None or _authorization_in_flight(collection):
        return False
    collection.deferred_cart = None
    if collection.payment is not None:
        return True  # authorized meanwhile: the collection no longer follows its cart
    collection.region_id = deferred.region_id
    collection.currency_code = deferred.currency_code
    collection.amount = deferred.amount
    collection.context = dict(deferred.context)
    if deferred.version is not None:
        collection.cart_version = deferred.version
    collection.updated_at = now
    return True


def _follow_cart(collection: PaymentCollection, cmd: UpdateCart) -> bool:
    """Take the cart's amount, currency and customer; returns whether the sessions must follow."""
    currency = cmd.currency_code.lower()
    changed = (
        collection.amount != cmd.amount
        or collection.currency_code != currency
        or collection.context != cmd.context
    )
    collection.region_id = cmd.region_id
    collection.currency_code = currency
    collection.amount = cmd.amount
    collection.context = dict(cmd.context)
    if cmd.version is not None:
        collection.cart_version = cmd.version
    if cmd.email is not None:
        collection.email = cmd.email
    if cmd.customer is not None:
        collection.customer = dict(cmd.customer)
    collection.updated_at = cmd.now
    return changed


def _drop_unwanted_sessions(collection: PaymentCollection, wanted: list[str]) -> list[ProviderCall]:
    """Remove the sessions of providers no longer offered; delete those the provider knows."""
    calls: list[ProviderCall] = []
    for session in list(collection.sessions):
        if session.needs_reconcile:
            # Its authorization's outcome is unknown: the provider may hold money
            # against it. Deleting or changing it would lose that authorization
            # (or ask about another amount); the reconciler settles it first.
            continue
        if session.provider_id not in wanted:
            collection.sessions.remove(session)
            if session.initiated:
                calls.append(
                    ProviderCall(
                        operation="delete",
                        provider_id=session.provider_id,
                        idempotency_key=f"{session.id}:delete",
                        session_id=session.id,
                        amount=session.amount,
                        currency_code=session.currency_code,
                        cart_id=collection.cart_id,
                        data=session.data,
                    )
                )
    return calls


def _sync_wanted_sessions(
    collection: PaymentCollection, wanted: list[str], changed: bool, cmd: UpdateCart
) -> list[ProviderCall]:
    """One session per offered provider: initiate the new ones, update the changed ones."""
    calls: list[ProviderCall] = []
    for provider_id in wanted:
        session = collection.session_for(provider_id)
        if session is None:
            calls.append(initiate_call(collection, new_session(collection, provider_id, cmd.now)))
            continue
        if session.needs_reconcile or (session.initiated and not changed):
            continue
        session.amount = collection.amount
        session.currency_code = collection.currency_code
        session.context = dict(collection.context)
        session.updated_at = cmd.now
        if not session.initiated:
            calls.append(initiate_call(collection, session))
            continue
        calls.append(
            ProviderCall(
                operation="update",
                provider_id=provider_id,
                idempotency_key=f"{session.id}:update:{cmd.event_id}",
                session_id=session.id,
                amount=session.amount,
                currency_code=collection.currency_code,
                cart_id=collection.cart_id,
                data=session.data,
                context=session.context,
            )
        )
    return calls


def _select_provider(
    collection: PaymentCollection, wanted: list[str], cmd: UpdateCart
) -> list[ProviderCall]:
    """The storefront chose a provider: select it, and pass on its payment data."""
    if cmd.provider_id is None or cmd.provider_id not in wanted:
        return []
    collection.selected_provider_id = cmd.provider_id
    selected = collection.session_for(cmd.provider_id)
    if selected is None or not cmd.payment_data or selected.needs_reconcile:
        return []
    return [
        ProviderCall(
            operation="update_data",
            provider_id=cmd.provider_id,
            idempotency_key=f"{selected.id}:data:{cmd.event_id}",
            session_id=selected.id,
            amount=selected.amount,
            currency_code=collection.currency_code,
            cart_id=collection.cart_id,
            data=selected.data,
            payment_data=dict(cmd.payment_data),
        )
    ]


def apply_session_outcomes(
    collection: PaymentCollection,
    outcomes: list[tuple[ProviderCall, ProviderOutcome]],
    now: datetime,
) -> PaymentCollection:
    """Merge the providers' answers to session calls into the sessions.

    A failed initiate leaves the session un-initiated (checkout initiates it
    again); a failed update keeps the old provider data. Neither is published:
    `cart.updated` has no outbound event, and the checkout reports real failures.
    """
    for call, outcome in outcomes:
        if call.operation == "delete":
            continue
        session = collection.session_by_id(call.session_id)
        if session is None:
            continue
        session.updated_at = now
        if outcome.kind == OutcomeKind.SUCCEEDED:
            session.data = {**session.data, **outcome.data}
            session.last_error = None
            if call.operation == "initiate":
                session.initiated = True
        else:
            session.last_error = f"{call.operation}: {outcome.kind}: {outcome.message}"
    return collection


def finish_cart_update(
    decision: Decision | PaymentCollection, outcomes: Answered, now: datetime
) -> PaymentCollection:
    """Apply the answers to a cart update's calls (the unit of work's `settle`)."""
    collection = decision.stored if isinstance(decision, Decision) else decision
    return apply_session_outcomes(collection, outcomes, now)
