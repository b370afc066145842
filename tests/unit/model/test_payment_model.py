"""The stateful model test of issue 16: the service layer against a payment processor.

A Hypothesis state machine drives the real handlers, reconciler and relay over the
in-memory store and publisher, and two fake processors (`fake`, and `auto`, which
captures on authorization) that keep their own ledger, honour idempotency keys
with a window, and can lose answers, fail transiently, fail status queries,
crash the service mid-call, and send webhooks late, twice or out of order.

After every step: the books and the processors' ledgers agree on every hold the
books know, no hold is unknown to the books, amounts stay within bounds on both
sides, every event id keeps its payload, a replayed event gives the answer it gave
before. At the end (quiescence: faults off, every crashed event redelivered, the
clock past every lease and back-off, reconciler and relay run until nothing
changes): exactly the payment's hold is live per cart, the books equal the
ledger, nothing is unknown, reserved or unsent.

Bounded for `make test`; `make prove` runs it longer (PAYMENTS_MODEL_EXAMPLES,
PAYMENTS_MODEL_STEPS).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections import defaultdict
from datetime import timedelta
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import event as observe_event
from hypothesis import strategies as st
from hypothesis.stateful import initialize, invariant, rule

from schemas.inbound import ProviderWebhook
from service.domain import derived_ids as ids
from service.domain.authorization import authorization_call
from service.domain.model import OutboxEvent, PaymentCollection
from service.handlers import HandleResult, PaymentService
from tests.support.model_invariants import WireInvariants
from tests.support.processor import Hold
from tests.support.world import World, claim_of, handle

EXAMPLES = int(os.environ.get("PAYMENTS_MODEL_EXAMPLES", "40"))
STEPS = int(os.environ.get("PAYMENTS_MODEL_STEPS", "40"))

CARTS = ("cart_a", "cart_b")
PROVIDERS = ("fake", "auto")
KEYS = ("k1", "k2", "k3")
AMOUNTS = (0, 3000, 5000, 7000)
COMMAND_IDS = ("cmd_1", "cmd_2", "cmd_3", "cmd_4")
FAULTS = ("lose", "transient")
REGIONS = {"eu": ("fake", "auto"), "us": ("fake",)}


class Crash(BaseException):
    """The service process dies in the middle of a provider call (not an Exception:
    nothing in the service may catch it, as nothing catches a SIGKILL)."""


class PaymentModel(WireInvariants):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.world = World("fake", "auto")
        self.world.processors["auto"].capture_on_authorize = True
        self.world.registry.regions.update(REGIONS)
        #: The storefront's view: last cart amount and region sent per cart.
        self.carts: dict[str, tuple[int, str]] = {}
        #: Every inbound event delivered: id -> (kind, payload), for replays.
        self.delivered: dict[str, tuple[str, Any]] = {}
        #: What each event was answered with: event ids it published.
        self.answers: dict[str, set[str]] = defaultdict(set)
        #: Events whose handling crashed: redelivered (at-least-once) later.
        self.redeliver: list[str] = []
        self.webhooks: list[dict[str, Any]] = []
        self.payloads: dict[str, dict[str, Any]] = {}
        self.seq = 0

    # -- plumbing --------------------------------------------------------------------

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        try:
            self.quiesce()
        finally:
            self.loop.close()

    def new_id(self, prefix: str) -> str:
        self.seq += 1
        return f"{prefix}_{self.seq}"

    def published_ids(self) -> set[str]:
        return {e.id for e in self.world.publisher.published}

    async def _service_for(self, event_id: str, kind: str, payload: Any) -> PaymentService:
        """Every other event is handled as the consumer handles a batch: through the
        store's batch view, prefetched by cart or by payment, with the command's claim
        made up front; so the batch's shortcuts obey the same invariants."""
        if int(event_id.rsplit("_", 1)[1]) % 2:
            return self.world.service
        batch = self.world.store.batch()
        if kind == "command":
            await batch.prefetch_by_payment([payload.payment_id])
            await batch.prefetch_commands([claim_of(event_id, payload)])
        elif kind in ("cart", "checkout"):
            await batch.prefetch_by_cart([payload.cart_id])
        return self.world.service.using(batch)

    async def _handle(self, event_id: str, publish: bool = True) -> HandleResult | None:
        kind, payload = self.delivered[event_id]
        service = await self._service_for(event_id, kind, payload)
        before = self.published_ids()
        try:
            if kind == "cart" or kind == "checkout" or kind == "command":
                result = await handle(service, event_id, payload)
            else:
                result = await handle(service, event_id, payload)
        except Crash:
            self.redeliver.append(event_id)
            return None
        if publish:
            await self.world.deliver(result)
        self.answers[event_id] |= self.published_ids() - before
        return result

    def deliver(self, kind: str, payload: Any, publish: bool = True) -> None:
        event_id = self.new_id(kind)
        self.delivered[event_id] = (kind, payload)
        self.run(self._handle(event_id, publish))

    async def _payment_id(self, cart_id: str) -> str | None:
        loaded = await self.world.store.load_by_cart(cart_id)
        if loaded is None or loaded.collection.payment is None:
            return None
        return loaded.collection.payment.id

    # -- rules -------------------------------------------------------------------------

    @initialize()
    def start(self) -> None:
        self.world.advance(seconds=1)

    @rule(
        cart=st.sampled_from(CARTS),
        amount=st.sampled_from(AMOUNTS),
        region=st.sampled_from(tuple(REGIONS)),
        provider=st.none() | st.sampled_from(PROVIDERS),
        publish=st.booleans(),
    )
    def cart_updated(
        self, cart: str, amount: int, region: str, provider: str | None, publish: bool
    ) -> None:
        from schemas.inbound import CartUpdated

        self.seq += 1
        self.carts[cart] = (amount, region)
        body: dict[str, Any] = {
            "cart_id": cart,
            "region_id": region,
            "currency_code": "usd",
            "amount": amount,
            "version": self.seq,
        }
        if provider is not None:
            body["provider_id"] = provider
        self.deliver("cart", CartUpdated.model_validate(body), publish)

    @rule(
        cart=st.sampled_from(CARTS),
        key=st.sampled_from(KEYS),
        provider=st.sampled_from(PROVIDERS),
        method=st.sampled_from([None, None, None, None, "declined", "3ds"]),
        three_ds=st.sampled_from([None, "succeeded", "failed"]),
        stale_amount=st.sampled_from([False, False, False, True]),
        publish=st.booleans(),
    )
    def checkout(
        self,
        cart: str,
        key: str,
        provider: str,
        method: str | None,
        three_ds: str | None,
        stale_amount: bool,
        publish: bool,
    ) -> None:
        from schemas.inbound import CheckoutCompleted

        amount, region = self.carts.get(cart, (5000, "eu"))
        if stale_amount:
            amount = 5000
        payment_data: dict[str, Any] = {}
        if method is not None:
            payment_data["payment_method"] = method
        if three_ds is not None:
            payment_data["action_result"] = three_ds
        data = CheckoutCompleted.model_validate(
            {
                "cart_id": cart,
                "idempotency_key": f"{cart}:{key}" if key != "k3" else key,
                "region_id": region,
                "currency_code": "usd",
                "amount": amount,
                "provider_id": provider,
                "payment_data": payment_data or None,
            }
        )
        self.deliver("checkout", data, publish)

    @rule(
        cart=st.sampled_from(CARTS),
        operation=st.sampled_from(["capture", "capture", "refund", "refund", "cancel"]),
        amount=st.sampled_from([None, 1000, 2500, 10**6]),
        command_id=st.none() | st.sampled_from(COMMAND_IDS),
        publish=st.booleans(),
    )
    def another_command(
        self,
        cart: str,
        operation: str,
        amount: int | None,
        command_id: str | None,
        publish: bool,
    ) -> None:
        # Commands twice as likely as other steps: they are where money moves.
        self.command(cart, operation, amount, command_id, publish)

    @rule(
        cart=st.sampled_from(CARTS),
        operation=st.sampled_from(["capture", "capture", "refund", "refund", "cancel"]),
        amount=st.sampled_from([None, 1000, 2500, 10**6]),
        command_id=st.none() | st.sampled_from(COMMAND_IDS),
        publish=st.booleans(),
    )
    def command(
        self,
        cart: str,
        operation: str,
        amount: int | None,
        command_id: str | None,
        publish: bool,
    ) -> None:
        from schemas.inbound import AdminCancel, AdminCapture, AdminRefund

        payment_id = self.run(self._payment_id(cart)) or ids.payment_id(
            ids.session_id(ids.collection_id(cart), "fake", 1)
        )
        body: dict[str, Any] = {"payment_id": payment_id, "requested_by": "ops"}
        if amount is not None and operation != "cancel":
            body["amount"] = amount
        model: Any = {"capture": AdminCapture, "refund": AdminRefund, "cancel": AdminCancel}
        data = model[operation].model_validate(body)
        event_id = command_id or self.new_id("cmd")
        if event_id in self.delivered:
            return  # a reused id is a replay (see `replay`), not a new command
        self.delivered[event_id] = ("command", data)
        self.run(self._handle(event_id, publish))

    @rule(
        cart=st.sampled_from(CARTS),
        kinds=st.lists(
            st.sampled_from(["checkout", "capture", "refund", "cancel", "cart"]),
            min_size=2,
            max_size=3,
        ),
        key=st.sampled_from(KEYS),
        provider=st.sampled_from(PROVIDERS),
        amount=st.sampled_from([None, 1000, 2500]),
    )
    def race(
        self, cart: str, kinds: list[str], key: str, provider: str, amount: int | None
    ) -> None:
        """Events of one cart handled at the same time (two instances during a
        rebalance, the two topics of a cart): they interleave at provider calls."""
        from schemas.inbound import (
            AdminCancel,
            AdminCapture,
            AdminRefund,
            CartUpdated,
            CheckoutCompleted,
        )

        cart_amount, region = self.carts.get(cart, (5000, "eu"))
        payment_id = self.run(self._payment_id(cart)) or ids.payment_id(
            ids.session_id(ids.collection_id(cart), "fake", 1)
        )
        event_ids = []
        for n, kind in enumerate(kinds):
            payload: Any
            if kind == "checkout":
                payload = CheckoutCompleted.model_validate(
                    {
                        "cart_id": cart,
                        "idempotency_key": f"{cart}:{key}:{n}",
                        "region_id": region,
                        "currency_code": "usd",
                        "amount": cart_amount,
                        "provider_id": provider,
                    }
                )
            elif kind == "cart":
                self.seq += 1
                self.carts[cart] = (amount or 7000, region)
                payload = CartUpdated.model_validate(
                    {
                        "cart_id": cart,
                        "region_id": region,
                        "currency_code": "usd",
                        "amount": amount or 7000,
                        "version": self.seq,
                    }
                )
            else:
                body: dict[str, Any] = {"payment_id": payment_id, "requested_by": "ops"}
                if amount is not None and kind != "cancel":
                    body["amount"] = amount
                model: Any = {"capture": AdminCapture, "refund": AdminRefund}.get(kind, AdminCancel)
                payload = model.model_validate(body)
            event_id = self.new_id("cart" if kind == "cart" else kind)
            stored_kind = kind if kind in ("cart", "checkout") else "command"
            self.delivered[event_id] = (stored_kind, payload)
            event_ids.append(event_id)

        async def together() -> None:
            await asyncio.gather(*(self._handle(e) for e in event_ids))

        self.run(together())

    @rule(data=st.data())
    def replay(self, data: st.DataObject) -> None:
        """An event delivered again (a redelivery, or an operator's replay)."""
        if not self.delivered:
            return
        event_id = data.draw(st.sampled_from(sorted(self.delivered)), label="replayed")
        if event_id in self.redeliver:
            return  # its first handling never finished: see `restart`
        answered = self.answer_of(event_id)
        retried = self.answered_in_flight(event_id)
        self.run(self._handle(event_id))
        # The same answer: no new event ids for an event that already had one; except
        # for a command answered `operation_in_flight`, which did not take effect and
        # is decided again when sent again (as its answer asks).
        if answered and not retried:
            assert self.answer_of(event_id) == answered, (event_id, answered)

    def answered_in_flight(self, event_id: str) -> bool:
        return any(
            e.causation_id == event_id
            and e.payload.get("data", {}).get("reason") == "operation_in_flight"
            for e in self.world.publisher.published
        ) or any(
            e.causation_id == event_id
            and e.payload.get("data", {}).get("reason") == "operation_in_flight"
            for c in self.collections()
            for e in c.outbox
        )

    def answer_of(self, event_id: str) -> set[str]:
        """Ids of the events an inbound event caused, stored or published."""
        stored = [e for c in self.collections() for e in c.outbox]
        stored += [e for e in self.world.publisher.published]
        for orphan_id in self.world.store.orphans:
            found = self.run(self.world.store.orphan(orphan_id))
            stored += found.events if found is not None else []
        return {e.id for e in stored if e.causation_id == event_id}

    @rule(
        kind=st.sampled_from(["fault", "fault", "status_fail", "crash", "broker_down"]),
        provider=st.sampled_from(PROVIDERS),
        operation=st.sampled_from(["authorize", "capture", "refund", "cancel", "get_status"]),
        fault=st.sampled_from(FAULTS),
        times=st.integers(1, 4),
    )
    def trouble(self, kind: str, provider: str, operation: str, fault: str, times: int) -> None:
        """Something goes wrong next: lost answers or transient errors at the
        provider, failing status queries, the service dying mid-call, the broker."""
        processor = self.world.processors[provider]
        if kind == "fault" and operation != "get_status":
            processor.inject(operation, *[fault] * times)
        elif kind == "status_fail":
            processor.inject("get_status", *["status_fail"] * times)
        elif kind == "crash":

            async def crash() -> None:
                raise Crash(operation)

            processor.on(operation, crash)
        elif kind == "broker_down":
            self.world.publisher.fail_next = times

    @rule()
    def restart(self) -> None:
        """The process restarted: events whose handling crashed are delivered again."""
        pending, self.redeliver = self.redeliver, []
        for event_id in pending:
            self.run(self._handle(event_id))

    @rule(send=st.booleans(), provider=st.sampled_from(PROVIDERS), data=st.data())
    def webhook(self, send: bool, provider: str, data: st.DataObject) -> None:
        """The processor reports the state of one of its holds (queued), or a queued
        report arrives: any of them (late, out of order), maybe twice."""
        if send:
            holds = list(self.world.processors[provider].holds.values())
            if not holds:
                return
            hold: Hold = data.draw(st.sampled_from(holds), label="hold")
            meaning = "captured" if hold.captured else "canceled" if hold.voided else "authorized"
            self.webhooks.append(
                {
                    "provider_id": provider,
                    "meaning": meaning,
                    "cart_id": hold.cart_id,
                    "session_id": hold.session_id,
                    "amount": hold.captured if meaning == "captured" else hold.amount,
                    "data": {"hold_id": hold.id},
                }
            )
            return
        if not self.webhooks:
            return
        index = data.draw(st.integers(0, len(self.webhooks) - 1), label="webhook")
        raw = self.webhooks.pop(index)
        payload = ProviderWebhook.model_validate(
            {
                "provider_id": raw["provider_id"],
                "received_at": self.world.now.isoformat(),
                "headers": {},
                "payload": json.dumps(raw),
            }
        )
        event_id = self.new_id("wh")
        self.delivered[event_id] = ("webhook", payload)
        self.run(self._handle(event_id))
        if data.draw(st.booleans(), label="twice"):
            self.run(self._handle(event_id))

    @rule(
        kind=st.sampled_from(["reconciler", "relay", "clock", "clock"]),
        seconds=st.sampled_from([1, 6, 30, 120, 3600, 25 * 3600]),
    )
    def time_passes(self, kind: str, seconds: int) -> None:
        """Background loops run, or the clock moves (past leases, back-offs, the
        provider's idempotency window)."""
        if kind == "clock":
            self.world.advance(seconds=seconds)
        elif kind == "relay":
            self.run(self.world.relay.run_once(timedelta(seconds=5)))
        else:
            # The reconciler may die mid-pass; the next pass picks it up.
            with contextlib.suppress(Crash):
                self.run(self.world.reconcile())

    # -- invariants ----------------------------------------------------------------------

    def collections(self) -> list[PaymentCollection]:
        return self.world.store.collections()

    def holds(self, cart_id: str) -> list[Hold]:
        return [h for p in self.world.processors.values() for h in p.live_holds(cart_id)]

    @staticmethod
    def accounted_keys(collection: PaymentCollection) -> set[str]:
        """Provider keys of the holds the books know about (payment, unknown, to void)."""
        keys = {v.authorization_key for v in collection.voids}
        keys |= {
            authorization_call(collection, s).idempotency_key
            for s in collection.sessions
            if s.needs_reconcile
        }
        payment = collection.payment
        if payment is not None:
            session = collection.session_by_id(payment.session_id)
            if session is not None and session.authorization_key is not None:
                keys.add(authorization_call(collection, session).idempotency_key)
        return keys

    @invariant()
    def amounts_within_bounds(self) -> None:
        for collection in self.collections():
            payment = collection.payment
            if payment is not None:
                assert 0 <= payment.captured_total <= payment.amount, collection.cart_id
                assert 0 <= payment.refunded_total <= payment.captured_total, collection.cart_id
                assert payment.captured_total + payment.pending_capture <= payment.amount
        for processor in self.world.processors.values():
            for hold in processor.holds.values():
                assert 0 <= hold.captured <= hold.amount
                assert 0 <= hold.refunded <= hold.captured

    @invariant()
    def every_hold_is_known_to_the_books(self) -> None:
        crashed_carts = {getattr(self.delivered[e][1], "cart_id", None) for e in self.redeliver}
        for collection in self.collections():
            if collection.cart_id in crashed_carts:
                continue  # its checkout is redelivered: the same key finds the hold again
            known = self.accounted_keys(collection)
            unknown = [h for h in self.holds(collection.cart_id) if h.key not in known]
            assert unknown == [], f"holds the books do not know: {unknown}"

    # -- quiescence ----------------------------------------------------------------------

    def observe(self) -> None:
        """What the example went through (`--hypothesis-show-statistics`)."""
        operations = [op for p in self.world.processors.values() for op in p.operations]
        for kind in ("authorize", "capture", "refund", "cancel"):
            if any(op == kind for op, _, _ in operations):
                observe_event(f"provider: {kind}")
        if any(key.endswith(":void") for _, key, _ in operations):
            observe_event("lost authorization voided")
        if any(len(self.holds(c)) > 1 for c in CARTS):
            observe_event("two live holds on one cart before quiescence")
        if self.redeliver:
            observe_event("crashed handler redelivered")
        if self.world.store.conflicts:
            observe_event("lost write race, decided again")
        if any(c.payment and c.payment.refunds for c in self.collections()):
            observe_event("books: refunded")

    def quiesce(self) -> None:
        world = self.world
        self.observe()
        for processor in world.processors.values():
            processor.faults.clear()
            processor.hooks.clear()
        world.publisher.fail_next = 0
        for _ in range(3):
            self.restart()
        for _ in range(12):
            world.advance(seconds=600)
            self.run(world.reconcile())
            self.run(world.relay.run_once(timedelta(seconds=5)))
        for collection in self.collections():
            where = collection.cart_id
            assert not collection.needs_reconcile, f"{where}: still unknown or reserved"
            assert collection.unsent_events == [], f"{where}: events never published"
            live = self.holds(where)
            payment = collection.payment
            if payment is None or payment.provider_id == "system":
                assert live == [], f"{where}: live holds without a payment: {live}"
                continue
            holds = {h.id: h for p in world.processors.values() for h in p.holds.values()}
            hold = holds.get(str(payment.data.get("hold_id")))
            assert hold is not None, f"{where}: the payment names no hold of the provider"
            others = [h for h in live if h.id != hold.id]
            assert others == [], f"{where}: live authorizations besides the payment: {others}"
            assert payment.amount == hold.amount, where
            assert payment.is_canceled == hold.voided, where
            if not payment.is_canceled:
                assert payment.captured_total == hold.captured, where
                assert payment.refunded_total == hold.refunded, where
        assert {o for o in self.world.store.orphans if self.world.store.orphans[o][1]} == set()
        published = [e for e in world.publisher.published if isinstance(e, OutboxEvent)]
        assert len({e.id for e in published}) <= len(published)


PaymentModel.TestCase.settings = settings(
    max_examples=EXAMPLES,
    stateful_step_count=STEPS,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestPaymentModel = PaymentModel.TestCase
