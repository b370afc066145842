"""The handlers: what each inbound event asks of the unit of work.

A handler turns an event into a domain command and describes its :class:`Work`
(how to load the aggregate, its inbox entry, the aggregate's decision and how it
settles the providers' answers); :class:`~service.unit_of_work.UnitOfWork` does the
rest, the same way for every event type. Which handler serves which event type, and
how the consumer orders and prefetches it, is declared in `service/bus.py`.
"""

from __future__ import annotations

import asyncio
import copy
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from service.domain import commands
from service.domain.model import Notification, PaymentCollection
from service.domain.payment_operations import Lease, unknown_payment_answer
from service.domain.results import Decision
from service.ports.providers import InstalledProviders
from service.ports.store import CollectionStore, Loaded
from service.provider_calls import ProviderAccess, ProviderCaller
from service.unit_of_work import (
    MAX_CONFLICT_RETRIES,
    HandleResult,
    HandleStatus,
    TooManyConflicts,
    UnitOfWork,
    Work,
)

__all__ = [
    "MAX_CONFLICT_RETRIES",
    "HandleResult",
    "HandleStatus",
    "PaymentService",
    "TooManyConflicts",
    "utcnow",
]


PATIENCE_TRIES = 50
PATIENCE_PAUSE_S = 0.1
"""A command meeting another handler's operation in flight waits up to about 5 s for
it to settle (it usually takes milliseconds) before answering `operation_in_flight`."""


def utcnow() -> datetime:
    return datetime.now(UTC)


def _instance_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class PaymentService:
    """The service layer's dependencies and its handlers, one per inbound event type."""

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
        self.instance = instance or _instance_name()
        self.unit_of_work = UnitOfWork(store, ProviderAccess(providers, caller))

    def using(self, store: CollectionStore) -> PaymentService:
        """This service over another view of its store: the consumer hands each
        batch's handlers the batch's :class:`~service.ports.store.StoreBatch`."""
        bound = copy.copy(self)
        bound.store = store
        bound.unit_of_work = UnitOfWork(
            store, self.unit_of_work.ask, max_retries=self.unit_of_work.max_retries
        )
        return bound

    def lease(self, now: datetime, command_id: str, calls: int = 1) -> Lease:
        """Who makes an operation's provider calls (this instance), and until when."""
        return Lease(
            owner=f"{self.instance}:{command_id}",
            until=now + timedelta(seconds=self.caller.policy.lease_s(calls=calls)),
        )

    def _by_cart(self, cart_id: str) -> Callable[[], Awaitable[Loaded | None]]:
        return lambda: self.store.load_by_cart(cart_id)

    # -- the handlers ------------------------------------------------------------------

    async def cart_updated(self, cmd: commands.UpdateCart) -> HandleResult:
        return await self.unit_of_work.run(
            Work(
                cmd.cart_id,
                self._by_cart(cmd.cart_id),
                lambda loaded, _: _collection(loaded, cmd).update_cart(cmd),
                settle=lambda c, answered, _: c.settle_cart_update(answered, cmd.now),
                seen=lambda c: c.has_processed(cmd.event_id),
            )
        )

    async def checkout_completed(self, cmd: commands.CompleteCheckout) -> HandleResult:
        lease_until = self.lease(cmd.now, cmd.event_id, calls=2).until  # initiate, authorize
        return await self.unit_of_work.run(
            Work(
                cmd.cart_id,
                self._by_cart(cmd.cart_id),
                lambda loaded, answers: _collection(loaded, cmd).checkout(
                    cmd, lease_until, answers
                ),
                settle=lambda c, answered, answers: c.settle_checkout(cmd, answered, answers),
                seen=lambda c: c.has_processed(cmd.event_id),
            )
        )

    async def payment_command(self, cmd: commands.PaymentCommand) -> HandleResult:
        # An orphan answer is kept for good: a replay gets it even once the payment exists.
        if (answered := await self.store.orphan(cmd.command_id)) is not None:
            return HandleResult("rejected", orphans=[answered], note="already answered")
        conflict = await self.store.claim_command(cmd.command_id, commands.fingerprint(cmd))
        lease = self.lease(cmd.now, cmd.command_id)
        return await self._patiently(
            cmd,
            lambda cmd: Work(
                cmd.payment_id,
                lambda: self.store.load_by_payment(cmd.payment_id),
                lambda loaded, _: _operation(loaded, cmd, lease, conflict),
                settle=lambda c, answered, _: c.settle_payment_command(cmd, answered),
            ),
        )

    async def _patiently(
        self, cmd: commands.PaymentCommand, work: Callable[[commands.PaymentCommand], Work]
    ) -> HandleResult:
        """Run a command's work; while its answer waits on an operation another handler
        is still making, try again a little later (the last try no longer waits)."""
        for tries_left in range(PATIENCE_TRIES, -1, -1):
            result = await self.unit_of_work.run(work(replace(cmd, patient=tries_left > 0)))
            if result.status != "waiting":
                return result
            await asyncio.sleep(PATIENCE_PAUSE_S)
        raise AssertionError("unreachable: the last try does not wait")

    async def provider_webhook(self, cmd: commands.ApplyWebhook) -> HandleResult:
        """Ask the provider's adapter what the webhook means, then apply it to the cart."""
        found = await self._notification(cmd)
        if isinstance(found, HandleResult):
            return found
        cart_id, notification = found
        return await self.unit_of_work.run(
            Work(
                cart_id,
                self._by_cart(cart_id),
                lambda loaded, _: _notify(loaded, cmd.event_id, notification, cmd.now),
                seen=lambda c: c.has_processed(cmd.event_id),
            )
        )

    async def reconcile(self, collection_id: str) -> HandleResult:
        """Settle what is unknown about one collection: status first, always; a money
        call is repeated (same key) only when the provider says it never happened."""
        now = self.clock()
        return await self.unit_of_work.run(
            Work(
                collection_id,
                lambda: self.store.load(collection_id),
                lambda loaded, _: loaded.collection.reconcile(now) if loaded else _NOTHING,
                settle=lambda c, answered, _: c.settle_reconcile(answered, now),
            )
        )

    async def _notification(
        self, cmd: commands.ApplyWebhook
    ) -> tuple[str, Notification] | HandleResult:
        """The cart and what the webhook says about it, as its provider reads it (a
        provider may look the cart up: a Stripe dispute names only the PaymentIntent)."""
        provider = self.providers.get(cmd.provider_id)
        if provider is None:
            return HandleResult("ignored", note=f"provider {cmd.provider_id!r} not installed")
        action = await provider.resolve_webhook(cmd.headers, cmd.payload)
        if action is None or action.cart_id is None:
            return HandleResult("ignored", note="webhook means nothing to us")
        return action.cart_id, action.notification(cmd.provider_id)


_NOTHING = Decision("ignored")


def _collection(
    loaded: Loaded | None, cmd: commands.UpdateCart | commands.CompleteCheckout
) -> PaymentCollection:
    """The cart's collection, or a new one: the two topics are not ordered against each
    other, so a checkout may come first."""
    if loaded is not None:
        return loaded.collection
    return PaymentCollection.for_cart(
        cmd.cart_id, cmd.region_id, cmd.currency_code, cmd.amount, cmd.now
    )


def _operation(
    loaded: Loaded | None, cmd: commands.PaymentCommand, lease: Lease, conflict: str | None
) -> Decision:
    if loaded is None:
        note = "idempotency_conflict" if conflict is not None else "payment_not_found"
        return Decision("orphan", events=unknown_payment_answer(cmd, conflict), note=note)
    return loaded.collection.payment_command(cmd, lease, conflict)


def _notify(
    loaded: Loaded | None, event_id: str, notification: Notification, now: datetime
) -> Decision:
    if loaded is None:
        return Decision("ignored", note="no collection for the webhook's cart")
    return loaded.collection.notify(event_id, notification, now)
