"""The payment collection aggregate: one per cart, stored as one document.

Following Medusa's payment module, a collection holds one payment session per
provider; the session that authorizes becomes the (single) payment, which
collects captures and refunds. The aggregate also carries its own inbox (ids of
the inbound events it consumed) and outbox (the outbound events its decisions
produced), so one atomic write of the document stores a state change together
with the events it causes and the events that caused it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from service.domain.statuses import CollectionStatus, SessionStatus

Operation = Literal["authorize", "capture", "refund", "cancel"]


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
    created_at: datetime
    updated_at: datetime


class Capture(_Model):
    id: str
    amount: int
    command_id: str
    source: Literal["admin", "auto", "webhook"] = "admin"
    created_at: datetime


class Refund(_Model):
    id: str
    amount: int
    command_id: str
    reason: str | None = None
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
    canceled_at: datetime | None = None
    canceled_event_id: str | None = None
    captures: list[Capture] = Field(default_factory=list)
    refunds: list[Refund] = Field(default_factory=list)
    disputes: list[Dispute] = Field(default_factory=list)
    pending: list[PendingOperation] = Field(default_factory=list)
    history: list[HistoryEntry] = Field(default_factory=list)

    @property
    def captured_total(self) -> int:
        return sum(c.amount for c in self.captures)

    @property
    def refunded_total(self) -> int:
        return sum(r.amount for r in self.refunds)

    @property
    def pending_capture(self) -> int:
        return sum(p.amount for p in self.pending if p.operation == "capture")

    @property
    def pending_refund(self) -> int:
        return sum(p.amount for p in self.pending if p.operation == "refund")

    @property
    def is_canceled(self) -> bool:
        return self.canceled_at is not None

    def pending_for(self, command_id: str) -> PendingOperation | None:
        return next((p for p in self.pending if p.command_id == command_id), None)


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
    found_at: datetime

    @property
    def void_key(self) -> str:
        return f"{self.authorization_key}:void"


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
    reconcile_after: datetime | None = None
    """Back-off: a reconciler pass that could not settle everything waits until then."""
    reconcile_attempts: int = 0
    processed: list[ProcessedEvent] = Field(default_factory=list)
    outbox: list[OutboxEvent] = Field(default_factory=list)
    created_at: datetime
    updated_at: datetime

    # -- lookups -------------------------------------------------------------

    def session_for(self, provider_id: str) -> PaymentSession | None:
        return next((s for s in self.sessions if s.provider_id == provider_id), None)

    def session_by_id(self, session_id: str) -> PaymentSession | None:
        return next((s for s in self.sessions if s.id == session_id), None)

    def attempt_for(self, idempotency_key: str) -> CheckoutAttempt | None:
        return next(
            (a for a in self.checkout_attempts if a.idempotency_key == idempotency_key), None
        )

    def processed_event(self, event_id: str) -> ProcessedEvent | None:
        return next((p for p in self.processed if p.id == event_id), None)

    def has_processed(self, event_id: str) -> bool:
        return self.processed_event(event_id) is not None

    def outbox_event(self, event_id: str) -> OutboxEvent | None:
        return next((e for e in self.outbox if e.id == event_id), None)

    def republish(self, event_id: str | None) -> None:
        """Mark a stored outbound event unsent, so it is published again with its id:
        the answer to a repeated request that took effect already."""
        stored = self.outbox_event(event_id) if event_id else None
        if stored is not None:
            stored.sent = False

    @property
    def unsent_events(self) -> list[OutboxEvent]:
        return [e for e in self.outbox if not e.sent]

    @property
    def needs_reconcile(self) -> bool:
        return (
            any(s.needs_reconcile for s in self.sessions)
            or bool(self.payment and self.payment.pending)
            or bool(self.voids)
        )

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
