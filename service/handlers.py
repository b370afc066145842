"""The service layer: one handler per inbound event type.

Each handler follows the same one-way flow: load the aggregate, let the domain
decide, make the provider calls it asks for, store the new state together with
its outbox (version-checked), and return what must be published. A lost race
(another writer stored a newer version) reloads and decides again; provider
calls are keyed deterministically, so deciding again never moves money twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from structlog.contextvars import bound_contextvars

from schemas.inbound import (
    AdminCancel,
    AdminCapture,
    AdminRefund,
    CartUpdated,
    CheckoutCompleted,
    ProviderWebhook,
)
from schemas.outbound import PaymentFailed
from service.domain.calls import ProviderCall
from service.domain.cart import decide_cart_update, finish_cart_update
from service.domain.checkout import begin_checkout, finish_authorization, finish_checkout
from service.domain.commands import (
    CancelPayment,
    CapturePayment,
    CompleteCheckout,
    PaymentCommand,
    RefundPayment,
    UpdateCart,
    command_fingerprint,
    command_operation,
)
from service.domain.events import standalone_event
from service.domain.model import PaymentCollection
from service.domain.outcomes import OutcomeKind, ProviderOutcome
from service.domain.payment_commands import (
    begin_payment_command,
    finish_payment_command,
    pending_call,
    reject_payment_command,
    settle_pending,
)
from service.domain.results import Decision
from service.ports.providers import PaymentProvider
from service.ports.store import CollectionStore, ConcurrencyConflict, Loaded, OrphanOutcome
from service.provider_calls import ProviderCaller

log = logging.getLogger(__name__)

MAX_CONFLICT_RETRIES = 20

HandleStatus = Literal["applied", "duplicate", "ignored", "rejected"]


class ProviderRegistryLike:
    """What handlers need of the provider registry (see adapters.providers)."""

    def get(self, provider_id: str) -> PaymentProvider | None:  # pragma: no cover
        raise NotImplementedError

    def enabled_for_region(self, region_id: str) -> tuple[str, ...]:  # pragma: no cover
        raise NotImplementedError


@dataclass(slots=True)
class HandleResult:
    """What one handled event produced: stored collections and orphan answers to publish."""

    status: HandleStatus
    saved: list[tuple[PaymentCollection, int]] = field(default_factory=list)
    orphans: list[OrphanOutcome] = field(default_factory=list)
    note: str = ""
    cart_id: str | None = None


class TooManyConflicts(Exception):
    """The aggregate kept changing under us; the message is retried later."""


def utcnow() -> datetime:
    return datetime.now(UTC)


class PaymentService:
    def __init__(
        self,
        store: CollectionStore,
        providers: Any,
        caller: ProviderCaller,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.providers = providers
        self.caller = caller
        self.clock = clock

    # -- helpers -----------------------------------------------------------------

    async def _call(self, call: ProviderCall) -> ProviderOutcome:
        provider = self.providers.get(call.provider_id)
        if provider is None:
            return ProviderOutcome.failed(f"provider {call.provider_id!r} is not installed")
        # Log lines of the call (retries, adapter errors) say which provider and payment.
        with bound_contextvars(
            provider=call.provider_id,
            cart_id=call.cart_id,
            **({"payment_id": call.payment_id} if call.payment_id else {}),
        ):
            return await self.caller.call(provider, call)

    @staticmethod
    def _duplicate(loaded: Loaded | None) -> HandleResult:
        # Events stored by the first delivery but never acknowledged by the
        # broker go out again now, with their stored ids.
        saved = (
            [(loaded.collection, loaded.version)]
            if loaded is not None and loaded.collection.unsent_events
            else []
        )
        return HandleResult("duplicate", saved, note="already processed")

    async def _store(self, collection: PaymentCollection, loaded: Loaded | None) -> int:
        return await self.store.save(collection, loaded.version if loaded else None)

    # -- cart.updated ------------------------------------------------------------

    async def cart_updated(self, event_id: str, data: CartUpdated) -> HandleResult:
        for _ in range(MAX_CONFLICT_RETRIES):
            loaded = await self.store.load_by_cart(data.cart_id)
            cmd = UpdateCart(
                event_id=event_id,
                cart_id=data.cart_id,
                region_id=data.region_id,
                currency_code=data.currency_code,
                amount=data.amount,
                enabled_providers=self.providers.enabled_for_region(data.region_id),
                now=self.clock(),
                version=data.version,
                email=data.email,
                customer=data.customer.model_dump(exclude_none=True) if data.customer else None,
                provider_id=data.provider_id,
                payment_data=data.payment_data,
                context=dict(data.context or {}),
            )
            decision = decide_cart_update(loaded.collection if loaded else None, cmd)
            if decision.kind == "duplicate":
                return self._duplicate(loaded)
            if decision.kind == "ignored":
                return HandleResult("ignored", note=decision.note, cart_id=data.cart_id)
            outcomes = [(call, await self._call(call)) for call in decision.calls]
            collection = finish_cart_update(decision, outcomes, cmd.now)
            try:
                version = await self._store(collection, loaded)
            except ConcurrencyConflict:
                continue
            return HandleResult("applied", [(collection, version)], cart_id=data.cart_id)
        raise TooManyConflicts(data.cart_id)

    # -- checkout.completed ----------------------------------------------------------

    async def checkout_completed(self, event_id: str, data: CheckoutCompleted) -> HandleResult:
        authorized_elsewhere: list[ProviderCall] = []
        for _ in range(MAX_CONFLICT_RETRIES):
            loaded = await self.store.load_by_cart(data.cart_id)
            cmd = CompleteCheckout(
                event_id=event_id,
                cart_id=data.cart_id,
                idempotency_key=data.idempotency_key,
                region_id=data.region_id,
                currency_code=data.currency_code,
                amount=data.amount,
                provider_id=data.provider_id,
                enabled_providers=self.providers.enabled_for_region(data.region_id),
                now=self.clock(),
                payment_data=dict(data.payment_data or {}),
                context=dict(data.context or {}),
            )
            decision = begin_checkout(loaded.collection if loaded else None, cmd)
            if decision.kind == "duplicate":
                return self._duplicate(loaded)
            if decision.kind == "settled":
                await self._void_lost_authorizations(authorized_elsewhere, decision.collection)
                try:
                    version = await self._store(decision.collection, loaded)
                except ConcurrencyConflict:
                    continue
                status: HandleStatus = (
                    "rejected"
                    if decision.note
                    not in (
                        "",
                        "already authorized: republished",
                        "zero amount authorized by system",
                    )
                    else "applied"
                )
                return HandleResult(
                    status,
                    [(decision.collection, version)],
                    note=decision.note,
                    cart_id=data.cart_id,
                )
            outcomes = await self._checkout_calls(decision)
            collection = finish_checkout(decision, cmd, outcomes)
            try:
                version = await self._store(collection, loaded)
            except ConcurrencyConflict:
                # Another writer got there first. If we authorized, remember the
                # call: should the other writer have authorized a *different*
                # attempt, ours must be voided (at most one authorized payment).
                authorized_elsewhere.extend(
                    call
                    for call, outcome in outcomes
                    if call.operation == "authorize" and outcome.kind == OutcomeKind.SUCCEEDED
                )
                continue
            return HandleResult("applied", [(collection, version)], cart_id=data.cart_id)
        raise TooManyConflicts(data.cart_id)

    async def _checkout_calls(
        self, decision: Decision
    ) -> list[tuple[ProviderCall, ProviderOutcome]]:
        outcomes: list[tuple[ProviderCall, ProviderOutcome]] = []
        initiated: dict[str, Any] = {}
        for call in decision.calls:
            if initiated and call.operation == "authorize":
                # The authorize call was planned before the session existed at the
                # provider: hand it what initiate returned (e.g. the PaymentIntent id).
                call = replace(call, data={**call.data, **initiated})
            outcome = await self._call(call)
            outcomes.append((call, outcome))
            if call.operation == "initiate":
                if outcome.kind != OutcomeKind.SUCCEEDED:
                    break  # no session at the provider: nothing to authorize
                initiated = dict(outcome.data)
        return outcomes

    async def _void_lost_authorizations(
        self, calls: list[ProviderCall], collection: PaymentCollection
    ) -> None:
        payment = collection.payment
        for call in calls:
            if payment is not None and payment.session_id == call.session_id:
                continue  # the winner authorized the same session under the same key
            log.warning(
                "voiding authorization %s of cart %s lost to a concurrent checkout",
                call.idempotency_key,
                call.cart_id,
            )
            await self._call(
                ProviderCall(
                    operation="cancel",
                    provider_id=call.provider_id,
                    idempotency_key=f"{call.idempotency_key}:void",
                    session_id=call.session_id,
                    amount=call.amount,
                    currency_code=call.currency_code,
                    cart_id=call.cart_id,
                )
            )

    # -- admin commands ----------------------------------------------------------------

    @staticmethod
    def payment_command(
        command_id: str,
        data: AdminCapture | AdminRefund | AdminCancel,
        now: datetime,
        key_id: str | None,
    ) -> PaymentCommand:
        if isinstance(data, AdminCapture):
            return CapturePayment(
                command_id=command_id,
                payment_id=data.payment_id,
                requested_by=data.requested_by,
                now=now,
                amount=data.amount,
                note=data.note,
                key_id=key_id,
            )
        if isinstance(data, AdminRefund):
            return RefundPayment(
                command_id=command_id,
                payment_id=data.payment_id,
                requested_by=data.requested_by,
                now=now,
                amount=data.amount,
                reason=data.reason,
                note=data.note,
                key_id=key_id,
            )
        return CancelPayment(
            command_id=command_id,
            payment_id=data.payment_id,
            requested_by=data.requested_by,
            now=now,
            note=data.note,
            key_id=key_id,
        )

    async def admin_command(
        self,
        command_id: str,
        data: AdminCapture | AdminRefund | AdminCancel,
        key_id: str | None = None,
    ) -> HandleResult:
        cmd = self.payment_command(command_id, data, self.clock(), key_id)
        conflict = await self.store.claim_command(command_id, command_fingerprint(cmd))
        for _ in range(MAX_CONFLICT_RETRIES):
            loaded = await self.store.load_by_payment(cmd.payment_id)
            if loaded is None:
                return await self._orphan_answer(cmd, conflict)
            if conflict is not None and not loaded.collection.has_processed(command_id):
                decision = reject_payment_command(
                    loaded.collection,
                    cmd,
                    "idempotency_conflict",
                    f"command id {command_id!r} was used before for {conflict}",
                )
            else:
                decision = begin_payment_command(loaded.collection, cmd)
            if decision.kind == "duplicate":
                return self._duplicate(loaded)
            if decision.kind == "settled":
                try:
                    version = await self._store(decision.collection, loaded)
                except ConcurrencyConflict:
                    continue
                status: HandleStatus = (
                    "applied" if decision.note == "already canceled: republished" else "rejected"
                )
                return HandleResult(
                    status,
                    [(decision.collection, version)],
                    note=decision.note,
                    cart_id=decision.collection.cart_id,
                )
            collection = decision.collection
            version = loaded.version
            if decision.reserve:
                try:
                    version = await self._store(collection, loaded)
                except ConcurrencyConflict:
                    continue
            outcome = await self._call(decision.calls[0])
            if not decision.reserve and outcome.kind == OutcomeKind.TRANSIENT:
                # Resuming a reservation stored by an earlier delivery whose call's
                # outcome was never recorded (a crash): the money may have moved, so
                # a transient error is no failure; the reconciler repeats the call.
                outcome = ProviderOutcome.unknown(f"resumed call: {outcome.message}")
            return await self._finish_command(collection, version, cmd, outcome)
        raise TooManyConflicts(cmd.payment_id)

    async def _finish_command(
        self,
        collection: PaymentCollection,
        version: int,
        cmd: PaymentCommand,
        outcome: ProviderOutcome,
    ) -> HandleResult:
        """Store a command's outcome; on a lost race apply it to the fresh state.

        The reservation is already stored, so a concurrent writer cannot have
        taken the amount; it can only have changed something else.
        """
        for _ in range(MAX_CONFLICT_RETRIES):
            finished = finish_payment_command(collection.model_copy(deep=True), cmd, outcome)
            try:
                new_version = await self.store.save(finished, version)
            except ConcurrencyConflict:
                reloaded = await self.store.load_by_payment(cmd.payment_id)
                if reloaded is None:  # pragma: no cover - collections are never deleted
                    raise
                collection, version = reloaded.collection, reloaded.version
                continue
            status: HandleStatus = (
                "applied" if outcome.kind == OutcomeKind.SUCCEEDED else "rejected"
            )
            return HandleResult(
                status,
                [(finished, new_version)],
                cart_id=finished.cart_id,
                note=outcome.kind.value,
            )
        raise TooManyConflicts(cmd.payment_id)

    async def _orphan_answer(self, cmd: PaymentCommand, conflict: str | None) -> HandleResult:
        """`payment_not_found` (or a conflict) for a command that found no payment."""
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
                "operation": command_operation(cmd),
                "reason": reason,
                "message": message,
                "retryable": False,
                "amount": getattr(cmd, "amount", None),
                "payment_id": cmd.payment_id,
            }
        )
        event = standalone_event(
            data,
            "payment.failed",
            cmd.command_id,
            cmd.now,
            key=cmd.payment_id,
            subject=cmd.payment_id,
        )
        stored = await self.store.save_orphan(OrphanOutcome(cmd.command_id, [event]))
        return HandleResult("rejected", orphans=[stored], note=reason)

    # -- reconciliation ----------------------------------------------------------------

    async def reconcile(self, collection_id: str) -> HandleResult:
        """Settle sessions and reserved operations whose outcome is unknown.

        Authorizations: ask the provider for the status under the stored key.
        Reserved captures, refunds and cancels: repeat the call with its key,
        which the provider de-duplicates, and apply the answer.
        """
        for _ in range(MAX_CONFLICT_RETRIES):
            loaded = await self.store.load(collection_id)
            if loaded is None:
                return HandleResult("ignored")
            collection = loaded.collection.model_copy(deep=True)
            now = self.clock()
            changed = False
            for session in collection.sessions:
                if not session.needs_reconcile or session.authorization_key is None:
                    continue
                provider = self.providers.get(session.provider_id)
                if provider is None:
                    continue
                call = ProviderCall(
                    operation="authorize",
                    provider_id=session.provider_id,
                    idempotency_key=session.authorization_key,
                    session_id=session.id,
                    amount=session.amount,
                    currency_code=session.currency_code,
                    cart_id=collection.cart_id,
                    data=session.data,
                )
                outcome = await self.caller.ask_status(provider, call)
                if outcome.kind == OutcomeKind.UNKNOWN or (
                    outcome.kind == OutcomeKind.TRANSIENT and not outcome.is_not_found
                ):
                    # The question itself failed: the provider may hold an
                    # authorization, so ask again on the next pass.
                    continue
                attempt = collection.attempt_for(session.authorization_key)
                cause = attempt.event_id if attempt and attempt.event_id else session.id
                finish_authorization(collection, session.id, outcome, cause, now)
                changed = True
            payment = collection.payment
            if payment is not None:
                for pending in list(payment.pending):
                    outcome = await self._call(pending_call(payment, collection, pending))
                    if outcome.kind in (
                        OutcomeKind.UNKNOWN,
                        OutcomeKind.PENDING,
                        OutcomeKind.TRANSIENT,
                    ):
                        # A reservation is here because an earlier call's outcome is
                        # unknown: a transient error now does not say the money did
                        # not move, so keep it and repeat the call (same key) later.
                        continue
                    settle_pending(collection, pending, outcome, now)
                    changed = True
            if not changed:
                return HandleResult("ignored")
            collection.updated_at = now
            try:
                version = await self.store.save(collection, loaded.version)
            except ConcurrencyConflict:
                continue
            return HandleResult("applied", [(collection, version)], cart_id=collection.cart_id)
        raise TooManyConflicts(collection_id)

    async def reconcile_due(self, min_age: timedelta, limit: int = 100) -> list[HandleResult]:
        due = await self.store.needing_reconcile(self.clock() - min_age, limit)
        results = []
        for loaded in due:
            results.append(await self.reconcile(loaded.collection.id))
        return results

    # -- provider webhooks -----------------------------------------------------------

    async def provider_webhook(self, event_id: str, data: ProviderWebhook) -> HandleResult:
        """`payment.provider_webhook`: ask the adapter what it means, then apply it."""
        from service.domain.webhooks import apply_notification

        provider = self.providers.get(data.provider_id)
        if provider is None:
            return HandleResult("ignored", note=f"provider {data.provider_id!r} not installed")
        action = provider.interpret_webhook(data.headers, data.payload)
        if action is None or action.cart_id is None:
            return HandleResult("ignored", note="webhook means nothing to us")
        for _ in range(MAX_CONFLICT_RETRIES):
            loaded = await self.store.load_by_cart(action.cart_id)
            if loaded is None:
                return HandleResult("ignored", note=f"no collection for cart {action.cart_id!r}")
            collection = loaded.collection.model_copy(deep=True)
            if collection.has_processed(event_id):
                return self._duplicate(loaded)
            changed = apply_notification(
                collection,
                event_id=event_id,
                meaning=action.meaning,
                session_id=action.session_id,
                provider_id=data.provider_id,
                now=self.clock(),
                amount=action.amount,
                data=action.data,
                action=action.action,
                message=action.message,
            )
            try:
                version = await self.store.save(collection, loaded.version)
            except ConcurrencyConflict:
                continue
            return HandleResult(
                "applied" if changed else "ignored",
                [(collection, version)],
                cart_id=collection.cart_id,
                note="" if changed else "already recorded",
            )
        raise TooManyConflicts(action.cart_id)
