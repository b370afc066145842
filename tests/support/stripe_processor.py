"""A Stripe-faithful payment processor for the model test and issue 22's sequences.

`tests/support/processor.py` is a card processor as we imagined one; this one
behaves as Stripe documents itself, and implements the provider port
(`service/ports/providers.py`) the way design22 says a Stripe adapter must
answer through it. Each behaviour below names the Stripe documentation it follows:

* **One PaymentIntent per payment session**, shared by every authorization
  attempt on it (the adapter keys the intent by session, `stripe.py`); a later
  attempt on a session whose intent is past confirmation reads the intent as it
  stands and confirms nothing.
* **Capture** (docs.stripe.com/api/payment_intents/capture): only from
  `requires_capture`, up to `amount_capturable`. Without multicapture a capture
  of less than what is capturable releases the rest and the intent is
  `succeeded`; every later capture is refused. With multicapture
  (docs.stripe.com/payments/multicapture) `final_capture=false` keeps the rest
  capturable; `final_capture` defaults to true. Automatic capture captures the
  whole amount at confirmation.
* **Cancel** (docs.stripe.com/api/payment_intents/cancel): from
  `requires_payment_method`, `requires_confirmation`, `requires_action` or
  `requires_capture`; the remaining `amount_capturable` is released. Stripe
  itself cancels an authorization left uncaptured for 7 days (the capture page:
  "Uncaptured PaymentIntents are cancelled a set number of days (7 by default)
  after their creation"; docs.stripe.com/payments/place-a-hold-on-a-payment-method:
  the card authorization's validity window, 7 days for a customer-initiated
  payment, after which "the funds are released and the payment status changes to
  canceled"), counted here from the authorization: :meth:`tick`.
* **Refunds** (docs.stripe.com/refunds, the Refund object): `pending`, then
  `succeeded` or `failed` (or `canceled`); a succeeded refund can still fail
  later; refunded in all never more than received; a charge under a chargeback
  is not refundable (`charge_disputed`, `Dispute.is_charge_refundable`).
* **Disputes** (the Dispute object): `needs_response` → `under_review` → `won`
  or `lost`; funds withdrawn when it opens, reinstated when won. Dispute events
  carry no metadata of ours (the adapter looks the cart up from the intent).
* **Idempotency** (docs.stripe.com/api/idempotent_requests): the first answer
  under a key is saved once the endpoint runs, success or error, and replayed to
  a repeat; a repeat with other parameters is refused (`idempotency_error`);
  keys are pruned after 24 hours, after which a repeat is a new request. A
  request refused before it runs (rate limit) saves nothing.
* **Events** (docs.stripe.com/webhooks): every state change emits its event,
  whose `data.object` is the object as it was then. Stripe delivers at least once,
  retries for days and guarantees no order, so events wait in :attr:`outbox` for
  the test to deliver late, twice or in any order.
* **Actions outside the service**: the dashboard's capture, refund and cancel,
  the automatic cancel after 7 days, a customer finishing 3-D Secure late, a
  refund settling, a dispute: public methods below, each emitting its events.

Status answers follow the port: *found*, *not found* (Stripe positively has no
trace, so the operation never took effect), or *could not tell*
(`ProviderOutcome.unknown`) for an error of the query itself. Stripe has no
lookup of a capture by key: the only way to learn whether a capture was ours is
to send it again under the same key, so a capture's status is *not found* ("send
it again to tell") unless nothing at all was received; the service may act on
that only inside the 24-hour window (design22), where a repeat is answered from
Stripe's record.

Its own ledger per PaymentIntent (:meth:`ledger`): authorized, captured,
refunded (succeeded), released, canceled, and the disputes.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from service.adapters.providers.stripe_mapping import object_facts
from service.domain.calls import ProviderCall
from service.domain.capabilities import Capabilities
from service.domain.outcomes import ProviderOutcome
from service.ports.providers import (
    PaymentProvider,
    ProviderUnavailable,
    SavedPaymentMethod,
    WebhookAction,
)

KEY_WINDOW: Final = timedelta(hours=24)
"""Stripe prunes idempotency keys once they are at least 24 hours old."""
UNCAPTURED_EXPIRY: Final = timedelta(days=7)
"""Stripe cancels an authorization left uncaptured for 7 days."""

CONFIRMABLE: Final = frozenset({"requires_payment_method", "requires_confirmation"})
CANCELABLE: Final = frozenset(
    {"requires_payment_method", "requires_confirmation", "requires_action", "requires_capture"}
)
UPDATABLE: Final = frozenset(
    {"requires_payment_method", "requires_confirmation", "requires_action"}
)

# Test payment methods (as Stripe's test cards): one that authorizes, one declined,
# one that asks for 3-D Secure. `payment_data["action_result"]` says the customer
# finished (or failed) the challenge in the browser before the storefront sent the
# checkout again.
PM_OK: Final = "pm_card_visa"
PM_DECLINED: Final = "pm_card_chargeDeclined"
PM_3DS: Final = "pm_card_authenticationRequired"

DISPUTE_OUTCOMES: Final = {
    "needs_response": "open",
    "under_review": "open",
    "won": "won",
    "lost": "lost",
}


# -- Stripe's objects -----------------------------------------------------------------------


@dataclass
class StripeRefund:
    id: str
    intent_id: str
    amount: int
    status: str
    """`pending`, `succeeded`, `failed` or `canceled`."""
    key: str | None
    """Our call's idempotency key (the refund's metadata), None for the dashboard's."""
    reason: str | None = None
    failure_reason: str | None = None


@dataclass
class StripeDispute:
    id: str
    intent_id: str
    amount: int
    status: str = "needs_response"
    reason: str = "fraudulent"
    evidence_due_by: datetime | None = None

    @property
    def outcome(self) -> str:
        """The contract's `open`/`won`/`lost`."""
        return DISPUTE_OUTCOMES[self.status]


@dataclass
class PaymentIntent:
    id: str
    session_id: str
    cart_id: str
    amount: int
    currency: str
    capture_method: str
    multicapture: bool
    created_at: datetime
    status: str = "requires_payment_method"
    payment_method: str | None = None
    amount_capturable: int = 0
    amount_received: int = 0
    authorized: int = 0
    """Ledger: what the card authorization held (0 until confirmed)."""
    authorized_at: datetime | None = None
    released: int = 0
    """Ledger: authorized and never captured, given back (final partial capture,
    cancel, expiry)."""
    last_payment_error: str | None = None
    cancellation_reason: str | None = None
    refunds: list[StripeRefund] = field(default_factory=list)
    disputes: list[StripeDispute] = field(default_factory=list)

    @property
    def refunded(self) -> int:
        return sum(r.amount for r in self.refunds if r.status == "succeeded")

    @property
    def refunding(self) -> int:
        """Refunds that count against what is refundable: succeeded and pending."""
        return sum(r.amount for r in self.refunds if r.status in ("pending", "succeeded"))

    @property
    def lost_to_disputes(self) -> int:
        return sum(d.amount for d in self.disputes if d.status == "lost")

    @property
    def live(self) -> bool:
        """Money held on the card, or taken and not given back."""
        kept = self.amount_received - self.refunded - self.lost_to_disputes
        return self.amount_capturable > 0 or kept > 0

    @property
    def charge_refundable(self) -> bool:
        """Stripe refuses a refund of a charge under a chargeback (open or lost)."""
        return not any(
            d.status in ("needs_response", "under_review", "lost") for d in self.disputes
        )


@dataclass(frozen=True)
class Ledger:
    """What Stripe holds for one PaymentIntent, as the books must say it."""

    authorized: int
    captured: int
    refunded: int
    released: int
    canceled: bool
    """Canceled with nothing captured (a cancel after captures only releases the rest)."""
    currency: str
    disputes: dict[str, str]
    """Dispute id -> open/won/lost."""


@dataclass
class Saved:
    """An idempotent request's saved answer."""

    params: tuple[Any, ...]
    outcome: ProviderOutcome
    at: datetime


# -- the processor ---------------------------------------------------------------------------


@dataclass
class StripeProcessor(PaymentProvider):
    """Stripe behind the provider port. `clock` is shared with the service under test.

    `automatic` is the adapter's `capture` option (automatic capture),
    `multicapture` its `multicapture` option (manual capture only).
    """

    id: str = "stripe"
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    automatic: bool = False
    multicapture: bool = False
    key_window: timedelta = KEY_WINDOW
    intents: dict[str, PaymentIntent] = field(default_factory=dict)
    saved: dict[tuple[str, ...], Saved] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    """Every event Stripe emitted, in order."""
    outbox: list[dict[str, Any]] = field(default_factory=list)
    """Events not delivered yet (the test delivers them, in any order)."""
    calls: list[tuple[str, str]] = field(default_factory=list)
    """(method, idempotency key) of every port call received, status queries included."""
    requests: list[tuple[str, str, tuple[Any, ...]]] = field(default_factory=list)
    """(operation, key, parameters) of every request Stripe executed (not replayed)."""
    faults: dict[str, deque[str]] = field(default_factory=lambda: defaultdict(deque))
    hooks: dict[str, deque[Callable[[], Awaitable[None]]]] = field(
        default_factory=lambda: defaultdict(deque)
    )
    after_hooks: dict[str, deque[Callable[[], Awaitable[None]]]] = field(
        default_factory=lambda: defaultdict(deque)
    )
    pending_refunds: int = 0
    """How many of the next refunds Stripe answers `pending` (they settle later)."""
    seq: int = 0

    def __post_init__(self) -> None:
        self.capture_on_authorize = self.automatic
        if self.automatic:
            self.multicapture = False  # multicapture needs manual capture
        self.capabilities = Capabilities(
            multicapture=self.multicapture,
            partial_capture_releases_rest=not self.multicapture,
            refunds_can_be_pending=True,
            idempotency_window_s=self.key_window.total_seconds(),
        )

    # -- scripting ------------------------------------------------------------------------

    def inject(self, operation: str, *faults: str) -> None:
        """Faults for the next calls of `operation`, in order: `transient` (refused
        before running: nothing saved), `drop` (the request never reached Stripe:
        unknown), `lose` (Stripe acted, the answer was lost: unknown);
        `status_fail` for `get_status` (the query errs: could not tell);
        `read_fail` for `read_objects`."""
        self.faults[operation].extend(faults)

    def on(self, method: str, hook: Callable[[], Awaitable[None]]) -> None:
        """Run `hook` when the next call of `method` arrives, before Stripe acts."""
        self.hooks[method].append(hook)

    def after(self, method: str, hook: Callable[[], Awaitable[None]]) -> None:
        """Run `hook` once Stripe acted on the next call of `method`, before it answers
        (a crash there is the service dying after the money moved)."""
        self.after_hooks[method].append(hook)

    def _fault(self, operation: str) -> str | None:
        queue = self.faults.get(operation)
        return queue.popleft() if queue else None

    @staticmethod
    async def _run(hooks: dict[str, deque[Callable[[], Awaitable[None]]]], method: str) -> None:
        queue = hooks.get(method)
        if queue:
            await queue.popleft()()

    def _new_id(self, prefix: str) -> str:
        self.seq += 1
        return f"{prefix}_{self.id}_{self.seq}"

    # -- reading ----------------------------------------------------------------------------

    def intent_of_session(self, session_id: str) -> PaymentIntent | None:
        return next((i for i in self.intents.values() if i.session_id == session_id), None)

    def intents_of_cart(self, cart_id: str) -> list[PaymentIntent]:
        return [i for i in self.intents.values() if i.cart_id == cart_id]

    def live_intents(self, cart_id: str) -> list[PaymentIntent]:
        return [i for i in self.intents_of_cart(cart_id) if i.live]

    def find_refund(self, refund_id: str) -> StripeRefund | None:
        return next(
            (r for i in self.intents.values() for r in i.refunds if r.id == refund_id), None
        )

    def find_dispute(self, dispute_id: str) -> StripeDispute | None:
        return next(
            (d for i in self.intents.values() for d in i.disputes if d.id == dispute_id), None
        )

    def ledger(self, intent_id: str) -> Ledger:
        intent = self.intents[intent_id]
        return Ledger(
            authorized=intent.authorized,
            captured=intent.amount_received,
            refunded=intent.refunded,
            released=intent.released,
            canceled=intent.status == "canceled" and intent.amount_received == 0,
            currency=intent.currency,
            disputes={d.id: d.outcome for d in intent.disputes},
        )

    def executed(self, operation: str) -> list[tuple[str, tuple[Any, ...]]]:
        """(key, parameters) of the requests of `operation` Stripe executed."""
        return [(key, params) for op, key, params in self.requests if op == operation]

    def check_ledger(self) -> None:
        """Stripe's own arithmetic, which the model must never break."""
        for intent in self.intents.values():
            assert intent.amount_capturable >= 0, intent
            assert (
                intent.amount_received + intent.amount_capturable + intent.released
                == intent.authorized
            ), intent
            assert intent.refunding <= intent.amount_received, intent
            assert intent.authorized in (0, intent.amount), intent

    # -- events -----------------------------------------------------------------------------

    def _emit(self, event_type: str, obj: dict[str, Any]) -> dict[str, Any]:
        event = {
            "id": self._new_id("evt"),
            "object": "event",
            "type": event_type,
            "created": int(self.clock().timestamp()),
            "data": {"object": obj},
        }
        self.events.append(event)
        self.outbox.append(event)
        return event

    def emit_again(self, event: dict[str, Any]) -> dict[str, Any]:
        """Stripe sometimes sends one change as two Event objects (another `evt_` id)."""
        return self._emit(str(event["type"]), json.loads(json.dumps(event["data"]["object"])))

    @staticmethod
    def body(event: Mapping[str, Any]) -> str:
        return json.dumps(event, sort_keys=True)

    def _intent_json(self, intent: PaymentIntent) -> dict[str, Any]:
        obj: dict[str, Any] = {
            "id": intent.id,
            "object": "payment_intent",
            "amount": intent.amount,
            "amount_capturable": intent.amount_capturable,
            "amount_received": intent.amount_received,
            "currency": intent.currency,
            "status": intent.status,
            "capture_method": intent.capture_method,
            "payment_method": intent.payment_method,
            "cancellation_reason": intent.cancellation_reason,
            "latest_charge": f"ch_{intent.id}" if intent.authorized else None,
            "metadata": {"session_id": intent.session_id, "cart_id": intent.cart_id},
            "last_payment_error": (
                {"code": intent.last_payment_error, "payment_method": intent.payment_method}
                if intent.last_payment_error
                else None
            ),
            "next_action": (
                {"type": "redirect_to_url", "redirect_to_url": {"url": f"https://3ds/{intent.id}"}}
                if intent.status == "requires_action"
                else None
            ),
        }
        return obj

    def _charge_json(self, intent: PaymentIntent) -> dict[str, Any]:
        return {
            "id": f"ch_{intent.id}",
            "object": "charge",
            "payment_intent": intent.id,
            "amount": intent.amount,
            "amount_captured": intent.amount_received,
            "captured": intent.amount_received > 0,
            "currency": intent.currency,
            # Stripe copies the PaymentIntent's metadata onto its charges.
            "metadata": {"session_id": intent.session_id, "cart_id": intent.cart_id},
        }

    def _refund_json(self, refund: StripeRefund) -> dict[str, Any]:
        intent = self.intents[refund.intent_id]
        metadata: dict[str, str] = {}
        if refund.key is not None:
            metadata = {
                "payments_call_key": refund.key,
                "session_id": intent.session_id,
                "cart_id": intent.cart_id,
            }
        return {
            "id": refund.id,
            "object": "refund",
            "amount": refund.amount,
            "currency": intent.currency,
            "payment_intent": intent.id,
            "charge": f"ch_{intent.id}",
            "status": refund.status,
            "reason": refund.reason,
            "failure_reason": refund.failure_reason,
            "metadata": metadata,
        }

    def _dispute_json(self, dispute: StripeDispute) -> dict[str, Any]:
        intent = self.intents[dispute.intent_id]
        due = dispute.evidence_due_by
        return {
            "id": dispute.id,
            "object": "dispute",
            "amount": dispute.amount,
            "currency": intent.currency,
            "payment_intent": intent.id,
            "charge": f"ch_{intent.id}",
            "status": dispute.status,
            "reason": dispute.reason,
            "is_charge_refundable": intent.charge_refundable,
            "evidence_details": {"due_by": int(due.timestamp()) if due else None},
            "metadata": {},
        }

    # -- state changes (each emits its events) ----------------------------------------------

    def _authorized(self, intent: PaymentIntent) -> None:
        intent.authorized = intent.amount
        intent.authorized_at = self.clock()
        intent.last_payment_error = None
        if intent.capture_method == "automatic":
            intent.status = "succeeded"
            intent.amount_received = intent.amount
            self._emit("charge.succeeded", self._charge_json(intent))
            self._emit("payment_intent.succeeded", self._intent_json(intent))
        else:
            intent.status = "requires_capture"
            intent.amount_capturable = intent.amount
            self._emit("payment_intent.amount_capturable_updated", self._intent_json(intent))

    def _declined(self, intent: PaymentIntent, code: str) -> None:
        intent.status = "requires_payment_method"
        intent.last_payment_error = code
        self._emit("payment_intent.payment_failed", self._intent_json(intent))

    def _confirm(self, intent: PaymentIntent, method: str, action_result: Any) -> None:
        intent.payment_method = method
        if method == PM_DECLINED:
            self._declined(intent, "card_declined")
        elif method == PM_3DS and action_result is None:
            intent.status = "requires_action"
            self._emit("payment_intent.requires_action", self._intent_json(intent))
        elif method == PM_3DS and action_result != "succeeded":
            self._declined(intent, "payment_intent_authentication_failure")
        else:
            self._authorized(intent)

    def _capture(self, intent: PaymentIntent, amount: int, final: bool) -> None:
        intent.amount_capturable -= amount
        intent.amount_received += amount
        if final or intent.amount_capturable == 0:
            # A final capture releases whatever it did not take.
            intent.released += intent.amount_capturable
            intent.amount_capturable = 0
            intent.status = "succeeded"
        self._emit("charge.captured", self._charge_json(intent))
        if intent.status == "succeeded":
            self._emit("payment_intent.succeeded", self._intent_json(intent))

    def _cancel(self, intent: PaymentIntent, reason: str) -> None:
        intent.released += intent.amount_capturable
        intent.amount_capturable = 0
        intent.status = "canceled"
        intent.cancellation_reason = reason
        self._emit("payment_intent.canceled", self._intent_json(intent))

    def _new_refund(
        self,
        intent: PaymentIntent,
        amount: int,
        key: str | None,
        pending: bool,
        reason: str | None = None,
    ) -> StripeRefund:
        refund = StripeRefund(
            id=self._new_id("re"),
            intent_id=intent.id,
            amount=amount,
            status="pending" if pending else "succeeded",
            key=key,
            reason=reason,
        )
        intent.refunds.append(refund)
        self._emit("refund.created", self._refund_json(refund))
        if not pending:
            self._emit("charge.refunded", self._charge_json(intent))
        return refund

    def _intent_for(self, call: ProviderCall, *, create: bool = False) -> PaymentIntent | None:
        named = call.data.get("id")
        if isinstance(named, str) and named in self.intents:
            return self.intents[named]
        intent = self.intent_of_session(call.session_id)
        if intent is None and create:
            intent = PaymentIntent(
                id=self._new_id("pi"),
                session_id=call.session_id,
                cart_id=call.cart_id,
                amount=call.amount,
                currency=call.currency_code.lower(),
                capture_method="automatic" if self.automatic else "manual",
                multicapture=self.multicapture,
                created_at=self.clock(),
            )
            self.intents[intent.id] = intent
        return intent

    @staticmethod
    def _public(intent: PaymentIntent) -> dict[str, Any]:
        """What the adapter keeps of an intent (public fields only)."""
        return {
            "id": intent.id,
            "status": intent.status,
            "capture_method": intent.capture_method,
            "currency_code": intent.currency,
            "amount": intent.amount,
            **({"payment_method": intent.payment_method} if intent.payment_method else {}),
        }

    def _intent_outcome(self, intent: PaymentIntent) -> ProviderOutcome:
        """What became of an authorization, read from its intent.

        The amount is the authorization's (an intent's amount is fixed once
        confirmed); `captured` only when Stripe captured at confirmation (automatic
        capture): a capture made later is a fact of its own, not the authorization's.
        """
        data = self._public(intent)
        if intent.status in CONFIRMABLE:
            if intent.last_payment_error:
                return ProviderOutcome.declined(
                    f"{intent.id}: {intent.last_payment_error}", intent.last_payment_error
                )
            return ProviderOutcome.pending(data, reference=intent.id)
        if intent.status == "requires_action":
            action = {
                "type": "redirect_to_url",
                "url": f"https://3ds/{intent.id}",
                "payment_intent_id": intent.id,
            }
            return ProviderOutcome.requires_more(action, data)
        if intent.status in ("requires_capture", "succeeded"):
            return ProviderOutcome.succeeded(
                data,
                captured=intent.capture_method == "automatic",
                amount=intent.authorized,
                reference=intent.id,
            )
        return ProviderOutcome.canceled(data)

    # -- outside the service ----------------------------------------------------------------

    def tick(self) -> None:
        """Stripe's own clock: an authorization left uncaptured for 7 days is canceled."""
        now = self.clock()
        for intent in self.intents.values():
            authorized_at = intent.authorized_at
            if (
                intent.status == "requires_capture"
                and authorized_at is not None
                and now - authorized_at >= UNCAPTURED_EXPIRY
            ):
                self._cancel(intent, "automatic")

    def finish_3ds(self, intent_id: str, succeeded: bool = True) -> bool:
        """The customer finishes the 3-D Secure challenge (maybe long after the
        storefront moved on): the intent confirms, or its attempt fails."""
        self.tick()
        intent = self.intents[intent_id]
        if intent.status != "requires_action":
            return False
        if succeeded:
            self._authorized(intent)
        else:
            self._declined(intent, "payment_intent_authentication_failure")
        return True

    def dashboard_capture(self, intent_id: str, amount: int | None = None) -> bool:
        """A capture in Stripe's dashboard (final: the rest, if any, is released)."""
        self.tick()
        intent = self.intents[intent_id]
        if intent.status != "requires_capture":
            return False
        amount = intent.amount_capturable if amount is None else amount
        if not 0 < amount <= intent.amount_capturable:
            return False
        self._capture(intent, amount, final=True)
        return True

    def dashboard_cancel(self, intent_id: str) -> bool:
        self.tick()
        intent = self.intents[intent_id]
        if intent.status not in CANCELABLE:
            return False
        self._cancel(intent, "requested_by_customer")
        return True

    def dashboard_refund(
        self, intent_id: str, amount: int | None = None, *, pending: bool = False
    ) -> StripeRefund | None:
        intent = self.intents[intent_id]
        refundable = intent.amount_received - intent.refunding
        amount = refundable if amount is None else amount
        if not intent.charge_refundable or not 0 < amount <= refundable:
            return None
        return self._new_refund(intent, amount, None, pending, reason="requested_by_customer")

    def settle_refund(
        self, refund_id: str, status: str, failure_reason: str = "expired_or_canceled_card"
    ) -> bool:
        """A refund moves on: pending → succeeded/failed/canceled, or (rarely) a
        succeeded refund fails later. Stripe sends `refund.updated`, and
        `refund.failed` for a failure."""
        refund = self.find_refund(refund_id)
        if refund is None:
            return False
        allowed = {
            "pending": {"succeeded", "failed", "canceled"},
            "succeeded": {"failed"},
        }.get(refund.status, set())
        if status not in allowed:
            return False
        refund.status = status
        if status == "failed":
            refund.failure_reason = failure_reason
        self._emit("refund.updated", self._refund_json(refund))
        if status == "failed":
            self._emit("refund.failed", self._refund_json(refund))
        if status == "succeeded":
            self._emit("charge.refunded", self._charge_json(self.intents[refund.intent_id]))
        return True

    def open_dispute(self, intent_id: str, amount: int | None = None) -> StripeDispute | None:
        """The customer's bank opens a chargeback; the funds are withdrawn."""
        intent = self.intents[intent_id]
        disputable = intent.amount_received - intent.refunded
        amount = disputable if amount is None else amount
        if not 0 < amount <= disputable or any(d.outcome == "open" for d in intent.disputes):
            return None
        dispute = StripeDispute(
            id=self._new_id("dp"),
            intent_id=intent_id,
            amount=amount,
            evidence_due_by=self.clock() + timedelta(days=7),
        )
        intent.disputes.append(dispute)
        self._emit("charge.dispute.created", self._dispute_json(dispute))
        self._emit("charge.dispute.funds_withdrawn", self._dispute_json(dispute))
        return dispute

    def review_dispute(self, dispute_id: str) -> bool:
        """The merchant submitted evidence."""
        dispute = self.find_dispute(dispute_id)
        if dispute is None or dispute.status != "needs_response":
            return False
        dispute.status = "under_review"
        self._emit("charge.dispute.updated", self._dispute_json(dispute))
        return True

    def close_dispute(self, dispute_id: str, won: bool) -> bool:
        dispute = self.find_dispute(dispute_id)
        if dispute is None or dispute.outcome != "open":
            return False
        dispute.status = "won" if won else "lost"
        self._emit("charge.dispute.closed", self._dispute_json(dispute))
        if won:
            self._emit("charge.dispute.funds_reinstated", self._dispute_json(dispute))
        return True

    # -- idempotent requests ----------------------------------------------------------------

    def _idempotent(
        self,
        operation: str,
        key: tuple[str, ...],
        params: tuple[Any, ...],
        act: Callable[[], ProviderOutcome],
    ) -> ProviderOutcome:
        now = self.clock()
        saved = self.saved.get(key)
        if saved is not None and now - saved.at >= self.key_window:
            del self.saved[key]  # pruned: a repeat now is a new request
            saved = None
        if saved is not None:
            if saved.params != params:
                return ProviderOutcome.failed(
                    "Keys for idempotent requests can only be used with the same parameters "
                    "they were first used with.",
                    code="idempotency_error",
                )
            return saved.outcome
        outcome = act()
        self.requests.append((operation, key[1], params))
        self.saved[key] = Saved(params, outcome, now)
        return outcome

    async def _request(
        self,
        operation: str,
        call: ProviderCall,
        key: tuple[str, ...],
        params: tuple[Any, ...],
        act: Callable[[], ProviderOutcome],
    ) -> ProviderOutcome:
        self.calls.append((operation, call.idempotency_key))
        await asyncio.sleep(0)  # a round trip: other handlers run meanwhile
        await self._run(self.hooks, operation)
        self.tick()
        fault = self._fault(operation)
        if fault == "transient":
            return ProviderOutcome.transient(f"{self.id}: rate limited (nothing saved)")
        if fault == "drop":
            return ProviderOutcome.unknown(f"{self.id}: connection lost before Stripe got it")
        outcome = self._idempotent(operation, key, params, act)
        await self._run(self.after_hooks, operation)
        if fault == "lose":
            return ProviderOutcome.unknown(f"{self.id}: answer lost after Stripe acted")
        return outcome

    # -- the port: session calls --------------------------------------------------------------

    async def initiate(self, call: ProviderCall) -> ProviderOutcome:
        self.calls.append(("initiate", call.idempotency_key))
        await asyncio.sleep(0)
        intent = self._intent_for(call, create=True)
        assert intent is not None
        self._follow_amount(intent, call)
        return ProviderOutcome.succeeded(self._public(intent), reference=intent.id)

    def _follow_amount(self, intent: PaymentIntent, call: ProviderCall) -> bool:
        """Amount and currency may change only before confirmation."""
        currency = call.currency_code.lower()
        if intent.amount == call.amount and intent.currency == currency:
            return True
        if intent.status not in UPDATABLE:
            return False
        intent.amount, intent.currency = call.amount, currency
        return True

    async def update(self, call: ProviderCall) -> ProviderOutcome:
        self.calls.append(("update", call.idempotency_key))
        await asyncio.sleep(0)
        intent = self._intent_for(call, create=True)
        assert intent is not None
        if not self._follow_amount(intent, call):
            return ProviderOutcome.failed(
                f"PaymentIntent {intent.id} is {intent.status}; its amount can no longer change",
                code="payment_intent_unexpected_state",
            )
        return ProviderOutcome.succeeded(self._public(intent), reference=intent.id)

    async def update_data(self, call: ProviderCall) -> ProviderOutcome:
        return ProviderOutcome.succeeded({**call.data, **call.payment_data})

    async def delete(self, call: ProviderCall) -> ProviderOutcome:
        """The session is no longer wanted: its intent is canceled where Stripe allows."""
        self.calls.append(("delete", call.idempotency_key))
        await asyncio.sleep(0)
        self.tick()
        intent = self._intent_for(call)
        if intent is None or intent.status == "canceled":
            return ProviderOutcome.succeeded({})
        if intent.status not in CANCELABLE:
            return ProviderOutcome.failed(
                f"PaymentIntent {intent.id} is {intent.status} and cannot be canceled",
                code="payment_intent_unexpected_state",
            )
        self._cancel(intent, "abandoned")
        return ProviderOutcome.succeeded(self._public(intent), reference=intent.id)

    async def retrieve(self, call: ProviderCall) -> ProviderOutcome:
        intent = self._intent_for(call)
        return ProviderOutcome.succeeded(
            self._public(intent) if intent else dict(call.data),
            reference=intent.id if intent else None,
        )

    async def payment_data(self, call: ProviderCall) -> dict[str, Any]:
        return dict(call.data)

    async def list_payment_methods(self, customer_id: str) -> list[SavedPaymentMethod]:
        return []

    # -- the port: money calls ------------------------------------------------------------

    async def authorize(self, call: ProviderCall) -> ProviderOutcome:
        """Confirm the session's intent with the customer's payment method, or report it.

        As the adapter: the intent is read first; one past confirmation (another
        attempt confirmed it, the customer finished 3-D Secure) is reported as it
        stands. A confirmation is keyed by our key and the payment method.
        """
        self.calls.append(("authorize", call.idempotency_key))
        await asyncio.sleep(0)
        await self._run(self.hooks, "authorize")
        self.tick()
        fault = self._fault("authorize")
        if fault == "transient":
            return ProviderOutcome.transient(f"{self.id}: rate limited (nothing saved)")
        if fault == "drop":
            return ProviderOutcome.unknown(f"{self.id}: connection lost before Stripe got it")
        intent = self._intent_for(call, create=True)
        assert intent is not None
        action_result = call.payment_data.get("action_result")
        if intent.status == "requires_action" and action_result is not None:
            # The customer went through the challenge in the browser meanwhile.
            self.finish_3ds(intent.id, succeeded=action_result == "succeeded")
        method = call.payment_data.get("payment_method") or call.data.get("payment_method") or PM_OK
        if intent.status not in CONFIRMABLE or (
            intent.last_payment_error and intent.payment_method == method
        ):
            outcome = self._intent_outcome(intent)
        else:
            self._follow_amount(intent, call)

            def confirm() -> ProviderOutcome:
                if intent.status in CONFIRMABLE:
                    self._confirm(intent, str(method), action_result)
                return self._intent_outcome(intent)

            outcome = self._idempotent(
                "authorize",
                ("authorize", call.idempotency_key, str(method)),
                (intent.id,),
                confirm,
            )
        await self._run(self.after_hooks, "authorize")
        if fault == "lose":
            return ProviderOutcome.unknown(f"{self.id}: answer lost after Stripe acted")
        return outcome

    def _missing(self, call: ProviderCall) -> ProviderOutcome:
        return ProviderOutcome.failed(
            f"no PaymentIntent for {call.operation} (data {call.data})", code="missing_intent"
        )

    async def capture(self, call: ProviderCall) -> ProviderOutcome:
        intent = self._intent_for(call)
        if intent is None:
            return self._missing(call)
        # The adapter sends `final_capture: false` only for a call that is not final,
        # with multicapture; never re-read: a retry sends exactly the same request.
        final_param = False if (self.multicapture and not call.final_capture) else None
        params = (intent.id, call.amount, final_param)

        def act() -> ProviderOutcome:
            if intent.status != "requires_capture":
                return ProviderOutcome.failed(
                    f"This PaymentIntent could not be captured because it has a status of "
                    f"{intent.status}.",
                    code="payment_intent_unexpected_state",
                )
            if not 0 < call.amount <= intent.amount_capturable:
                return ProviderOutcome.failed(
                    f"amount_to_capture {call.amount} exceeds the {intent.amount_capturable} "
                    "capturable",
                    code="amount_too_large",
                )
            self._capture(intent, call.amount, final=final_param is None)
            return ProviderOutcome.succeeded(
                self._public(intent), amount=call.amount, reference=intent.id
            )

        return await self._request("capture", call, ("capture", call.idempotency_key), params, act)

    async def refund(self, call: ProviderCall) -> ProviderOutcome:
        intent = self._intent_for(call)
        if intent is None:
            return self._missing(call)
        params = (intent.id, call.amount)

        def act() -> ProviderOutcome:
            if intent.amount_received == 0:
                return ProviderOutcome.failed(
                    f"PaymentIntent {intent.id} has no successful charge to refund",
                    code="charge_not_refundable",
                )
            if not intent.charge_refundable:
                return ProviderOutcome.failed(
                    f"Charge ch_{intent.id} has been charged back; cannot issue a refund",
                    code="charge_disputed",
                )
            if not 0 < call.amount <= intent.amount_received - intent.refunding:
                return ProviderOutcome.failed(
                    f"Refund amount {call.amount} is greater than the unrefunded amount",
                    code="amount_too_large",
                )
            pending = self.pending_refunds > 0
            if pending:
                self.pending_refunds -= 1
            refund = self._new_refund(
                intent, call.amount, call.idempotency_key, pending, reason=call.reason
            )
            return self._refund_outcome(refund)

        return await self._request("refund", call, ("refund", call.idempotency_key), params, act)

    @staticmethod
    def _refund_outcome(refund: StripeRefund) -> ProviderOutcome:
        data = {"id": refund.id, "status": refund.status}
        if refund.status == "succeeded":
            return ProviderOutcome.succeeded(data, amount=refund.amount, reference=refund.id)
        if refund.status == "pending":
            return ProviderOutcome.pending(data, reference=refund.id)
        return ProviderOutcome.failed(
            f"refund {refund.id} {refund.status}: {refund.failure_reason}",
            code=refund.failure_reason or "refund_failed",
        )

    async def cancel(self, call: ProviderCall) -> ProviderOutcome:
        intent = self._intent_for(call)
        if intent is None:
            return self._missing(call)
        params = (intent.id,)

        def act() -> ProviderOutcome:
            if intent.status == "canceled":
                # The adapter takes an intent already canceled as canceled.
                return ProviderOutcome.succeeded(self._public(intent), reference=intent.id)
            if intent.status not in CANCELABLE:
                return ProviderOutcome.failed(
                    f"You cannot cancel this PaymentIntent because it has a status of "
                    f"{intent.status}.",
                    code="payment_intent_unexpected_state",
                )
            self._cancel(intent, "requested_by_customer")
            return ProviderOutcome.succeeded(self._public(intent), reference=intent.id)

        return await self._request("cancel", call, ("cancel", call.idempotency_key), params, act)

    # -- the port: what became of a call ----------------------------------------------------

    async def get_status(self, call: ProviderCall) -> ProviderOutcome:
        self.calls.append(("get_status", call.idempotency_key))
        await asyncio.sleep(0)
        await self._run(self.hooks, "get_status")
        self.tick()
        if self._fault("get_status") == "status_fail":
            # 401/403 after a key rotation, a timeout, a 5xx: the query erred.
            return ProviderOutcome.unknown(f"{self.id}: status query failed: could not tell")
        intent = self._intent_for(call)
        if call.operation == "authorize":
            if intent is None:
                return ProviderOutcome.not_found("no PaymentIntent for the session")
            if intent.status in CONFIRMABLE and not intent.last_payment_error:
                return ProviderOutcome.not_found("never confirmed at Stripe")
            return self._intent_outcome(intent)
        if intent is None:
            return ProviderOutcome.unknown(f"{self.id}: no PaymentIntent named: could not tell")
        if call.operation == "capture":
            if intent.amount_received == 0:
                return ProviderOutcome.not_found("nothing captured on the PaymentIntent")
            # Stripe keeps no capture by key: only a repeat under the same key tells
            # (answered from Stripe's record inside its 24-hour window).
            return ProviderOutcome.not_found(
                "the PaymentIntent has captures Stripe cannot attribute: send again to tell"
            )
        if call.operation == "refund":
            # Refunds are listed with their metadata, ours carrying our key: positive.
            found = next((r for r in intent.refunds if r.key == call.idempotency_key), None)
            if found is None:
                return ProviderOutcome.not_found("no refund under this key")
            return self._refund_outcome(found)
        if call.operation == "cancel":
            if intent.status == "canceled":
                return ProviderOutcome.succeeded(self._public(intent), reference=intent.id)
            return ProviderOutcome.not_found("the PaymentIntent is not canceled")
        return ProviderOutcome.not_found("session calls are safe to repeat")

    async def read_objects(self, call: ProviderCall) -> list[WebhookAction]:
        """The intent behind a payment, its refunds and its disputes, as they are now.

        As the adapter reads them (`StripeProvider.read_objects`): the intent the
        payment's data names (``pi_…``; nothing named, nothing read), only if its
        metadata names the payment's cart; its refunds and disputes as Stripe lists
        them (newest first); and each object turned into facts by the adapter's own
        mapping (`stripe_mapping.object_facts`), so the audit in the model test reads
        exactly what it would read from Stripe: no `requires_more` or `failed` fact
        for an intent that holds nothing, a `captured` fact (cumulative, with what is
        still `capturable`) for an intent partly captured, a canceled intent's
        captures before its cancel.
        """
        self.calls.append(("read_objects", call.idempotency_key))
        await asyncio.sleep(0)
        self.tick()
        if self._fault("read_objects") == "read_fail":
            raise ProviderUnavailable(f"{self.id}: could not read the objects")
        named = call.data.get("id")
        intent = self.intents.get(named) if isinstance(named, str) else None
        if intent is None or intent.cart_id != call.cart_id:
            return []
        return object_facts(
            self._intent_json(intent),
            [self._refund_json(r) for r in reversed(intent.refunds)],
            [self._dispute_json(d) for d in reversed(intent.disputes)],
        )

    # -- the port: webhooks -------------------------------------------------------------------

    def verify_webhook(self, headers: Mapping[str, str], body: bytes, now: datetime) -> None:
        return None

    def verify_stored_webhook(
        self, headers: Mapping[str, str], body: bytes, received_at: datetime
    ) -> None:
        return None

    def interpret_webhook(self, headers: Mapping[str, str], payload: str) -> WebhookAction | None:
        event = json.loads(payload)
        return self._action(str(event["type"]), event["data"]["object"], event_id=event["id"])

    async def resolve_webhook(
        self, headers: Mapping[str, str], payload: str
    ) -> WebhookAction | None:
        """Dashboard refunds and disputes name only the PaymentIntent: its metadata
        names the cart (as the adapter looks it up)."""
        action = self.interpret_webhook(headers, payload)
        if action is None or action.cart_id is not None:
            return action
        intent = self.intents.get(action.provider_reference)
        if intent is None:
            return None
        return WebhookAction(
            meaning=action.meaning,
            session_id=intent.session_id,
            cart_id=intent.cart_id,
            provider_reference=action.provider_reference,
            amount=action.amount,
            data=action.data,
            action=action.action,
            message=action.message,
            event_id=action.event_id,
            capturable=action.capturable,
        )

    def _action(
        self, event_type: str, obj: Mapping[str, Any], *, event_id: str | None
    ) -> WebhookAction | None:
        """A Stripe object as a provider fact, with the port's meanings and amounts."""
        metadata = obj.get("metadata") or {}
        session_id, cart_id = metadata.get("session_id"), metadata.get("cart_id")
        common: dict[str, Any] = {
            "session_id": session_id,
            "cart_id": cart_id,
            "event_id": event_id,
        }
        if obj.get("object") == "payment_intent":
            meaning = {
                "payment_intent.amount_capturable_updated": "authorized",
                "payment_intent.succeeded": "captured",
                "payment_intent.payment_failed": "failed",
                "payment_intent.requires_action": "requires_more",
                "payment_intent.canceled": "canceled",
            }.get(event_type)
            if meaning is None:
                return None
            amount = {
                "authorized": obj["amount_capturable"],
                "captured": obj["amount_received"],
            }.get(meaning)
            data = {
                "id": obj["id"],
                "status": obj["status"],
                "capture_method": obj["capture_method"],
                "currency_code": obj["currency"],
                "amount": obj["amount"],
            }
            action = None
            if meaning == "requires_more":
                action = {
                    "type": "redirect_to_url",
                    "url": f"https://3ds/{obj['id']}",
                    "payment_intent_id": obj["id"],
                }
            return WebhookAction(
                meaning=meaning,  # type: ignore[arg-type]
                provider_reference=obj["id"],
                amount=amount,
                capturable=obj["amount_capturable"],
                data=data,
                action=action,
                message=(obj.get("last_payment_error") or {}).get("code", "")
                if meaning == "failed"
                else "",
                **common,
            )
        if obj.get("object") == "charge":
            if event_type not in ("charge.captured",) or not obj.get("captured"):
                return None  # charge.succeeded/refunded: the intent's and refunds' events say it
            return WebhookAction(
                meaning="captured",
                provider_reference=obj["payment_intent"],
                amount=obj["amount_captured"],
                # The charge's `amount` is what was authorized (a partial capture
                # captures less of it): what the payment holds if booked from this.
                data={
                    "id": obj["payment_intent"],
                    "latest_charge": obj["id"],
                    "amount": obj["amount"],
                },
                message=f"charge {obj['id']} captured",
                **common,
            )
        if obj.get("object") == "refund":
            meaning = {
                "pending": "refund_pending",
                "succeeded": "refund_succeeded",
                "failed": "refund_failed",
                "canceled": "refund_failed",
            }[obj["status"]]
            return WebhookAction(
                meaning=meaning,  # type: ignore[arg-type]
                provider_reference=obj["payment_intent"],
                amount=obj["amount"],
                data={
                    "refund_id": obj["id"],
                    "refund_status": obj["status"],
                    "provider_key": metadata.get("payments_call_key"),
                    "reason": obj.get("reason"),
                    "failure_reason": obj.get("failure_reason"),
                },
                message=f"refund {obj['id']} {obj['status']}",
                **common,
            )
        if obj.get("object") == "dispute":
            due = (obj.get("evidence_details") or {}).get("due_by")
            return WebhookAction(
                meaning="disputed",
                provider_reference=obj["payment_intent"],
                amount=obj["amount"],
                data={
                    "dispute_id": obj["id"],
                    "status": DISPUTE_OUTCOMES[obj["status"]],
                    "provider_status": obj["status"],
                    "reason": obj["reason"],
                    "evidence_due_by": datetime.fromtimestamp(due, UTC) if due else None,
                },
                message=f"dispute {obj['id']} {obj['status']}",
                **common,
            )
        return None

    async def close(self) -> None:
        return None


# -- the books, read the way the contract shows them ----------------------------------------


@dataclass(frozen=True)
class Books:
    """What the service's books say about one payment, in the ledger's terms."""

    authorized: int
    captured: int
    refunded: int
    released: int
    canceled: bool
    currency: str
    disputes: dict[str, str]


def published_data(events: list[Any], event_type: str, **match: Any) -> list[dict[str, Any]]:
    """The `data` of published events of a type whose data has the `match` values."""
    found = []
    for event in events:
        if event.type != event_type:
            continue
        data = event.payload.get("data", {})
        if all(data.get(k) == v for k, v in match.items()):
            found.append(data)
    return found


def books_of(payment: Any, published: list[Any]) -> Books:
    """The payment's books: amounts from the aggregate, the released part as the
    contract announces it (`released_amount` on `payment.captured`; all that was not
    captured once canceled), or from the payment's own `released_total`/
    `released_amount` should the aggregate keep one."""
    released = getattr(payment, "released_amount", None)
    if not isinstance(released, int):
        released = sum(
            int(d.get("released_amount") or 0)
            for d in published_data(published, "payment.captured", payment_id=payment.id)
        )
    if payment.is_canceled:  # all that was neither captured nor released before
        released = payment.amount - payment.captured_total
    return Books(
        authorized=payment.amount,
        captured=payment.captured_total,
        refunded=payment.refunded_total,
        released=released,
        canceled=payment.is_canceled,
        currency=payment.currency_code,
        disputes={d.id: d.status for d in payment.disputes},
    )


def as_ledger(books: Books) -> Ledger:
    return Ledger(
        authorized=books.authorized,
        captured=books.captured,
        refunded=books.refunded,
        released=books.released,
        canceled=books.canceled,
        currency=books.currency,
        disputes=dict(books.disputes),
    )


def needs_attention(published: list[Any], cart_id: str) -> list[dict[str, Any]]:
    """`payment.failed` with reason `needs_attention` published for the cart."""
    return published_data(published, "payment.failed", cart_id=cart_id, reason="needs_attention")


def webhook_of(provider_id: str, event: Mapping[str, Any], received_at: datetime) -> Any:
    """The `payment.provider_webhook` data the HTTP side stores for a Stripe event."""
    from schemas.inbound import ProviderWebhook

    return ProviderWebhook.model_validate(
        {
            "provider_id": provider_id,
            "received_at": received_at.isoformat(),
            "headers": {"stripe-signature": "t=0,v1=model"},
            "payload": StripeProcessor.body(event),
        }
    )


def envelope_id(provider_id: str, event: Mapping[str, Any]) -> str:
    """The envelope id the HTTP side gives a delivery: the same for a redelivery of
    the same body (`service.webhook_intake.webhook_event_id`)."""
    from service.webhook_intake import webhook_event_id

    return webhook_event_id(provider_id, StripeProcessor.body(event).encode())
