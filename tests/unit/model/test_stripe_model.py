"""Issue 22's stateful model test: the service layer against a Stripe-faithful processor.

A Hypothesis state machine drives the real handlers, reconciler and relay over the
in-memory store and publisher, with two Stripe accounts as the Stripe model of
`tests/support/stripe_processor.py` sees them (`stripe`: manual capture, multicapture
on or off for the example; `stripe_auto`: automatic capture) and a generic `manual`
provider (`tests/support/processor.py`). It plays carts, checkouts (3-D Secure,
declines, another session paying instead), admin captures, refunds and cancels,
what happens at Stripe outside the service (dashboard capture, refund and cancel,
the automatic cancel of an uncaptured authorization after 7 days, a customer
finishing 3-D Secure late, refunds settling or failing, disputes), faults (lost
answers, transient errors, status queries that cannot tell, the service dying
before or after Stripe acted, the broker down), time (leases, back-offs, Stripe's
24-hour key window, the 7 days), and Stripe's events delivered late, twice (as a
redelivery of the same body, a replay under another envelope id, or a second
Event object for the same change) and in any order, through the real webhook path,
or never (lost for good: an endpoint misconfigured for days). The provider audit
(`service/auditor.py`) runs as the background loop does, and reads from the Stripe
model what the adapter would read from Stripe (`StripeProcessor.read_objects`).

After every step: amounts within bounds in the books and in Stripe's ledger; a
payment's books never claim more than its PaymentIntent (same authorization and
currency, captured no more than received); every event id keeps its payload; one
answer per cause. At quiescence (faults off, crashed events redelivered, Stripe's
pending refunds settled and open disputes decided, every Stripe event not lost
delivered, newest first, the clock past every lease and back-off, reconciler, audit
and relay run round after round): for every cart at most one live hold, and it is
the payment's; for every payment the books equal its PaymentIntent's ledger
(authorized, captured, refunded, released, canceled, disputes), also where only the
audit can tell (a dashboard refund, a dispute or an expiry whose webhook was lost);
nothing unknown or reserved without a
`needs_attention` answer; nothing unsent.

Bounded for `make test` (100 examples of 40 steps, about 15 s while it passes);
`make prove` runs it longer (PAYMENTS_MODEL_EXAMPLES, PAYMENTS_MODEL_STEPS). A failure
prints the shortest sequence of steps Hypothesis found, and the blob to replay it
(`@reproduce_failure`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import defaultdict
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import event as observe_event
from hypothesis import strategies as st
from hypothesis.stateful import initialize, invariant, rule

from schemas.inbound import (
    AdminCancel,
    AdminCapture,
    AdminRefund,
    CartUpdated,
    CheckoutCompleted,
)
from service.auditor import Auditor
from service.domain import derived_ids as ids
from service.domain.model import OutboxEvent, PaymentCollection
from service.handlers import HandleResult, PaymentService
from tests.support.model_invariants import WireInvariants
from tests.support.processor import Processor
from tests.support.stripe_processor import (
    PM_3DS,
    PM_DECLINED,
    PM_OK,
    Ledger,
    PaymentIntent,
    StripeProcessor,
    as_ledger,
    books_of,
    envelope_id,
    needs_attention,
    webhook_of,
)
from tests.support.world import World, claim_of, handle

# More examples by default than issue 16's model (about 0.1 s each): fewer than ~100
# rarely reach a PaymentIntent that Stripe and the dashboard both act on.
EXAMPLES = int(os.environ.get("PAYMENTS_MODEL_EXAMPLES", "100"))
STEPS = int(os.environ.get("PAYMENTS_MODEL_STEPS", "40"))

CARTS = ("cart_a", "cart_b")
STRIPES = ("stripe", "stripe_auto")
PROVIDERS = (*STRIPES, "manual")
#: Checkouts mostly on Stripe (the provider under test), a few on `manual`.
CHECKOUT_PROVIDERS = ("stripe", "stripe", "stripe", "stripe_auto", "stripe_auto", "manual")
REGIONS = {"eu": PROVIDERS, "us": ("manual",)}
REGION_CHOICES = ("eu", "eu", "eu", "us")
KEYS = ("k1", "k2", "k3")
AMOUNTS = (0, 3000, 5000, 5000, 7000)
CURRENCIES = ("usd", "usd", "eur")
COMMAND_IDS = ("cmd_1", "cmd_2", "cmd_3", "cmd_4")
OPERATIONS = ("capture", "capture", "refund", "refund", "cancel")
COMMAND_AMOUNTS = (None, 1000, 2500, 10**6)
STRIPE_METHODS = {None: PM_OK, "declined": PM_DECLINED, "3ds": PM_3DS}
QUIESCENCE_ROUNDS = 16
AUDIT_WINDOW = timedelta(days=3650)
"""The audit reads payments whose collection changed within its window (a setting, 30
days by default); an example's clock runs for months (8-day steps), and a payment left
quiet for longer than the window is out of the audit's reach by design, not a bug."""


class Crash(BaseException):
    """The service process dies in the middle of a provider call (not an Exception:
    nothing in the service may catch it, as nothing catches a SIGKILL)."""


class StripeModel(WireInvariants):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.world = World("manual")
        self.world.registry.regions.update(REGIONS)
        self.stripes: dict[str, StripeProcessor] = {}
        #: The storefront's view: amount, region and currency last sent per cart.
        self.carts: dict[str, tuple[int, str, str]] = {}
        #: Every inbound event delivered: id -> (kind, payload, n), for replays.
        self.delivered: dict[str, tuple[str, Any, int]] = {}
        self.answers: dict[str, set[str]] = defaultdict(set)
        #: Events whose handling crashed: redelivered (at-least-once) later.
        self.redeliver: list[str] = []
        self.payloads: dict[str, dict[str, Any]] = {}
        #: Stripe events never delivered (lost for good): only the audit can tell.
        self.lost: list[dict[str, Any]] = []
        self.auditor = Auditor(
            self.world.service,
            self.world.relay,
            self.world.metrics,
            window=AUDIT_WINDOW,
            batch=10,
        )
        self.seq = 0

    # -- plumbing --------------------------------------------------------------------

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        try:
            if self.stripes:
                self.quiesce()
        finally:
            self.loop.close()

    def new_id(self, prefix: str) -> str:
        self.seq += 1
        return f"{prefix}_{self.seq}"

    @property
    def manual(self) -> Processor:
        return self.world.processors["manual"]

    def published_ids(self) -> set[str]:
        return {e.id for e in self.world.publisher.published}

    async def _service_for(self, event_id: str) -> PaymentService:
        """Every other event is handled as the consumer handles a batch: through the
        store's batch view, prefetched by cart or by payment, with the command's claim
        made up front; so the batch's shortcuts obey the same invariants."""
        kind, payload, n = self.delivered[event_id]
        if n % 2:
            return self.world.service
        batch = self.world.store.batch()
        if kind == "command":
            await batch.prefetch_by_payment([payload.payment_id])
            await batch.prefetch_commands([claim_of(event_id, payload)])
        elif kind in ("cart", "checkout"):
            await batch.prefetch_by_cart([payload.cart_id])
        return self.world.service.using(batch)

    async def _handle(self, event_id: str, publish: bool = True) -> HandleResult | None:
        _, payload, _ = self.delivered[event_id]
        service = await self._service_for(event_id)
        before = self.published_ids()
        try:
            result = await handle(service, event_id, payload)
        except Crash:
            self.redeliver.append(event_id)
            return None
        if publish:
            await self.world.deliver(result)
        self.answers[event_id] |= self.published_ids() - before
        return result

    def remember(self, event_id: str, kind: str, payload: Any) -> None:
        self.seq += 1
        self.delivered[event_id] = (kind, payload, self.seq)

    def deliver(self, kind: str, payload: Any, publish: bool = True) -> None:
        event_id = self.new_id(kind)
        self.remember(event_id, kind, payload)
        self.run(self._handle(event_id, publish))

    async def _payment_id(self, cart_id: str) -> str | None:
        loaded = await self.world.store.load_by_cart(cart_id)
        if loaded is None or loaded.collection.payment is None:
            return None
        return loaded.collection.payment.id

    def payment_id_of(self, cart: str) -> str:
        return self.run(self._payment_id(cart)) or ids.payment_id(
            ids.session_id(ids.collection_id(cart), "stripe", 1)
        )

    def deliver_stripe_event(self, provider: str, event: dict[str, Any], envelope: str) -> None:
        """A Stripe event through the webhook path, under the envelope id the HTTP side
        gives it (the same for a redelivery of the same body)."""
        data = webhook_of(provider, event, self.world.now)
        if envelope not in self.delivered:
            self.remember(envelope, "webhook", data)
        self.run(self._handle(envelope))

    # -- the storefront and the admins ------------------------------------------------

    @initialize(multicapture=st.booleans())
    def start(self, multicapture: bool) -> None:
        self.world.advance(seconds=1)
        clock = self.world.clock
        self.stripes["stripe"] = self.world.install(
            StripeProcessor("stripe", clock=clock, multicapture=multicapture)
        )
        self.stripes["stripe_auto"] = self.world.install(
            StripeProcessor("stripe_auto", clock=clock, automatic=True)
        )

    @rule(
        cart=st.sampled_from(CARTS),
        amount=st.sampled_from(AMOUNTS),
        region=st.sampled_from(REGION_CHOICES),
        currency=st.sampled_from(CURRENCIES),
        provider=st.none() | st.sampled_from(PROVIDERS),
        publish=st.booleans(),
    )
    def cart_updated(
        self,
        cart: str,
        amount: int,
        region: str,
        currency: str,
        provider: str | None,
        publish: bool,
    ) -> None:
        self.seq += 1
        self.carts[cart] = (amount, region, currency)
        body: dict[str, Any] = {
            "cart_id": cart,
            "region_id": region,
            "currency_code": currency,
            "amount": amount,
            "version": self.seq,
        }
        if provider is not None:
            body["provider_id"] = provider
        self.deliver("cart", CartUpdated.model_validate(body), publish)

    def checkout_payload(
        self,
        cart: str,
        key: str,
        provider: str,
        method: str | None,
        three_ds: str | None,
        stale_amount: bool = False,
    ) -> CheckoutCompleted:
        amount, region, currency = self.carts.get(cart, (5000, "eu", "usd"))
        if stale_amount:
            amount = 5000
        payment_data: dict[str, Any] = {}
        if provider in STRIPES:
            payment_data["payment_method"] = STRIPE_METHODS[method]
        elif method is not None:
            payment_data["payment_method"] = method
        if three_ds is not None:
            payment_data["action_result"] = three_ds
        return CheckoutCompleted.model_validate(
            {
                "cart_id": cart,
                "idempotency_key": f"{cart}:{key}" if key != "k3" else key,
                "region_id": region,
                "currency_code": currency,
                "amount": amount,
                "provider_id": provider,
                "payment_data": payment_data or None,
            }
        )

    @rule(
        cart=st.sampled_from(CARTS),
        key=st.sampled_from(KEYS),
        provider=st.sampled_from(CHECKOUT_PROVIDERS),
        method=st.sampled_from([None, None, None, None, "declined", "3ds", "3ds"]),
        three_ds=st.sampled_from([None, None, None, "succeeded", "failed"]),
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
        payload = self.checkout_payload(cart, key, provider, method, three_ds, stale_amount)
        self.deliver("checkout", payload, publish)

    def command_payload(self, cart: str, operation: str, amount: int | None) -> Any:
        body: dict[str, Any] = {"payment_id": self.payment_id_of(cart), "requested_by": "ops"}
        if amount is not None and operation != "cancel":
            body["amount"] = amount
        model: Any = {"capture": AdminCapture, "refund": AdminRefund, "cancel": AdminCancel}
        return model[operation].model_validate(body)

    @rule(
        cart=st.sampled_from(CARTS),
        operation=st.sampled_from(OPERATIONS),
        amount=st.sampled_from(COMMAND_AMOUNTS),
        command_id=st.none() | st.sampled_from(COMMAND_IDS),
        publish=st.booleans(),
    )
    def command(
        self, cart: str, operation: str, amount: int | None, command_id: str | None, publish: bool
    ) -> None:
        data = self.command_payload(cart, operation, amount)
        event_id = command_id or self.new_id("cmd")
        if event_id in self.delivered:
            return  # a reused id is a replay (see `replay`), not a new command
        self.remember(event_id, "command", data)
        self.run(self._handle(event_id, publish))

    @rule(
        cart=st.sampled_from(CARTS),
        operation=st.sampled_from(OPERATIONS),
        amount=st.sampled_from(COMMAND_AMOUNTS),
        publish=st.booleans(),
    )
    def another_command(self, cart: str, operation: str, amount: int | None, publish: bool) -> None:
        # Commands twice as likely as other steps: they are where money moves.
        self.command(cart, operation, amount, None, publish)

    @rule(
        cart=st.sampled_from(CARTS),
        kinds=st.lists(
            st.sampled_from(["checkout", "capture", "refund", "cancel", "cart"]),
            min_size=2,
            max_size=3,
        ),
        key=st.sampled_from(KEYS),
        provider=st.sampled_from(CHECKOUT_PROVIDERS),
        amount=st.sampled_from([None, 1000, 2500]),
    )
    def race(
        self, cart: str, kinds: list[str], key: str, provider: str, amount: int | None
    ) -> None:
        """Events of one cart handled at the same time (two instances during a
        rebalance, the two topics of a cart): they interleave at provider calls."""
        event_ids = []
        for n, kind in enumerate(kinds):
            payload: Any
            if kind == "checkout":
                payload = self.checkout_payload(cart, f"{key}:{n}", provider, None, None)
            elif kind == "cart":
                _, region, currency = self.carts.get(cart, (5000, "eu", "usd"))
                self.seq += 1
                self.carts[cart] = (amount or 7000, region, currency)
                payload = CartUpdated.model_validate(
                    {
                        "cart_id": cart,
                        "region_id": region,
                        "currency_code": currency,
                        "amount": amount or 7000,
                        "version": self.seq,
                    }
                )
            else:
                payload = self.command_payload(cart, kind, amount)
            event_id = self.new_id(kind)
            self.remember(event_id, kind if kind in ("cart", "checkout") else "command", payload)
            event_ids.append(event_id)

        async def together() -> None:
            await asyncio.gather(*(self._handle(e) for e in event_ids))

        self.run(together())

    @rule(data=st.data())
    def replay(self, data: st.DataObject) -> None:
        """An inbound event delivered again (a redelivery, or an operator's replay)."""
        if not self.delivered:
            return
        event_id = data.draw(st.sampled_from(sorted(self.delivered)), label="replayed")
        if event_id in self.redeliver:
            return  # its first handling never finished: see `restart`
        answered = self.answer_of(event_id)
        retried = any(
            e.payload.get("data", {}).get("reason") == "operation_in_flight"
            for e in self.answers_of(event_id)
        )
        self.run(self._handle(event_id))
        # The same answer, except for a command answered `operation_in_flight`: it did
        # not take effect, and is decided again when sent again (as its answer asks).
        if answered and not retried:
            assert self.answer_of(event_id) == answered, (event_id, answered)

    def answers_of(self, event_id: str) -> list[Any]:
        """The events an inbound event caused, stored or published."""
        stored = [e for c in self.collections() for e in c.outbox]
        stored += list(self.world.publisher.published)
        for orphan_id in self.world.store.orphans:
            found = self.run(self.world.store.orphan(orphan_id))
            stored += found.events if found is not None else []
        return [e for e in stored if e.causation_id == event_id]

    def answer_of(self, event_id: str) -> set[str]:
        """Ids of the events an inbound event caused, stored or published."""
        return {e.id for e in self.answers_of(event_id)}

    # -- trouble ------------------------------------------------------------------------

    @rule(
        kind=st.sampled_from(
            [
                "fault",
                "fault",
                "status_fail",
                "read_fail",
                "crash_before",
                "crash_after",
                "broker_down",
            ]
        ),
        provider=st.sampled_from(PROVIDERS),
        operation=st.sampled_from(["authorize", "capture", "refund", "cancel", "get_status"]),
        fault=st.sampled_from(["lose", "lose", "transient", "drop"]),
        times=st.integers(1, 4),
    )
    def trouble(self, kind: str, provider: str, operation: str, fault: str, times: int) -> None:
        """Something goes wrong next: lost answers, transient errors or requests that
        never arrive; status queries that cannot tell; the service dying before or
        after the provider acted; the broker."""

        async def crash() -> None:
            raise Crash(operation)

        if provider == "manual":
            processor = self.manual
            if kind == "fault" and operation != "get_status":
                processor.inject(operation, *[fault if fault != "drop" else "transient"] * times)
            elif kind == "status_fail":
                processor.inject("get_status", *["status_fail"] * times)
            elif kind in ("crash_before", "crash_after"):
                processor.on(operation, crash)
        else:
            stripe = self.stripes[provider]
            if kind == "fault" and operation != "get_status":
                stripe.inject(operation, *[fault] * times)
            elif kind == "status_fail":
                stripe.inject("get_status", *["status_fail"] * times)
            elif kind == "read_fail":
                stripe.inject("read_objects", *["read_fail"] * times)
            elif kind == "crash_before":
                stripe.on(operation, crash)
            elif kind == "crash_after":
                stripe.after(operation, crash)
        if kind == "broker_down":
            self.world.publisher.fail_next = times

    @rule()
    def restart(self) -> None:
        """The process restarted: events whose handling crashed are delivered again."""
        pending, self.redeliver = self.redeliver, []
        for event_id in pending:
            self.run(self._handle(event_id))

    # -- Stripe, outside the service ----------------------------------------------------

    @staticmethod
    def can(action: str, intent: PaymentIntent) -> bool:
        """Whether Stripe lets `action` happen to `intent` now."""
        if action in ("dashboard_capture", "dashboard_partial_capture"):
            return intent.status == "requires_capture"
        if action in ("dashboard_refund", "dashboard_refund_pending"):
            return intent.charge_refundable and intent.amount_received > intent.refunding
        if action == "dashboard_cancel":
            return intent.status in ("requires_capture", "requires_action")
        if action in ("finish_3ds", "fail_3ds"):
            return intent.status == "requires_action"
        if action == "refund_succeeds":
            return any(r.status == "pending" for r in intent.refunds)
        if action == "refund_fails":
            return any(r.status in ("pending", "succeeded") for r in intent.refunds)
        if action == "dispute_opens":
            open_ = any(d.outcome == "open" for d in intent.disputes)
            return not open_ and intent.amount_received > intent.refunded
        return any(d.outcome == "open" for d in intent.disputes)

    def stripe_acts(self, action: str, amount: int | None, data: st.DataObject) -> None:
        """Something happens at Stripe that the service did not ask for, to one of the
        intents (of either account) it can happen to now."""
        if action == "next_refund_pending":
            provider = data.draw(st.sampled_from(STRIPES), label="account")
            self.stripes[provider].pending_refunds += 1
            return
        candidates = sorted(
            (provider, intent.id)
            for provider, stripe in self.stripes.items()
            for intent in stripe.intents.values()
            if self.can(action, intent)
        )
        if not candidates:
            return
        provider, intent_id = data.draw(st.sampled_from(candidates), label="intent")
        stripe = self.stripes[provider]
        intent = stripe.intents[intent_id]
        done: Any = False
        if action == "dashboard_capture":
            done = stripe.dashboard_capture(intent.id)
        elif action == "dashboard_partial_capture":
            done = stripe.dashboard_capture(
                intent.id, min(amount or 1000, intent.amount_capturable)
            )
        elif action in ("dashboard_refund", "dashboard_refund_pending"):
            refundable = intent.amount_received - intent.refunding
            done = stripe.dashboard_refund(
                intent.id,
                None if amount is None else min(amount, refundable),
                pending=action == "dashboard_refund_pending",
            )
        elif action == "dashboard_cancel":
            done = stripe.dashboard_cancel(intent.id)
        elif action in ("finish_3ds", "fail_3ds"):
            done = stripe.finish_3ds(intent.id, succeeded=action == "finish_3ds")
        elif action in ("refund_succeeds", "refund_fails"):
            status = "succeeded" if action == "refund_succeeds" else "failed"
            settles = ("pending",) if status == "succeeded" else ("pending", "succeeded")
            refunds = [r for r in intent.refunds if r.status in settles]
            refund = data.draw(st.sampled_from(refunds), label="refund")
            done = stripe.settle_refund(refund.id, status)
        elif action == "dispute_opens":
            disputable = intent.amount_received - intent.refunded
            done = stripe.open_dispute(
                intent.id, None if amount is None else min(amount, disputable)
            )
        else:
            dispute = next(d for d in intent.disputes if d.outcome == "open")
            if action == "dispute_reviewed":
                done = stripe.review_dispute(dispute.id)
            else:
                done = stripe.close_dispute(dispute.id, won=action == "dispute_won")
        if done:
            observe_event(f"stripe: {action}")

    @rule(
        action=st.sampled_from(
            [
                "dashboard_capture",
                "dashboard_partial_capture",
                "dashboard_cancel",
                "dashboard_refund",
                "dashboard_refund_pending",
            ]
        ),
        amount=st.sampled_from([None, None, 1000, 2500]),
        data=st.data(),
    )
    def merchant_in_the_dashboard(
        self, action: str, amount: int | None, data: st.DataObject
    ) -> None:
        """The merchant captures, cancels or refunds in Stripe's dashboard."""
        self.stripe_acts(action, amount, data)

    @rule(
        action=st.sampled_from(
            ["finish_3ds", "fail_3ds", "refund_succeeds", "refund_fails", "next_refund_pending"]
        ),
        data=st.data(),
    )
    def later_at_stripe(self, action: str, data: st.DataObject) -> None:
        """A customer finishes (or fails) 3-D Secure after the storefront moved on; a
        refund settles or fails days later; the next refund will be pending."""
        self.stripe_acts(action, None, data)

    @rule(
        action=st.sampled_from(
            ["dispute_opens", "dispute_reviewed", "dispute_won", "dispute_lost"]
        ),
        amount=st.sampled_from([None, None, 1000]),
        data=st.data(),
    )
    def the_bank_disputes(self, action: str, amount: int | None, data: st.DataObject) -> None:
        """A chargeback opens, is reviewed, is won or lost."""
        self.stripe_acts(action, amount, data)

    @rule(
        provider=st.sampled_from(STRIPES),
        how=st.sampled_from(
            ["once", "once", "redelivered", "replayed", "second_event", "all_newest_first"]
        ),
        data=st.data(),
    )
    def webhook(self, provider: str, how: str, data: st.DataObject) -> None:
        """One of Stripe's events arrives: any of those not delivered yet (late, out of
        order); maybe twice: the same body again (Stripe's retry: same envelope id), the
        body replayed on the topic under another envelope id, or Stripe sending the same
        change as a second Event object."""
        stripe = self.stripes[provider]
        if not stripe.outbox:
            return
        if how == "all_newest_first":
            pending, stripe.outbox = stripe.outbox, []
            for event in reversed(pending):
                self.deliver_stripe_event(provider, event, envelope_id(provider, event))
            return
        index = data.draw(st.integers(0, len(stripe.outbox) - 1), label="event")
        event = stripe.outbox.pop(index)
        envelope = envelope_id(provider, event)
        self.deliver_stripe_event(provider, event, envelope)
        if how == "redelivered":
            self.deliver_stripe_event(provider, event, envelope)
        elif how == "replayed":
            self.deliver_stripe_event(provider, event, self.new_id("wh"))
        elif how == "second_event":
            again = stripe.emit_again(event)
            stripe.outbox.remove(again)
            self.deliver_stripe_event(provider, again, envelope_id(provider, again))

    @rule(
        provider=st.sampled_from(STRIPES),
        how=st.sampled_from(["one", "one", "every_pending"]),
        data=st.data(),
    )
    def webhook_lost(self, provider: str, how: str, data: st.DataObject) -> None:
        """Stripe's events never arrive: one, or every one not delivered yet (the
        endpoint misconfigured, or its secret rotated wrongly, for longer than Stripe
        retries). Only the audit's read of a payment's objects can tell the books
        what they said."""
        stripe = self.stripes[provider]
        if not stripe.outbox:
            return
        if how == "every_pending":
            self.lost += stripe.outbox
            stripe.outbox = []
        else:
            index = data.draw(st.integers(0, len(stripe.outbox) - 1), label="lost")
            self.lost.append(stripe.outbox.pop(index))

    @rule(
        kind=st.sampled_from(["reconciler", "relay", "auditor", "clock", "clock"]),
        seconds=st.sampled_from([1, 6, 30, 120, 3600, 25 * 3600, 8 * 86400]),
    )
    def time_passes(self, kind: str, seconds: int) -> None:
        """Background loops run (the reconciler, the relay, the provider audit), or
        the clock moves (past leases, back-offs, Stripe's key window, its 7-day expiry
        of uncaptured authorizations)."""
        if kind == "clock":
            self.world.advance(seconds=seconds)
            for stripe in self.stripes.values():
                stripe.tick()
        elif kind == "relay":
            self.run(self.world.relay.run_once(timedelta(seconds=5)))
        elif kind == "auditor":
            self.run(self.auditor.run_once())
        else:
            # The reconciler may die mid-pass; the next pass picks it up.
            with contextlib.suppress(Crash):
                self.run(self.world.reconcile())

    # -- invariants ----------------------------------------------------------------------

    def collections(self) -> list[PaymentCollection]:
        return self.world.store.collections()

    def intent_of(self, collection: PaymentCollection) -> PaymentIntent | None:
        payment = collection.payment
        if payment is None or payment.provider_id not in self.stripes:
            return None
        return self.stripes[payment.provider_id].intent_of_session(payment.session_id)

    @invariant()
    def amounts_within_bounds(self) -> None:
        for collection in self.collections():
            payment = collection.payment
            if payment is not None:
                assert 0 <= payment.captured_total <= payment.amount, collection.cart_id
                assert 0 <= payment.refunded_total <= payment.captured_total, collection.cart_id
                assert payment.captured_total + payment.pending_capture <= payment.amount
        for stripe in self.stripes.values():
            stripe.check_ledger()
        for hold in self.manual.holds.values():
            assert 0 <= hold.captured <= hold.amount
            assert 0 <= hold.refunded <= hold.captured

    @invariant()
    def the_books_never_claim_more_than_the_intent(self) -> None:
        """A payment on Stripe names its session's PaymentIntent, holds what it
        authorized in its currency, and never more captured than it received."""
        for collection in self.collections():
            payment = collection.payment
            if payment is None or payment.provider_id not in self.stripes:
                continue
            intent = self.intent_of(collection)
            where = collection.cart_id
            assert intent is not None, f"{where}: the payment names no PaymentIntent"
            assert intent.authorized > 0, f"{where}: a payment Stripe never authorized: {intent}"
            assert payment.amount == intent.authorized, (where, payment.amount, intent)
            assert payment.currency_code == intent.currency, (where, payment.currency_code, intent)
            assert payment.captured_total <= intent.amount_received, (where, intent)

    # -- quiescence ----------------------------------------------------------------------

    def observe(self) -> None:
        """What the example went through (`--hypothesis-show-statistics`)."""
        for stripe in self.stripes.values():
            for operation in ("authorize", "capture", "refund", "cancel"):
                if stripe.executed(operation):
                    observe_event(f"{stripe.id}: {operation} executed")
            if any(i.disputes for i in stripe.intents.values()):
                observe_event("dispute")
            if any(i.status == "canceled" for i in stripe.intents.values()):
                observe_event("an intent canceled")
        if any(len(self.live_holds(c)) > 1 for c in CARTS):
            observe_event("two live holds on one cart before quiescence")
        if self.redeliver:
            observe_event("crashed handler redelivered")
        if any(c.payment and c.payment.refunds for c in self.collections()):
            observe_event("books: refunded")
        if self.lost:
            observe_event("webhooks lost for good")
            lost = {e["type"] for e in self.lost}
            for kind in ("refund.created", "charge.dispute.created", "payment_intent.canceled"):
                if kind in lost:
                    observe_event(f"lost for good: {kind}")
        self.observe_audit()

    def observe_audit(self) -> None:
        for metric in self.world.metrics.registry.collect():
            for sample in metric.samples:
                if sample.name == "payments_provider_audit_corrections_total" and sample.value:
                    observe_event(f"the audit corrected: {sample.labels['kind']}")

    def live_holds(self, cart_id: str) -> list[str]:
        held = [i.id for s in self.stripes.values() for i in s.live_intents(cart_id)]
        return held + [h.id for h in self.manual.live_holds(cart_id)]

    def deliver_every_stripe_event(self, reverse: bool) -> int:
        delivered = 0
        for provider, stripe in self.stripes.items():
            pending, stripe.outbox = stripe.outbox, []
            for event in reversed(pending) if reverse else pending:
                self.deliver_stripe_event(provider, event, envelope_id(provider, event))
                delivered += 1
        return delivered

    @staticmethod
    def books_equal_ledger(where: str, books: Ledger, ledger: Ledger) -> None:
        assert books == ledger, f"{where}: books {books} != Stripe {ledger}"

    def quiesce(self) -> None:
        world = self.world
        self.observe()
        for processor in [self.manual, *self.stripes.values()]:
            processor.faults.clear()
            processor.hooks.clear()
        for stripe in self.stripes.values():
            stripe.after_hooks.clear()
        world.publisher.fail_next = 0
        for _ in range(3):
            self.restart()
        # Stripe settles what it left pending (refunds take days, not for ever): one
        # in two succeeds.
        for stripe in self.stripes.values():
            stripe.pending_refunds = 0
            pending = [
                r for i in stripe.intents.values() for r in i.refunds if r.status == "pending"
            ]
            for n, refund in enumerate(pending):
                stripe.settle_refund(refund.id, "failed" if n % 2 else "succeeded")
            # The banks decide the chargebacks still open (weeks, not for ever): one in
            # two won.
            open_disputes = [
                d for i in stripe.intents.values() for d in i.disputes if d.outcome == "open"
            ]
            for n, dispute in enumerate(open_disputes):
                stripe.close_dispute(dispute.id, won=not n % 2)
        for round_ in range(QUIESCENCE_ROUNDS):
            # Whatever Stripe has not delivered arrives now, newest first at the start.
            self.deliver_every_stripe_event(reverse=round_ == 0)
            world.advance(seconds=600)
            for stripe in self.stripes.values():
                stripe.tick()
            self.run(world.reconcile())
            self.run(self.auditor.run_once())
            self.run(world.relay.run_once(timedelta(seconds=5)))
        self.deliver_every_stripe_event(reverse=False)
        self.run(world.relay.run_once(timedelta(seconds=5)))
        self.observe_audit()

        published = world.publisher.published
        for collection in self.collections():
            where = collection.cart_id
            assert collection.unsent_events == [], f"{where}: events never published"
            assert not collection.needs_reconcile or needs_attention(published, where), (
                f"{where}: left unknown or reserved without needs_attention"
            )
            live = self.live_holds(where)
            payment = collection.payment
            if payment is None or payment.provider_id == "system":
                assert live == [], f"{where}: live holds without a payment: {live}"
                continue
            if payment.provider_id in self.stripes:
                stripe = self.stripes[payment.provider_id]
                intent = self.intent_of(collection)
                assert intent is not None, f"{where}: the payment names no PaymentIntent"
                others = [h for h in live if h != intent.id]
                assert others == [], f"{where}: live holds besides the payment's: {others}"
                self.books_equal_ledger(
                    where, as_ledger(books_of(payment, published)), stripe.ledger(intent.id)
                )
                continue
            hold = self.manual.holds.get(str(payment.data.get("hold_id")))
            assert hold is not None, f"{where}: the payment names no hold of the provider"
            others = [h for h in live if h != hold.id]
            assert others == [], f"{where}: live holds besides the payment's: {others}"
            assert payment.amount == hold.amount, where
            assert payment.is_canceled == hold.voided, where
            if not payment.is_canceled:
                assert payment.captured_total == hold.captured, where
                assert payment.refunded_total == hold.refunded, where
        assert {o for o in world.store.orphans if world.store.orphans[o][1]} == set()
        sent = [e for e in published if isinstance(e, OutboxEvent)]
        assert len({e.id for e in sent}) <= len(sent)


StripeModel.TestCase.settings = settings(
    max_examples=EXAMPLES,
    stateful_step_count=STEPS,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestStripeModel = StripeModel.TestCase


# -- the Stripe model itself: what the proof above relies on --------------------------------


def _stripe(**options: Any) -> tuple[World, StripeProcessor]:
    world = World("manual")
    return world, world.install(StripeProcessor("stripe", clock=world.clock, **options))


def _authorize(world: World, stripe: StripeProcessor, key: str = "auth_1") -> PaymentIntent:
    from tests.support.call_builders import provider_call

    outcome = asyncio.run(
        stripe.authorize(
            provider_call("authorize", "stripe", key, payment_data={"payment_method": PM_OK})
        )
    )
    intent = stripe.intent_of_session("ps_1")
    assert intent is not None and outcome.reference == intent.id
    return intent


def _call(
    operation: Any, key: str, intent: PaymentIntent, amount: int = 5000, **values: Any
) -> Any:
    from tests.support.call_builders import provider_call

    return provider_call(operation, "stripe", key, amount, data={"id": intent.id}, **values)


def test_the_stripe_model_answers_a_repeated_key_from_its_record_for_24_hours() -> None:
    world, stripe = _stripe()
    intent = _authorize(world, stripe)
    first = asyncio.run(stripe.capture(_call("capture", "cap_1", intent, 3000)))
    assert first.kind == "succeeded" and (intent.amount_received, intent.released) == (3000, 2000)
    # The same request again: Stripe's saved answer, nothing executed.
    assert asyncio.run(stripe.capture(_call("capture", "cap_1", intent, 3000))) == first
    # Other parameters under the used key: refused.
    other = asyncio.run(stripe.capture(_call("capture", "cap_1", intent, 1000)))
    assert (other.kind, other.code) == ("failed", "idempotency_error")
    # After 24 hours the key is forgotten: a new request, refused (already captured).
    world.advance(hours=24)
    late = asyncio.run(stripe.capture(_call("capture", "cap_1", intent, 3000)))
    assert (late.kind, late.code) == ("failed", "payment_intent_unexpected_state")
    assert [key for key, _ in stripe.executed("capture")] == ["cap_1", "cap_1"]
    stripe.check_ledger()


def test_the_stripe_model_keeps_the_rest_capturable_only_for_a_non_final_multicapture() -> None:
    world, stripe = _stripe(multicapture=True)
    intent = _authorize(world, stripe)
    asyncio.run(stripe.capture(_call("capture", "cap_1", intent, 1000, final_capture=False)))
    assert (intent.status, intent.amount_capturable, intent.released) == (
        "requires_capture",
        4000,
        0,
    )
    asyncio.run(stripe.capture(_call("capture", "cap_2", intent, 1000)))  # final: the rest goes
    assert (intent.status, intent.amount_received, intent.released) == ("succeeded", 2000, 3000)
    refused = asyncio.run(stripe.capture(_call("capture", "cap_3", intent, 1000)))
    assert refused.code == "payment_intent_unexpected_state"
    types = [e["type"] for e in stripe.events]
    assert types.count("charge.captured") == 2 and types[-1] == "payment_intent.succeeded"
    stripe.check_ledger()


def test_the_stripe_model_refunds_pending_then_settles_and_refuses_under_a_chargeback() -> None:
    world, stripe = _stripe(automatic=True)
    intent = _authorize(world, stripe)
    assert intent.amount_received == 5000
    stripe.pending_refunds = 1
    pending = asyncio.run(stripe.refund(_call("refund", "ref_1", intent, 1000)))
    assert pending.kind == "pending" and intent.refunded == 0
    status = asyncio.run(stripe.get_status(_call("refund", "ref_1", intent, 1000)))
    assert status.kind == "pending" and status.reference == pending.reference
    assert stripe.settle_refund(str(pending.reference), "failed")
    assert [e["type"] for e in stripe.events[-2:]] == ["refund.updated", "refund.failed"]
    dispute = stripe.open_dispute(intent.id)
    assert dispute is not None and dispute.amount == 5000
    refused = asyncio.run(stripe.refund(_call("refund", "ref_2", intent, 1000)))
    assert refused.code == "charge_disputed"
    assert stripe.close_dispute(dispute.id, won=True)
    assert asyncio.run(stripe.refund(_call("refund", "ref_3", intent, 1000))).kind == "succeeded"
    assert stripe.ledger(intent.id).disputes == {dispute.id: "won"}
    stripe.check_ledger()


def test_the_stripe_model_expires_an_uncaptured_authorization_after_7_days() -> None:
    world, stripe = _stripe()
    intent = _authorize(world, stripe)
    world.advance(days=7, seconds=-1)
    stripe.tick()
    assert intent.status == "requires_capture"
    world.advance(seconds=1)
    stripe.tick()
    assert (intent.status, intent.cancellation_reason, intent.released) == (
        "canceled",
        "automatic",
        5000,
    )
    assert stripe.events[-1]["type"] == "payment_intent.canceled"
    assert stripe.ledger(intent.id).canceled


def test_the_stripe_model_status_answers_found_not_found_or_could_not_tell() -> None:
    world, stripe = _stripe()
    intent = _authorize(world, stripe)
    capture = _call("capture", "cap_1", intent)
    assert asyncio.run(stripe.get_status(capture)).is_not_found  # nothing captured at all
    stripe.inject("get_status", "status_fail")
    assert asyncio.run(stripe.get_status(capture)).kind == "unknown"  # the query erred
    stripe.inject("capture", "lose")
    assert asyncio.run(stripe.capture(capture)).kind == "unknown"  # Stripe acted, no answer
    # Captured, but Stripe keeps no capture by key: only a repeat under the key tells.
    assert asyncio.run(stripe.get_status(capture)).is_not_found
    assert asyncio.run(stripe.capture(capture)).kind == "succeeded"  # the saved answer
    assert len(stripe.executed("capture")) == 1
    authorization = asyncio.run(stripe.get_status(_call("authorize", "auth_1", intent)))
    assert (authorization.kind, authorization.reference) == ("succeeded", intent.id)


def test_the_stripe_model_shares_one_intent_between_the_attempts_of_a_session() -> None:
    world, stripe = _stripe()
    first = _authorize(world, stripe, "auth_1")
    second = _authorize(world, stripe, "auth_2")  # reads the intent: confirms nothing
    assert first is second and len(stripe.intents) == 1
    assert [key for key, _ in stripe.executed("authorize")] == ["auth_1"]


def test_the_stripe_model_sends_every_change_as_an_event_with_the_object_as_it_was() -> None:
    world, stripe = _stripe()
    intent = _authorize(world, stripe)
    assert stripe.dashboard_capture(intent.id, 2000)
    assert stripe.dashboard_refund(intent.id, 500) is not None
    events = stripe.events
    assert len({e["id"] for e in events}) == len(events)
    authorized = events[0]
    assert authorized["type"] == "payment_intent.amount_capturable_updated"
    assert authorized["data"]["object"]["amount_capturable"] == 5000  # then, not now
    facts = [stripe.interpret_webhook({}, stripe.body(e)) for e in events]
    meanings = [(f.meaning, f.amount) for f in facts if f is not None]
    assert meanings == [
        ("authorized", 5000),
        ("captured", 2000),
        ("captured", 2000),
        ("refund_succeeded", 500),
    ]
    assert all(f is None or f.event_id == e["id"] for f, e in zip(facts, events, strict=True))
    assert stripe.ledger(intent.id).released == 3000


# -- the audit's read: what the model answers is what the adapter reads from Stripe ----------

# Steps played on both Stripes: the model's (`StripeProcessor`) and the stateful fake
# the adapter's own tests trust (`FaithfulStripe`, read through the real
# `StripeProvider.read_objects`).
READ_SCENARIOS: dict[str, tuple[dict[str, bool], list[tuple[Any, ...]]]] = {
    "held": ({}, []),
    "multicaptured in part": ({"multicapture": True}, [("capture", 2000, False)]),
    "final partial capture": ({}, [("capture", 2000, True)]),
    "refunds of every status and a lost dispute": (
        {},
        [
            ("capture", 5000, True),
            ("refund", "ref_1", 1000),
            ("dashboard_refund", 500, True),
            ("dashboard_refund", 700, False),
            ("settle", 2, "failed"),
            ("dispute", 2000),
            ("dispute_closes", False),
        ],
    ),
    "canceled": ({}, [("cancel",)]),
    "expired after a partial multicapture": (
        {"multicapture": True},
        [("capture", 1500, False), ("expire",)],
    ),
    "captured on confirmation, refunded pending then settled": (
        {"automatic": True},
        [("dashboard_refund", 1200, True), ("settle", 0, "succeeded"), ("dispute", 800)],
    ),
}


def _fact_summary(fact: Any, intent_id: str, ids: dict[str, str]) -> tuple[Any, ...]:
    """A fact with each side's object ids replaced by their order of creation."""
    data = fact.data
    named = data.get("refund_id") or data.get("dispute_id")
    return (
        fact.meaning,
        fact.amount,
        fact.capturable,
        (fact.cart_id, fact.session_id, fact.event_id),
        fact.provider_reference == intent_id,
        ids.get(named) if named else None,
        tuple(
            data.get(k)
            for k in (
                "refund_status",
                "provider_key",
                "reason",
                "failure_reason",
                "status",
                "provider_status",
                "currency_code",
            )
        ),
    )


def _model_read(options: dict[str, bool], steps: list[tuple[Any, ...]]) -> list[Any]:
    world, stripe = _stripe(**options)
    intent = _authorize(world, stripe)
    ids: dict[str, str] = {}
    refunds: list[str] = []
    for step in steps:
        kind = step[0]
        if kind == "capture":
            capture = _call("capture", f"cap_{len(ids)}", intent, step[1], final_capture=step[2])
            asyncio.run(stripe.capture(capture))
        elif kind == "refund":
            asyncio.run(stripe.refund(_call("refund", step[1], intent, step[2])))
            refunds.append(intent.refunds[-1].id)
        elif kind == "dashboard_refund":
            refund = stripe.dashboard_refund(intent.id, step[1], pending=step[2])
            assert refund is not None
            refunds.append(refund.id)
        elif kind == "settle":
            assert stripe.settle_refund(refunds[step[1]], step[2])
        elif kind == "dispute":
            dispute = stripe.open_dispute(intent.id, step[1])
            assert dispute is not None
            ids[dispute.id] = "dispute"
        elif kind == "dispute_closes":
            assert stripe.close_dispute(intent.disputes[-1].id, won=step[1])
        elif kind == "cancel":
            asyncio.run(stripe.cancel(_call("cancel", "cancel_1", intent)))
        elif kind == "expire":
            world.advance(days=7)
            stripe.tick()
    ids.update({r: f"refund {n}" for n, r in enumerate(refunds)})
    read = asyncio.run(stripe.read_objects(_call("retrieve", "audit", intent)))
    return [_fact_summary(f, intent.id, ids) for f in read]


async def _stripe_read(options: dict[str, bool], steps: list[tuple[Any, ...]]) -> list[Any]:
    from tests.fixtures.stripe.faithful import PM_VISA, FaithfulStripe, stripe_provider
    from tests.fixtures.stripe.kit import ScriptedStripe
    from tests.support.call_builders import provider_call

    scripted = ScriptedStripe()
    fake = FaithfulStripe.serve(scripted)
    provider = stripe_provider(
        scripted,
        capture=options.get("automatic", False),
        multicapture=options.get("multicapture", False),
    )
    try:
        session = await provider.initiate(provider_call("initiate", "stripe", "ps_1:initiate"))
        authorized = await provider.authorize(
            provider_call(
                "authorize",
                "stripe",
                "auth_1",
                data=session.data,
                payment_data={"payment_method": PM_VISA},
            )
        )
        data = authorized.data
        intent_id = data["id"]
        ids: dict[str, str] = {}
        refunds: list[str] = []
        for step in steps:
            kind = step[0]
            if kind == "capture":
                await provider.capture(
                    provider_call(
                        "capture",
                        "stripe",
                        f"cap_{len(ids)}",
                        step[1],
                        data=data,
                        final_capture=step[2],
                    )
                )
            elif kind == "refund":
                done = await provider.refund(
                    provider_call("refund", "stripe", step[1], step[2], data=data)
                )
                refunds.append(str(done.reference))
            elif kind == "dashboard_refund":
                status, refund = fake.refund(
                    intent_id,
                    step[1],
                    reason="requested_by_customer",
                    status="pending" if step[2] else "succeeded",
                )
                assert status == 200
                refunds.append(refund["id"])
            elif kind == "settle":
                fake.settle_refund(refunds[step[1]], step[2])
            elif kind == "dispute":
                ids[fake.dispute(intent_id, step[1])["id"]] = "dispute"
            elif kind == "dispute_closes":
                (dispute_id,) = [d for d, name in ids.items() if name == "dispute"]
                fake.update_dispute(dispute_id, "won" if step[1] else "lost")
            elif kind == "cancel":
                await provider.cancel(provider_call("cancel", "stripe", "cancel_1", data=data))
            elif kind == "expire":
                fake.expire(intent_id)
        ids.update({r: f"refund {n}" for n, r in enumerate(refunds)})
        read = await provider.read_objects(provider_call("retrieve", "stripe", "audit", data=data))
        return [_fact_summary(f, intent_id, ids) for f in read]
    finally:
        await provider.close()


@pytest.mark.parametrize("scenario", sorted(READ_SCENARIOS))
def test_the_stripe_model_reads_its_objects_as_the_adapter_reads_stripes(scenario: str) -> None:
    """The audit in the model test sees what it would see at Stripe: the same facts,
    in the same order (newest refund first), as the real adapter's read of the same
    history at the stateful fake Stripe."""
    options, steps = READ_SCENARIOS[scenario]
    model = _model_read(options, steps)
    stripe = asyncio.run(_stripe_read(options, steps))
    assert model == stripe
    assert model, "a payment's intent is always some money fact"
