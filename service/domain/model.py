"""The payment collection aggregate: one per cart, stored as one document.

Following Medusa's payment module, a collection holds one payment session per
provider; the session that authorizes becomes the (single) payment, which
collects captures and refunds. The aggregate also carries its own inbox (ids of
the inbound events it consumed) and outbox (the outbound events its decisions
produced), so one atomic write of the document stores a state change together
with the events it causes and the events that caused it.

Its behaviour is in the methods below, one per thing that can happen to it; each
delegates to the module holding those rules (`cart`, `checkout`,
`payment_operations`, `provider_facts`, `reconcile`). A rule changes the aggregate in
place and *records* the outbound events it causes (:meth:`PaymentCollection.record`);
the unit of work moves what was recorded into the outbox when it stores the change
(:meth:`PaymentCollection.commit_recorded`), and drops the object when the decision
stores nothing.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field

from service.domain.capabilities import Capabilities
from service.domain.statuses import CollectionStatus, SessionStatus

if TYPE_CHECKING:
    from service.domain.calls import Answered, Answers, ProviderCall
    from service.domain.commands import CompleteCheckout, PaymentCommand, UpdateCart
    from service.domain.payment_operations import Lease
    from service.domain.results import Decision

Operation = Literal["authorize", "capture", "refund", "cancel"]

INBOX_WINDOW = 64
"""Consumed event ids a collection keeps (the last ones): a redelivery or replay of a
recent event is recognised by its id; an older replay by the state it would change
(see `docs/contract.md`, "Replays"). Bounded, so state does not grow with messages."""
HISTORY_LIMIT = 50
"""History entries a payment keeps (the last ones). What moved money is kept for good
on its capture, refund or cancel record; history is the who-did-what of the last."""
ATTEMPTS_KEPT = 10
"""Checkout attempts kept besides those a session still refers to."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", validate_assignment=False)


class OutboxEvent(_Model):
    """An outbound event stored with the change that caused it."""

    id: str
    type: str
    key: str
    payload: dict[str, Any]
    """The whole CloudEvent as a JSON-compatible object."""
    causation_id: str
    created_at: datetime
    sent: bool = False


class ProcessedEvent(_Model):
    """An inbound event (or admin command) that took effect on this aggregate."""

    id: str
    type: str
    at: datetime
    fingerprint: str | None = None
    """For commands: what must match when the same id is seen again."""


class PaymentSession(_Model):
    id: str
    provider_id: str
    amount: int
    currency_code: str
    status: SessionStatus = SessionStatus.PENDING
    data: dict[str, Any] = Field(default_factory=dict)
    context: dict[str, Any] = Field(default_factory=dict)
    initiated: bool = False
    """False until the provider's initiate call answered."""
    authorization_key: str | None = None
    """Provider idempotency key of the last authorization attempt."""
    needs_reconcile: bool = False
    """The last authorization's outcome is unknown (or its call is in flight): the
    reconciler must ask, and `cart.updated` leaves the session alone."""
    lease_until: datetime | None = None
    """While set and not past, a checkout handler is making the authorization call:
    the reconciler and other checkouts wait until then."""
    last_error: str | None = None
    capabilities: Capabilities | None = None
    """What the session's provider allows, as the checkout that reserved its last
    authorization found it; the payment keeps it."""
    object_rank: int = 0
    """How far the session's provider object has gone, as last reported (see
    `OBJECT_RANK`): a later fact of a lower rank describes an older state and is stale
    (a webhook of the authorization arriving after the intent was canceled)."""
    created_at: datetime
    updated_at: datetime

    @property
    def reference(self) -> str | None:
        """The provider's object of the session (Stripe: its PaymentIntent id)."""
        value = self.data.get("id")
        return value if isinstance(value, str) and value else None


OBJECT_RANK = {"open": 0, "authorized": 1, "captured": 2, "canceled": 3}
"""An authorization object's states in the only order they can come: open (awaiting
a payment method, 3-D Secure, or declined and open to another try), authorized (held),
captured, canceled (final; after partial captures, the rest released)."""


class Capture(_Model):
    id: str
    amount: int
    command_id: str
    source: Literal["admin", "auto", "webhook"] = "admin"
    created_at: datetime


RefundStatus = Literal["pending", "succeeded", "failed", "canceled"]

REFUND_RANK: dict[str, int] = {"pending": 0, "succeeded": 1, "failed": 2, "canceled": 2}
"""A refund's status only moves up this rank (a succeeded refund can still fail at
Stripe; a failed or canceled one is final): a fact of a lower rank is stale."""


class Refund(_Model):
    """A refund object at the provider, by its id; only a succeeded one is money back."""

    id: str
    amount: int
    command_id: str
    reason: str | None = None
    reference: str | None = None
    """The provider's refund id (Stripe `re_…`): how every later fact finds it."""
    status: RefundStatus = "succeeded"
    created_at: datetime


class Dispute(_Model):
    """A dispute (chargeback) of the payment, as the provider last reported it."""

    id: str
    """The provider's dispute id (Stripe: `dp_…`)."""
    amount: int
    status: Literal["open", "won", "lost"]
    provider_status: str
    """The provider's own status (Stripe: `needs_response`, `under_review`, …)."""
    reason: str
    evidence_due_by: datetime | None = None
    opened_at: datetime
    updated_at: datetime


class PendingOperation(_Model):
    """A money movement reserved before its provider call (a recovery point).

    Writing it first means concurrent commands and webhooks see the amount as
    taken, and a crash after the provider call is resumed with the same
    provider idempotency key instead of being repeated with a new one.
    """

    operation: Literal["capture", "refund", "cancel"]
    command_id: str
    amount: int
    provider_key: str
    reason: str | None = None
    fingerprint: str = ""
    """The command's fingerprint, for the inbox entry recorded when it settles."""
    started_at: datetime
    owner: str | None = None
    """Who is making the provider call (instance and command); None: nobody, since
    a crash or an older version of the service."""
    lease_until: datetime | None = None
    """Until when the owner may still be working on the call (its timeout, retries
    and status queries). Only after it does the reconciler take the operation over."""
    final: bool = True
    """A capture: the last on the authorization (sent as such, the same on a retry)."""
    reference: str | None = None
    """The provider's object once it named one (a refund accepted as `pending`)."""
    attention: str | None = None
    """Why its outcome cannot be known without a person (`needs_attention`): the
    provider cannot tell and the window in which a repeat is safe has passed."""


class HistoryEntry(_Model):
    """Who did what to a payment (admin commands record the signing key id)."""

    at: datetime
    action: str
    command_id: str
    amount: int | None = None
    requested_by: str | None = None
    key_id: str | None = None
    note: str | None = None
    outcome: str


class Payment(_Model):
    id: str
    session_id: str
    provider_id: str
    amount: int
    currency_code: str
    data: dict[str, Any] = Field(default_factory=dict)
    authorized_at: datetime
    authorized_event_id: str
    authorized_event: OutboxEvent | None = None
    """`payment.authorized` as first published: the answer to a repeated checkout is
    this event again, the same bytes, after it left the outbox."""
    canceled_at: datetime | None = None
    canceled_event_id: str | None = None
    canceled_event: OutboxEvent | None = None
    """`payment.canceled` as first published, for the same reason."""
    captures: list[Capture] = Field(default_factory=list)
    refunds: list[Refund] = Field(default_factory=list)
    disputes: list[Dispute] = Field(default_factory=list)
    pending: list[PendingOperation] = Field(default_factory=list)
    history: list[HistoryEntry] = Field(default_factory=list)
    reference: str | None = None
    """The provider's authorization object (Stripe: the PaymentIntent id)."""
    capabilities: Capabilities = Field(default_factory=Capabilities)
    """What its provider allows, as when it was authorized."""
    released_amount: int = 0
    """Released at the provider by a final partial capture: no longer capturable."""

    @property
    def captured_total(self) -> int:
        return sum(c.amount for c in self.captures)

    @property
    def refunded_total(self) -> int:
        return sum(r.amount for r in self.refunds if r.status == "succeeded")

    @property
    def capturable(self) -> int:
        """What is authorized and neither captured, reserved for a capture, nor released."""
        return self.amount - self.captured_total - self.pending_capture - self.released_amount

    @property
    def lost_to_disputes(self) -> int:
        """Money a lost dispute gave back to the customer: no longer refundable."""
        return sum(d.amount for d in self.disputes if d.status == "lost")

    @property
    def unrefunded(self) -> int:
        """Captured and not refunded: the most a refund the provider reports can be
        once its capture is booked. A lost dispute does not lower it (the provider
        refunds and settles a dispute of one charge independently: a merchant can lose
        both), nor does a refund of ours in flight (the provider's refund may be it)."""
        return max(0, self.captured_total - self.refunded_total)

    @property
    def refundable(self) -> int:
        """What a refund command may ask for: captured, and not refunded, reserved
        for a refund, or lost to a dispute."""
        return max(
            0,
            self.captured_total - self.refunded_total - self.pending_refund - self.lost_to_disputes,
        )

    def refund_object(self, reference: str) -> Refund | None:
        return next((r for r in self.refunds if r.reference == reference), None)

    @property
    def pending_capture(self) -> int:
        return sum(p.amount for p in self.pending if p.operation == "capture")

    @property
    def pending_refund(self) -> int:
        return sum(p.amount for p in self.pending if p.operation == "refund")

    @property
    def is_canceled(self) -> bool:
        return self.canceled_at is not None

    def key_forgotten(self, pending: PendingOperation, now: datetime) -> bool:
        """Whether `pending` started longer ago than the provider remembers idempotency
        keys: a repeat under its key would then be a new request (a second capture or
        refund), so it is never repeated, only asked about."""
        window = self.capabilities.idempotency_window_s
        return window is not None and (now - pending.started_at).total_seconds() > window

    def pending_for(self, command_id: str) -> PendingOperation | None:
        return next((p for p in self.pending if p.command_id == command_id), None)

    def log(self, entry: HistoryEntry) -> None:
        """Add to the payment's history, keeping the last `HISTORY_LIMIT` entries."""
        self.history.append(entry)
        if len(self.history) > HISTORY_LIMIT:
            del self.history[: len(self.history) - HISTORY_LIMIT]

    def took_effect(self, operation: str, command_id: str) -> bool:
        """Whether a command of ours moved money here (booked): recognised by the state
        it changed, however long ago it came. (One still reserved is resumed instead.)"""
        if operation == "capture":
            return any(c.command_id == command_id for c in self.captures)
        if operation == "refund":
            return any(r.command_id == command_id for r in self.refunds)
        return False


class LostAuthorization(_Model):
    """An authorization the provider holds that is not the collection's payment.

    Found when a concurrent checkout won, or when an authorization whose outcome
    was unknown turns out to have succeeded after another one became the payment.
    It must be voided (at most one live authorization per cart); kept here until
    the provider confirms, so a crash cannot forget it.
    """

    provider_id: str
    session_id: str
    authorization_key: str
    """The provider key the authorization was made under."""
    amount: int
    currency_code: str
    data: dict[str, Any] = Field(default_factory=dict)
    """What the provider answered (e.g. the PaymentIntent id): the void must name it."""
    confirmed: bool = True
    """False when the authorization's own outcome is unknown: ask before voiding."""
    reference: str | None = None
    """The provider's object that holds the money (the PaymentIntent, the hold): what
    the release names, and how it is told from the payment's own object."""
    captured: bool = False
    """The hold was captured too (automatic capture): released by a refund."""
    found_at: datetime

    @property
    def void_key(self) -> str:
        return f"{self.authorization_key}:void"


Meaning: TypeAlias = Literal[
    "authorized",
    "captured",
    "failed",
    "requires_more",
    "canceled",
    "refund_succeeded",
    "refund_pending",
    "refund_failed",
    "disputed",
]
"""What a provider fact says of its object (the port's `WebhookMeaning`)."""


class Notification(_Model):
    """A provider fact (a webhook, or an object the audit read), as its adapter read
    it: see `service.ports.providers.WebhookAction` for what each field means."""

    meaning: Meaning
    provider_id: str
    session_id: str | None = None
    reference: str | None = None
    """The provider's authorization object the fact is about (Stripe: PaymentIntent)."""
    event_id: str | None = None
    """The provider's own id of the event, if it came as one."""
    amount: int | None = None
    capturable: int | None = None
    data: dict[str, Any] = Field(default_factory=dict)
    action: dict[str, Any] | None = None
    message: str = ""


class ReleasedHold(_Model):
    """A hold that was not the payment, released at the provider (booked, for good)."""

    reference: str
    provider_id: str
    amount: int
    how: Literal["cancel", "refund"]
    released_at: datetime


class ParkedFact(_Model):
    """A provider fact that cannot be applied yet (what it is about is not booked, or
    an operation on it is in flight): kept until it can be, never dropped."""

    notification: Notification
    cause: str
    """The id of the event that brought it (the cause of what it books)."""
    parked_at: datetime


class DeferredCart(_Model):
    """A `cart.updated` that came while an authorization was in flight or unknown:
    what was asked of the provider stays as it was, and this is applied once the
    authorization settles without a payment."""

    event_id: str
    region_id: str
    currency_code: str
    amount: int
    version: int | None = None
    context: dict[str, Any] = Field(default_factory=dict)


class CheckoutAttempt(_Model):
    """A recovery point per checkout idempotency key (Medusa's idempotency key)."""

    idempotency_key: str
    amount: int
    provider_id: str
    session_id: str | None
    provider_key: str | None
    outcome: str
    """Last outcome: started, requires_more, authorized, declined, failed, unknown."""
    event_id: str = ""
    """The checkout event that made the last try: the cause of what settles it."""
    tries: int = 1
    created_at: datetime
    updated_at: datetime


class PaymentCollection(_Model):
    id: str
    cart_id: str
    region_id: str
    currency_code: str
    amount: int
    status: CollectionStatus = CollectionStatus.NOT_PAID
    cart_version: int | None = None
    email: str | None = None
    customer: dict[str, Any] | None = None
    context: dict[str, Any] = Field(default_factory=dict)
    selected_provider_id: str | None = None
    sessions: list[PaymentSession] = Field(default_factory=list)
    session_seq: int = 0
    """Counts sessions ever created, so a re-created session gets a new id."""
    payment: Payment | None = None
    checkout_attempts: list[CheckoutAttempt] = Field(default_factory=list)
    voids: list[LostAuthorization] = Field(default_factory=list)
    released_holds: list[ReleasedHold] = Field(default_factory=list)
    parked: list[ParkedFact] = Field(default_factory=list)
    provider_events: list[str] = Field(default_factory=list)
    """The provider's own ids of the latest events applied (a bounded window): a signed
    event replayed under another envelope id is recognised by its id."""
    deferred_cart: DeferredCart | None = None
    reconcile_after: datetime | None = None
    """Back-off: a reconciler pass that could not settle everything waits until then."""
    reconcile_attempts: int = 0
    processed: list[ProcessedEvent] = Field(default_factory=list)
    outbox: list[OutboxEvent] = Field(default_factory=list)
    created_at: datetime
    updated_at: datetime

    recorded_events: list[OutboxEvent] = Field(default_factory=list, exclude=True, repr=False)
    """Events recorded by decisions since the aggregate was loaded (not stored yet)."""

    # -- recorded events -------------------------------------------------------

    def record(self, event: OutboxEvent) -> OutboxEvent:
        """Record an outbound event caused by a change; an event of the same id
        recorded or stored before is kept instead (the same cause deciding the same
        event again: the first may already be published)."""
        existing = self.outbox_event(event.id)
        if existing is not None:
            return existing
        self.recorded_events.append(event)
        return event

    @property
    def recorded(self) -> list[OutboxEvent]:
        """What decisions recorded since the load, in order (not in the outbox yet)."""
        return list(self.recorded_events)

    @property
    def events(self) -> list[OutboxEvent]:
        """Every outbound event of the aggregate: in its outbox, then recorded since the load."""
        return [*self.outbox, *self.recorded_events]

    def stored_state(self) -> dict[str, Any]:
        """The aggregate as a stored document's state (JSON types), without its outbox:
        the store keeps the unsent events (:attr:`unsent_events`, recorded ones
        included) apart from the state, each written once and removed once sent."""
        return self.model_dump(mode="json", exclude={"outbox"})

    def commit_recorded(self) -> list[OutboxEvent]:
        """Move the recorded events into the outbox (the unit of work, as it stores
        the change); returns them."""
        recorded = self.recorded_events
        self.recorded_events = []
        self.outbox.extend(recorded)
        return recorded

    # -- lookups -------------------------------------------------------------

    def session_for(self, provider_id: str) -> PaymentSession | None:
        return next((s for s in self.sessions if s.provider_id == provider_id), None)

    def session_by_id(self, session_id: str) -> PaymentSession | None:
        return next((s for s in self.sessions if s.id == session_id), None)

    def attempt_for(self, idempotency_key: str) -> CheckoutAttempt | None:
        return next(
            (a for a in self.checkout_attempts if a.idempotency_key == idempotency_key), None
        )

    def remember(
        self, event_id: str, event_type: str, at: datetime, fingerprint: str | None = None
    ) -> None:
        """Record an event as consumed (the inbox), keeping the last `INBOX_WINDOW`."""
        self.processed.append(
            ProcessedEvent(id=event_id, type=event_type, at=at, fingerprint=fingerprint)
        )
        if len(self.processed) > INBOX_WINDOW:
            del self.processed[: len(self.processed) - INBOX_WINDOW]

    def add_attempt(self, attempt: CheckoutAttempt) -> None:
        """A new checkout attempt; the oldest ones that no session refers to any more
        are dropped beyond `ATTEMPTS_KEPT` (a storefront retrying with new keys)."""
        self.checkout_attempts.append(attempt)
        in_use = {s.authorization_key for s in self.sessions}
        extra = len(self.checkout_attempts) - ATTEMPTS_KEPT
        if extra <= 0:
            return
        kept = []
        for old in self.checkout_attempts:
            if extra > 0 and old.idempotency_key not in in_use and old is not attempt:
                extra -= 1
                continue
            kept.append(old)
        self.checkout_attempts = kept

    def processed_event(self, event_id: str) -> ProcessedEvent | None:
        return next((p for p in self.processed if p.id == event_id), None)

    def has_processed(self, event_id: str) -> bool:
        return self.processed_event(event_id) is not None

    def outbox_event(self, event_id: str) -> OutboxEvent | None:
        """A stored or recorded outbound event."""
        return next((e for e in self.events if e.id == event_id), None)

    def republish(self, event: OutboxEvent | None) -> None:
        """Publish a stored outbound event again, with its id and bytes: the answer to a
        repeated request that took effect already. Still unsent: it goes out as it is;
        sent (gone from the outbox): the kept copy is recorded again."""
        if event is None:
            return
        stored = self.outbox_event(event.id)
        if stored is not None:
            stored.sent = False
            return
        self.recorded_events.append(event.model_copy(update={"sent": False}))

    @property
    def unsent_events(self) -> list[OutboxEvent]:
        return [e for e in self.events if not e.sent]

    @property
    def needs_reconcile(self) -> bool:
        return (
            any(s.needs_reconcile for s in self.sessions)
            or bool(self.payment and self.payment.pending)
            or bool(self.voids)
        )

    @property
    def needs_attention(self) -> list[PendingOperation]:
        """Operations whose outcome cannot be known without a person (promise 9)."""
        return [p for p in self.payment.pending if p.attention] if self.payment else []

    @property
    def reconcile_due_at(self) -> datetime | None:
        """When the reconciler should look at this collection next (None: never).

        Unknown authorizations from when they were stored; reservations from the
        end of their owner's lease; all of it no earlier than the back-off.
        """
        due = [
            max(s.updated_at, s.lease_until or s.updated_at)
            for s in self.sessions
            if s.needs_reconcile
        ]
        due += [v.found_at for v in self.voids]
        if self.payment is not None:
            due += [p.lease_until or p.started_at for p in self.payment.pending]
        if not due:
            return None
        earliest = min(due)
        if self.reconcile_after is not None and self.reconcile_after > earliest:
            return self.reconcile_after
        return earliest

    @property
    def is_authorized(self) -> bool:
        return self.payment is not None

    # -- behaviour ---------------------------------------------------------------
    # One method per thing that can happen to a collection. Each changes it in place
    # and records the events it causes; the rules are in the module named, which
    # also serves the tests of those rules. A decision that stores nothing leaves
    # the object to be dropped (the unit of work never stores or reuses it).

    @classmethod
    def for_cart(
        cls, cart_id: str, region_id: str, currency_code: str, amount: int, now: datetime
    ) -> PaymentCollection:
        """A new collection for a cart (its first `cart.updated` or `checkout.completed`)."""
        from service.domain.cart import new_collection

        return new_collection(cart_id, region_id, currency_code, amount, now)

    def update_cart(self, cmd: UpdateCart) -> Decision:
        """`cart.updated`: follow the cart, plan the session calls (`cart.py`)."""
        from service.domain.cart import decide_cart_update

        return decide_cart_update(self, cmd)

    def settle_cart_update(self, answered: Answered, now: datetime) -> Decision:
        """The answers to a cart update's session calls (`cart.py`)."""
        from service.domain.cart import finish_cart_update
        from service.domain.results import Decision

        return self._then_parked(Decision("settled", finish_cart_update(self, answered, now)), now)

    def checkout(
        self, cmd: CompleteCheckout, lease_until: datetime | None, answers: Answers
    ) -> Decision:
        """`checkout.completed`: reserve the authorization, or answer (`checkout.py`)."""
        from service.domain.checkout import decide_checkout

        return self._then_parked(decide_checkout(self, cmd, lease_until, answers), cmd.now)

    def settle_checkout(
        self, cmd: CompleteCheckout, answered: Answered, answers: Answers
    ) -> Decision:
        """The answers to a checkout's initiate and authorize calls (`checkout.py`)."""
        from service.domain.checkout import settle_checkout

        return self._then_parked(settle_checkout(self, cmd, answered, answers), cmd.now)

    def payment_command(
        self, cmd: PaymentCommand, lease: Lease | None, conflict: str | None
    ) -> Decision:
        """Admin capture, refund or cancel: reserve it, or refuse (`payment_operations.py`)."""
        from service.domain.payment_operations import decide_payment_command

        return decide_payment_command(self, cmd, lease, conflict)

    def settle_payment_command(self, cmd: PaymentCommand, answered: Answered) -> Decision:
        """The provider's answer to a reserved operation (`payment_operations.py`)."""
        from service.domain.payment_operations import settle_payment_command

        return self._then_parked(settle_payment_command(self, cmd, answered), cmd.now)

    def notify(self, event_id: str, notification: Notification, now: datetime) -> Decision:
        """What a provider reported by webhook (`provider_facts.py`)."""
        from service.domain.provider_facts import decide_notification

        return decide_notification(self, event_id, notification, now)

    def resolve(self, command_id: str, happened: bool, by: str, now: datetime) -> Decision:
        """A person's word on an operation that needs attention (`payment_operations.py`)."""
        from service.domain.payment_operations import resolve_attention

        return self._then_parked(resolve_attention(self, command_id, happened, by, now), now)

    @property
    def audited(self) -> bool:
        """Whether a provider may hold money for the cart: a payment, or an
        authorization that was asked for (the audit sweep reads those)."""
        return self.payment is not None or any(
            s.authorization_key is not None for s in self.sessions
        )

    def audit_reads(self) -> list[ProviderCall]:
        """What the audit sweep reads at the providers (`provider_facts.py`)."""
        from service.domain.provider_facts import audit_reads

        return audit_reads(self)

    def audit(self, facts: list[Notification], now: datetime) -> Decision:
        """The provider's objects as they are now, read by the audit (`provider_facts.py`)."""
        from service.domain.provider_facts import audit_facts

        return audit_facts(self, facts, now)

    def reconcile(self, now: datetime) -> Decision:
        """What the reconciler asks the providers about now (`reconcile.py`)."""
        from service.domain.reconcile import decide_reconcile

        return decide_reconcile(self, now)

    def settle_reconcile(self, answered: Answered, now: datetime) -> Decision:
        """The providers' answers to the reconciler's questions (`reconcile.py`)."""
        from service.domain.reconcile import settle_reconcile

        return self._then_parked(settle_reconcile(self, answered, now), now)

    def _then_parked(self, decision: Decision, now: datetime) -> Decision:
        """After a change, the provider facts kept for later are tried again: what they
        waited for (a capture booked, an operation of ours settled) may be there now."""
        if self.parked and decision.kind in ("settled", "call"):
            from service.domain.provider_facts import retry_parked

            if retry_parked(self, now) and decision.kind == "settled":
                decision.changed = True
        return decision
