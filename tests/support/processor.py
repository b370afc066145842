"""A fake payment processor for service-layer tests: a ledger, idempotency keys, faults.

It behaves like a card processor as far as money goes:

* its own ledger of holds (authorizations) with what was captured, refunded and
  voided on each, and a list of every effective operation;
* idempotency keys: the same key with the same parameters gives the first
  answer and does nothing new; the same key with other parameters is refused
  (`idempotency_key_reuse`, as Stripe); keys are forgotten after `key_window`
  (Stripe: 24 h), after which a repeated call is a new operation;
* a status query that looks the operation up in its records (not in the key
  cache: a PaymentIntent or refund stays findable after its key is forgotten)
  and answers `not_found` when it never happened;
* injected faults, consumed in order per operation: `lose` (acts, the answer is
  lost: unknown), `transient` (does not act), `status_fail` (a status query
  fails), `requires_more` for 3-D Secure; webhooks queued for late, repeated or
  out-of-order delivery.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from service.domain.calls import ProviderCall
from service.domain.outcomes import OutcomeKind, ProviderOutcome
from service.ports.providers import PaymentProvider, SavedPaymentMethod, WebhookAction

IDEMPOTENCY_KEY_REUSE = "idempotency_key_reuse"


@dataclass
class Hold:
    id: str
    key: str
    session_id: str
    cart_id: str
    amount: int
    captured: int = 0
    refunded: int = 0
    voided: bool = False

    @property
    def live(self) -> bool:
        """Money held or taken from the card and not given back."""
        return not self.voided and (self.captured - self.refunded > 0 or self.captured == 0)


@dataclass
class Record:
    """One effective operation: what a status query finds."""

    operation: str
    key: str
    params: tuple[Any, ...]
    outcome: ProviderOutcome
    at: datetime


@dataclass
class Processor(PaymentProvider):
    """One provider, registered under `id`. `clock` is shared with the service."""

    id: str = "fake"
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    capture_on_authorize: bool = False
    key_window: timedelta = timedelta(hours=24)
    holds: dict[str, Hold] = field(default_factory=dict)
    records: dict[tuple[str, str], Record] = field(default_factory=dict)
    keys: dict[tuple[str, str], Record] = field(default_factory=dict)
    operations: list[tuple[str, str, int]] = field(default_factory=list)
    """(operation, idempotency key, amount) of every operation that took effect."""
    faults: dict[str, deque[str]] = field(default_factory=lambda: defaultdict(deque))
    webhooks: list[WebhookAction] = field(default_factory=list)
    calls: list[tuple[str, str]] = field(default_factory=list)
    """(method, idempotency key) of every call received, status queries included."""
    declines: set[str] = field(default_factory=set)
    """Idempotency keys whose authorization is declined."""
    hooks: dict[str, deque[Callable[[], Awaitable[None]]]] = field(
        default_factory=lambda: defaultdict(deque)
    )
    """Coroutines run (once each, in order) when a call of that method arrives:
    a test plays what happens elsewhere while the provider is still working."""

    # -- scripting ----------------------------------------------------------------

    def inject(self, operation: str, *faults: str) -> None:
        self.faults[operation].extend(faults)

    def on(self, method: str, hook: Callable[[], Awaitable[None]]) -> None:
        self.hooks[method].append(hook)

    async def _hook(self, method: str) -> None:
        queue = self.hooks.get(method)
        if queue:
            await queue.popleft()()

    def _fault(self, operation: str) -> str | None:
        queue = self.faults.get(operation)
        return queue.popleft() if queue else None

    def live_holds(self, cart_id: str) -> list[Hold]:
        return [h for h in self.holds.values() if h.cart_id == cart_id and h.live]

    def count(self, operation: str) -> int:
        return sum(1 for op, _, _ in self.operations if op == operation)

    # -- idempotency ----------------------------------------------------------------

    def _replay(self, operation: str, call: ProviderCall, params: tuple[Any, ...]) -> Any:
        """The stored answer for a known key, a refusal for other parameters, or None."""
        now = self.clock()
        seen = self.keys.get((operation, call.idempotency_key))
        if seen is not None and now - seen.at > self.key_window:
            del self.keys[(operation, call.idempotency_key)]
            seen = None
        if seen is None:
            return None
        if seen.params != params:
            return ProviderOutcome.failed(
                f"key {call.idempotency_key!r} was used with other parameters",
                code=IDEMPOTENCY_KEY_REUSE,
            )
        return seen.outcome

    def _remember(
        self, operation: str, call: ProviderCall, params: tuple[Any, ...], outcome: ProviderOutcome
    ) -> ProviderOutcome:
        record = Record(operation, call.idempotency_key, params, outcome, self.clock())
        self.keys[(operation, call.idempotency_key)] = record
        if outcome.kind in (OutcomeKind.SUCCEEDED, OutcomeKind.DECLINED):
            self.records[(operation, call.idempotency_key)] = record
        return outcome

    async def _money(
        self,
        operation: str,
        call: ProviderCall,
        params: tuple[Any, ...],
        act: Callable[[], ProviderOutcome],
    ) -> ProviderOutcome:
        self.calls.append((operation, call.idempotency_key))
        # A network round trip: other handlers run meanwhile (interleavings).
        await asyncio.sleep(0)
        await self._hook(operation)
        fault = self._fault(operation)
        if fault == "transient":
            return ProviderOutcome.transient(f"{self.id}: injected transient error")
        replayed = self._replay(operation, call, params)
        outcome = (
            replayed if replayed is not None else self._remember(operation, call, params, act())
        )
        if fault == "lose":
            return ProviderOutcome.unknown(f"{self.id}: answer lost after acting")
        return outcome

    # -- the provider port ----------------------------------------------------------

    async def initiate(self, call: ProviderCall) -> ProviderOutcome:
        return ProviderOutcome.succeeded({"intent": f"pi_{call.session_id}"})

    async def update(self, call: ProviderCall) -> ProviderOutcome:
        return ProviderOutcome.succeeded(dict(call.data))

    async def update_data(self, call: ProviderCall) -> ProviderOutcome:
        return ProviderOutcome.succeeded({**call.data, **call.payment_data})

    async def delete(self, call: ProviderCall) -> ProviderOutcome:
        return ProviderOutcome.succeeded({})

    async def retrieve(self, call: ProviderCall) -> ProviderOutcome:
        return ProviderOutcome.succeeded(dict(call.data))

    async def payment_data(self, call: ProviderCall) -> dict[str, Any]:
        return dict(call.data)

    async def list_payment_methods(self, customer_id: str) -> list[SavedPaymentMethod]:
        return []

    async def authorize(self, call: ProviderCall) -> ProviderOutcome:
        params = (call.session_id, call.amount, call.currency_code)

        def act() -> ProviderOutcome:
            method = call.payment_data.get("payment_method", call.data.get("payment_method"))
            if call.idempotency_key in self.declines or method == "declined":
                self.operations.append(("decline", call.idempotency_key, call.amount))
                return ProviderOutcome.declined("card declined", "card_declined")
            hold = Hold(
                id=f"{self.id}_hold_{len(self.holds) + 1}",
                key=call.idempotency_key,
                session_id=call.session_id,
                cart_id=call.cart_id,
                amount=call.amount,
            )
            self.holds[hold.id] = hold
            self.operations.append(("authorize", call.idempotency_key, call.amount))
            if self.capture_on_authorize:
                hold.captured = hold.amount
                self.operations.append(("capture", call.idempotency_key, call.amount))
            return ProviderOutcome.succeeded(
                {"hold_id": hold.id},
                captured=self.capture_on_authorize,
                amount=call.amount,
                reference=hold.id,
            )

        method = call.payment_data.get("payment_method", call.data.get("payment_method"))
        if method == "3ds" and call.payment_data.get("action_result") is None:
            self.calls.append(("authorize", call.idempotency_key))
            return ProviderOutcome.requires_more({"type": "redirect_to_url", "url": "x"})
        return await self._money("authorize", call, params, act)

    def _hold(self, call: ProviderCall) -> Hold | None:
        hold_id = call.data.get("hold_id")
        return self.holds.get(hold_id) if isinstance(hold_id, str) else None

    async def capture(self, call: ProviderCall) -> ProviderOutcome:
        params = (call.session_id, call.payment_id, call.amount)

        def act() -> ProviderOutcome:
            hold = self._hold(call)
            if hold is None or hold.voided:
                return ProviderOutcome.failed("no such authorization")
            if hold.captured + call.amount > hold.amount:
                return ProviderOutcome.failed("amount exceeds the authorization")
            hold.captured += call.amount
            self.operations.append(("capture", call.idempotency_key, call.amount))
            return ProviderOutcome.succeeded({"capture": call.idempotency_key}, amount=call.amount)

        return await self._money("capture", call, params, act)

    async def refund(self, call: ProviderCall) -> ProviderOutcome:
        params = (call.session_id, call.payment_id, call.amount)

        def act() -> ProviderOutcome:
            hold = self._hold(call)
            if hold is None:
                return ProviderOutcome.failed("no such charge")
            if hold.refunded + call.amount > hold.captured:
                return ProviderOutcome.failed("amount exceeds what was captured")
            hold.refunded += call.amount
            self.operations.append(("refund", call.idempotency_key, call.amount))
            return ProviderOutcome.succeeded({"refund": call.idempotency_key}, amount=call.amount)

        return await self._money("refund", call, params, act)

    async def cancel(self, call: ProviderCall) -> ProviderOutcome:
        params = (call.session_id, call.payment_id)

        def act() -> ProviderOutcome:
            hold = self._hold(call)
            if hold is None:
                return ProviderOutcome.failed("no such authorization")
            if hold.voided:
                return ProviderOutcome.succeeded({})
            if hold.captured > 0 and not call.idempotency_key.endswith(":void"):
                return ProviderOutcome.failed("already captured")
            # A void of a lost authorization also reverses a capture made on it
            # (capture on authorization): the customer gets everything back.
            hold.voided = True
            self.operations.append(("cancel", call.idempotency_key, hold.amount))
            return ProviderOutcome.succeeded({})

        return await self._money("cancel", call, params, act)

    async def get_status(self, call: ProviderCall) -> ProviderOutcome:
        self.calls.append(("get_status", call.idempotency_key))
        await asyncio.sleep(0)
        await self._hook("get_status")
        if self._fault("get_status") == "status_fail":
            return ProviderOutcome.transient(f"{self.id}: status query failed")
        record = self.records.get((call.operation, call.idempotency_key))
        if record is None:
            return ProviderOutcome.not_found("no record of this operation")
        return record.outcome

    def verify_webhook(self, headers: Mapping[str, str], body: bytes, now: datetime) -> None:
        return None

    def interpret_webhook(self, headers: Mapping[str, str], payload: str) -> WebhookAction | None:
        raw = json.loads(payload)
        return WebhookAction(
            meaning=raw["meaning"],
            session_id=raw.get("session_id"),
            cart_id=raw.get("cart_id"),
            provider_reference=raw.get("reference", ""),
            amount=raw.get("amount"),
            data=raw.get("data") or {},
        )

    async def close(self) -> None:
        return None


@dataclass
class Registry:
    """The provider registry the service sees: these providers, enabled everywhere
    unless `regions` says otherwise."""

    providers: Mapping[str, PaymentProvider]
    regions: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def get(self, provider_id: str) -> PaymentProvider | None:
        return self.providers.get(provider_id)

    def enabled_for_region(self, region_id: str) -> tuple[str, ...]:
        return self.regions.get(region_id, tuple(self.providers))
