"""The service layer: one handler per inbound event type, and the reconciler's pass.

Every handler is one :class:`~service.unit_of_work.UnitOfWork` run: load the
aggregate, let the domain decide, make the provider calls it asks for, store the
new state with its outbox (version-checked), and return what must be published.
A lost race decides again on the fresh state with the answers already obtained
(:class:`~service.unit_of_work.Answers`), so deciding again never asks the
provider twice and never drops what it answered.
"""

from __future__ import annotations

import copy
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Literal

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
from schemas.topics import PAYMENT_FAILED
from service.domain.calls import ProviderCall
from service.domain.cart import decide_cart_update, finish_cart_update
from service.domain.checkout import (
    begin_checkout,
    finish_checkout,
    next_checkout_call,
    record_lost_authorization,
    unknown_authorization_queries,
)
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
    Lease,
    begin_payment_command,
    finish_payment_command,
    reject_payment_command,
)
from service.domain.reconcile import (
    apply_reconcile,
    calls_to_repeat,
    status_queries,
    void_calls_for_found_authorizations,
)
from service.domain.results import Decision
from service.ports.providers import InstalledProviders, PaymentProvider
from service.ports.store import CollectionStore, Loaded, OrphanOutcome
from service.provider_calls import ProviderCaller
from service.unit_of_work import (
    MAX_CONFLICT_RETRIES,
    Answers,
    HandleResult,
    HandleStatus,
    Step,
    TooManyConflicts,
    UnitOfWork,
)

__all__ = [
    "MAX_CONFLICT_RETRIES",
    "HandleResult",
    "HandleStatus",
    "PaymentService",
    "TooManyConflicts",
    "utcnow",
]

log = logging.getLogger(__name__)

# No deep copy of the aggregate per decision (issue 15). Every decision here runs on
# what `UnitOfWork.run` just loaded: a fresh object (the stores validate a new
# aggregate from the stored document on every load, the batch's prefetch
# included), private to that attempt; a lost race loads a new one. So the
# decisions change it in place (`owned=True`, no copy) on one condition: a
# decision that stores nothing (a duplicate, an ignored event) must not have
# changed it first, since `UnitOfWork.run` hands a duplicate's loaded aggregate
# on to republish and mark sent. The domain's duplicate and ignore checks come
# before any change, and what a handler reads of the loaded state it reads
# before the decision (`resumed` in `admin_command`). A copy stays where an
# aggregate is changed before the decision that may still refuse it
# (`_settle_unknown_authorizations`).


def utcnow() -> datetime:
    return datetime.now(UTC)


def _instance_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _duplicate() -> Step:
    # Events stored by the first delivery but never acknowledged by the broker
    # go out again now, with their stored ids.
    return Step("duplicate", note="already processed", republish=True)


def _settled_status(decision: Decision) -> HandleStatus:
    return "rejected" if decision.rejected else "applied"


class PaymentService:
    def __init__(
        self,
        store: CollectionStore,
        providers: InstalledProviders,
        caller: ProviderCaller,
        *,
        clock: Callable[[], datetime] = utcnow,
        instance: str | None = None,
    ) -> None:
        self.store = store
        self.providers = providers
        self.caller = caller
        self.clock = clock
        self.unit_of_work = UnitOfWork(store)
        self.instance = instance or _instance_name()

    def using(self, store: CollectionStore) -> PaymentService:
        """This service over another view of its store: the consumer hands each
        batch's handlers the batch's :class:`~service.ports.store.StoreBatch`."""
        bound = copy.copy(self)
        bound.store = store
        bound.unit_of_work = UnitOfWork(store, max_retries=self.unit_of_work.max_retries)
        return bound

    # -- provider calls ------------------------------------------------------------

    def _provider(self, provider_id: str) -> PaymentProvider | None:
        return self.providers.get(provider_id)

    async def _call(self, call: ProviderCall, answers: Answers | None = None) -> ProviderOutcome:
        """Make a call (timeout, retries, status query on an unknown outcome)."""
        return await self._answer(call, answers, "call")

    async def _ask(self, call: ProviderCall, answers: Answers | None = None) -> ProviderOutcome:
        """One status query: what became of `call`?"""
        return await self._answer(call, answers, "status")

    async def _answer(
        self, call: ProviderCall, answers: Answers | None, method: Literal["call", "status"]
    ) -> ProviderOutcome:
        """The provider's answer to a call or a status query, asked once per decision:
        a retried unit of work reuses what `answers` already holds (the money moved
        or not; asking again must not move it twice)."""
        if answers is not None:
            known = answers.get(call, method)
            if known is not None:
                return known
        provider = self._provider(call.provider_id)
        missing = f"provider {call.provider_id!r} is not installed"
        if provider is None and method == "call":
            outcome = ProviderOutcome.failed(missing)
        elif provider is None:
            # Nobody to ask: unknown, so it is asked again once the provider is back.
            outcome = ProviderOutcome.unknown(missing)
        elif method == "status":
            outcome = await self.caller.ask_status(provider, call)
        else:
            # Log lines of the call (retries, adapter errors) say which provider and payment.
            with bound_contextvars(
                provider=call.provider_id,
                cart_id=call.cart_id,
                **({"payment_id": call.payment_id} if call.payment_id else {}),
            ):
                outcome = await self.caller.call(provider, call)
        if answers is not None:
            answers.put(call, method, outcome)
        return outcome

    def _lease(self, now: datetime, command_id: str) -> Lease:
        return Lease(
            owner=f"{self.instance}:{command_id}",
            until=now + timedelta(seconds=self.caller.policy.lease_s()),
        )

    # -- cart.updated ------------------------------------------------------------

    async def cart_updated(self, event_id: str, data: CartUpdated) -> HandleResult:
        answers = Answers()

        async def decide(loaded: Loaded | None) -> Step:
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
            # Owned: the loaded aggregate is private to this attempt (module note).
            decision = decide_cart_update(loaded.collection if loaded else None, cmd, owned=True)
            if decision.kind == "duplicate":
                return _duplicate()
            if decision.kind == "ignored":
                return Step("ignored", note=decision.note)
            outcomes = [(call, await self._call(call, answers)) for call in decision.calls]
            return Step("applied", finish_cart_update(decision, outcomes, cmd.now))

        result = await self.unit_of_work.run(
            lambda: self.store.load_by_cart(data.cart_id), decide, what=data.cart_id
        )
        result.cart_id = data.cart_id
        return result

    # -- checkout.completed ----------------------------------------------------------

    async def checkout_completed(self, event_id: str, data: CheckoutCompleted) -> HandleResult:
        answers = Answers()
        now = self.clock()
        cmd = CompleteCheckout(
            event_id=event_id,
            cart_id=data.cart_id,
            idempotency_key=data.idempotency_key,
            region_id=data.region_id,
            currency_code=data.currency_code,
            amount=data.amount,
            provider_id=data.provider_id,
            enabled_providers=self.providers.enabled_for_region(data.region_id),
            now=now,
            payment_data=dict(data.payment_data or {}),
            context=dict(data.context or {}),
        )
        # Two calls at most: initiate (for a new session) and authorize.
        lease_until = now + timedelta(seconds=self.caller.policy.lease_s(calls=2))
        load = lambda: self.store.load_by_cart(data.cart_id)  # noqa: E731
        planned: list[Decision] = []

        async def reserve(loaded: Loaded | None) -> Step:
            planned.clear()
            current = loaded.collection if loaded else None
            if current is not None and not current.has_processed(event_id):
                current = await self._settle_unknown_authorizations(current, answers, now)
            decision = begin_checkout(current, cmd, lease_until, owned=True)
            if decision.kind == "duplicate":
                return _duplicate()
            collection = decision.collection
            if decision.kind == "call":
                # The attempt is stored as in flight before the provider is called.
                planned.append(decision)
                self._record_lost_authorizations(collection, answers, now)
                return Step("applied", collection)
            self._record_lost_authorizations(collection, answers, now)
            return Step(_settled_status(decision), collection, note=decision.note)

        reserved = await self.unit_of_work.run(load, reserve, what=data.cart_id)
        reserved.cart_id = data.cart_id
        if not planned:
            return reserved
        outcomes = await self._checkout_calls(planned[0], answers)

        async def finish(loaded: Loaded | None) -> Step:
            if loaded is None:  # pragma: no cover - collections are never deleted
                raise TooManyConflicts(data.cart_id)
            collection = finish_checkout(loaded.collection, cmd, outcomes)
            self._record_lost_authorizations(collection, answers, now)
            return Step("applied", collection)

        result = await self.unit_of_work.run(load, finish, what=data.cart_id)
        result.cart_id = data.cart_id
        return result

    @staticmethod
    def _record_lost_authorizations(
        collection: PaymentCollection, answers: Answers, now: datetime
    ) -> None:
        """An authorization this handler obtained that is not the payment nor a
        session's pending outcome (another writer won, the attempt was replaced)
        is recorded to be voided: at most one live authorization per cart."""
        for call, outcome in answers.of("authorize"):
            if record_lost_authorization(collection, call, outcome, now):
                log.warning(
                    "authorization %s of cart %s is not the payment: voiding it",
                    call.idempotency_key,
                    call.cart_id,
                )

    async def _settle_unknown_authorizations(
        self, collection: PaymentCollection, answers: Answers, now: datetime
    ) -> PaymentCollection:
        """Before a new authorization: ask what became of the earlier unknown ones."""
        queries = unknown_authorization_queries(collection, now)
        if not queries:
            return collection
        statuses = [(query, await self._ask(query, answers)) for query in queries]
        settled = collection.model_copy(deep=True)
        apply_reconcile(settled, statuses, now)
        return settled

    async def _checkout_calls(
        self, decision: Decision, answers: Answers
    ) -> list[tuple[ProviderCall, ProviderOutcome]]:
        outcomes: list[tuple[ProviderCall, ProviderOutcome]] = []
        while (call := next_checkout_call(decision, outcomes)) is not None:
            outcome = await self._call(call, answers)
            if call.operation == "authorize":
                # What the void of a lost authorization must name (the hold's id).
                call = replace(call, data={**call.data, **outcome.data})
            outcomes.append((call, outcome))
        return outcomes

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

    @classmethod
    def command_claim(
        cls, command_id: str, data: AdminCapture | AdminRefund | AdminCancel
    ) -> tuple[str, str]:
        """The (command id, fingerprint) `admin_command` claims: the consumer claims a
        batch's commands together (`StoreBatch.prefetch_commands`)."""
        # The fingerprint depends on neither the clock nor the signing key.
        return command_id, command_fingerprint(
            cls.payment_command(command_id, data, utcnow(), None)
        )

    async def admin_command(
        self,
        command_id: str,
        data: AdminCapture | AdminRefund | AdminCancel,
        key_id: str | None = None,
    ) -> HandleResult:
        cmd = self.payment_command(command_id, data, self.clock(), key_id)
        # A command answered `payment_not_found` keeps that answer, even if the
        # payment exists by the time it is replayed (promise 2: the same answer).
        answered = await self.store.orphan(command_id)
        if answered is not None:
            return HandleResult("rejected", orphans=[answered], note="already answered")
        conflict = await self.store.claim_command(command_id, command_fingerprint(cmd))
        load = lambda: self.store.load_by_payment(cmd.payment_id)  # noqa: E731
        planned: list[tuple[Decision, bool]] = []

        async def reserve(loaded: Loaded | None) -> Step:
            planned.clear()
            if loaded is None:
                orphan = await self._orphan_answer(cmd, conflict)
                return Step("rejected", orphans=[orphan], note="payment_not_found")
            now = self.clock()
            # Read before the decision, which changes the (owned) aggregate in place.
            payment = loaded.collection.payment
            resumed = payment is not None and payment.pending_for(command_id) is not None
            if conflict is not None and not loaded.collection.has_processed(command_id):
                decision = reject_payment_command(
                    loaded.collection,
                    cmd,
                    "idempotency_conflict",
                    f"command id {command_id!r} was used before for {conflict}",
                )
            else:
                decision = begin_payment_command(
                    loaded.collection, cmd, self._lease(now, command_id), owned=True
                )
            if decision.kind == "duplicate":
                return _duplicate()
            if decision.kind == "settled":
                return Step(_settled_status(decision), decision.collection, note=decision.note)
            planned.append((decision, resumed))
            return Step("applied", decision.collection if decision.reserve else None)

        reserved = await self.unit_of_work.run(load, reserve, what=cmd.payment_id)
        if not planned:
            return reserved
        decision, resumed = planned[0]
        call = decision.calls[0]
        if resumed:
            answer = await self._resume(call)
        else:
            answer = await self._call(call)

        async def finish(loaded: Loaded | None) -> Step:
            if loaded is None:  # pragma: no cover - collections are never deleted
                raise TooManyConflicts(cmd.payment_id)
            finished = finish_payment_command(loaded.collection, cmd, answer, call)
            status: HandleStatus = "applied" if answer.kind == OutcomeKind.SUCCEEDED else "rejected"
            return Step(status, finished, note=answer.kind.value)

        return await self.unit_of_work.run(load, finish, what=cmd.payment_id)

    async def _resume(self, call: ProviderCall) -> ProviderOutcome:
        """The call of a reservation an earlier delivery stored and never settled
        (it crashed): the money may have moved, maybe longer ago than the
        provider's idempotency window. Status first; the call is made again only
        when the provider says it never happened (as the reconciler does)."""
        status = await self._ask(call)
        if not calls_to_repeat([(call, status)]):
            if status.kind in (OutcomeKind.TRANSIENT, OutcomeKind.UNKNOWN, OutcomeKind.PENDING):
                return ProviderOutcome.unknown(f"resumed call: status unknown: {status.message}")
            return status
        answer = await self._call(call)
        if answer.kind == OutcomeKind.TRANSIENT:
            # A transient error is no failure here either: the reconciler settles it.
            return ProviderOutcome.unknown(f"resumed call: {answer.message}")
        return answer

    async def _orphan_answer(self, cmd: PaymentCommand, conflict: str | None) -> OrphanOutcome:
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
            PAYMENT_FAILED,
            cmd.command_id,
            cmd.now,
            key=cmd.payment_id,
            subject=cmd.payment_id,
        )
        return await self.store.save_orphan(OrphanOutcome(cmd.command_id, [event]))

    # -- reconciliation ----------------------------------------------------------------

    async def reconcile(self, collection_id: str) -> HandleResult:
        """Settle what is unknown about one collection (the domain decides what to ask).

        Status first, always; a money call is repeated (same key) only when the
        provider says it never happened. The answers are applied to whatever is
        stored when they arrive: a write that came in between does not drop them.
        """
        loaded = await self.store.load(collection_id)
        if loaded is None:
            return HandleResult("ignored")
        now = self.clock()
        queries = status_queries(loaded.collection, now)
        if not queries:
            return HandleResult("ignored", cart_id=loaded.collection.cart_id)
        answers: list[tuple[ProviderCall, ProviderOutcome]] = [
            (query, await self._ask(query)) for query in queries
        ]
        repeats = calls_to_repeat(answers) + void_calls_for_found_authorizations(
            loaded.collection, answers
        )
        answers += [(call, await self._call(call)) for call in repeats]

        async def apply(fresh: Loaded | None) -> Step:
            if fresh is None:  # pragma: no cover - collections are never deleted
                return Step("ignored")
            collection = fresh.collection
            if not apply_reconcile(collection, answers, now):
                return Step("ignored")
            return Step("applied", collection)

        return await self.unit_of_work.run(
            lambda: self.store.load(collection_id), apply, what=collection_id
        )

    async def reconcile_due(self, min_age: timedelta, limit: int = 100) -> list[HandleResult]:
        """One pass over what is due, oldest first; one failure does not stop the pass."""
        due = await self.store.needing_reconcile(self.clock() - min_age, limit)
        results = []
        for loaded in due:
            try:
                results.append(await self.reconcile(loaded.collection.id))
            except Exception:
                log.warning("reconciling collection %s failed", loaded.collection.id, exc_info=True)
        return results

    # -- provider webhooks -----------------------------------------------------------

    async def provider_webhook(self, event_id: str, data: ProviderWebhook) -> HandleResult:
        """`payment.provider_webhook`: ask the adapter what it means, then apply it."""
        from service.domain.webhooks import apply_notification

        provider = self.providers.get(data.provider_id)
        if provider is None:
            return HandleResult("ignored", note=f"provider {data.provider_id!r} not installed")
        # A provider may need to look the cart up (Stripe: a dashboard refund or a
        # dispute names only the PaymentIntent, whose metadata names the cart).
        action = await provider.resolve_webhook(data.headers, data.payload)
        if action is None or action.cart_id is None:
            return HandleResult("ignored", note="webhook means nothing to us")
        cart_id = action.cart_id

        async def decide(loaded: Loaded | None) -> Step:
            if loaded is None:
                return Step("ignored", note=f"no collection for cart {cart_id!r}")
            collection = loaded.collection
            if collection.has_processed(event_id):
                return _duplicate()
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
            return Step(
                "applied" if changed else "ignored",
                collection,
                note="" if changed else "already recorded",
            )

        return await self.unit_of_work.run(
            lambda: self.store.load_by_cart(cart_id), decide, what=cart_id
        )
