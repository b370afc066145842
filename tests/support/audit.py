"""The end-of-test audit: do the contract's promises hold over what really happened?

Every fault test ends with :func:`audit`, which reads the service's MongoDB
database (collections, orphan answers, the sandbox provider's ledger) and the
outbound events a test observer consumed from Kafka, and checks:

* **at most one authorized payment per cart**: per cart, one non-voided
  `authorize`/`authorized` ledger entry at most (and at most one per checkout
  key), and every observed `payment.authorized` of the cart names the same
  payment with the same event id;
* **amounts**: captured ≤ authorized and refunded ≤ captured for every payment,
  in the stored state *and* in the provider's ledger, and the two agree once no
  operation is in flight: money moved at the provider is money recorded;
* **outbox**: every event of every collection (unsent in its document, or sent and
  archived in `sent_events`) and of every orphan answer was observed on Kafka at
  least once, and nothing is left unsent;
* **stable ids**: re-deliveries repeat the same id: no two observed events with
  different ids share a cause and type (nor two dead letters one source record);
* **nothing left unknown**: no authorization or reserved operation unsettled.

Some of these only hold once the service has caught up (relay, reconciler), so
:func:`audit` re-checks until they hold or `wait_s` runs out, then returns the
report with its figures (carts, charges, events, duplicates by id); the test
prints them and calls :meth:`AuditReport.assert_clean`.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from pymongo.asynchronous.database import AsyncDatabase

from service.adapters.mongo_store import ARCHIVE
from service.adapters.stored_document import archived_event, read_document
from service.domain.model import OutboxEvent, PaymentCollection
from service.testing.harness import ReceivedEvent

__all__ = ["AuditReport", "audit", "audit_once"]

DEAD_LETTER_TYPE = "payments.dead_letter"
VOID_SUFFIX = ":void"
"""Idempotency-key suffix of the cancel that voids an authorization lost to a race."""


@dataclass
class AuditReport:
    """Figures of one audit and the promises it found broken (`violations`)."""

    carts: int = 0
    authorized_payments: int = 0
    charges: int = 0
    """Effective `authorize`/`authorized` entries in the provider's ledger."""
    voided_charges: int = 0
    captures: int = 0
    captured_amount: int = 0
    refunds: int = 0
    refunded_amount: int = 0
    cancels: int = 0
    outbox_events: int = 0
    orphan_events: int = 0
    events_observed: int = 0
    distinct_event_ids: int = 0
    duplicates_by_id: int = 0
    """Observed deliveries beyond the first of an id (re-publishes keep the id)."""
    dead_letters: int = 0
    dead_letter_kinds: Counter[str] = field(default_factory=Counter)
    event_types: Counter[str] = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.violations

    def figures(self) -> str:
        """One line of figures, the same for every fault test."""
        kinds = ",".join(f"{k}={v}" for k, v in sorted(self.dead_letter_kinds.items()))
        return (
            f"carts={self.carts} authorized={self.authorized_payments} "
            f"charges={self.charges} voided={self.voided_charges} "
            f"captures={self.captures}/{self.captured_amount} "
            f"refunds={self.refunds}/{self.refunded_amount} cancels={self.cancels} "
            f"outbox={self.outbox_events}+{self.orphan_events} "
            f"events={self.events_observed} distinct={self.distinct_event_ids} "
            f"duplicates_by_id={self.duplicates_by_id} "
            f"dead_letters={self.dead_letters}" + (f" ({kinds})" if kinds else "")
        )

    def render(self, title: str = "audit") -> str:
        lines = [f"[{title}] {self.figures()}"]
        if self.violations:
            lines.append(f"[{title}] {len(self.violations)} VIOLATION(S):")
            lines.extend(f"  - {v}" for v in self.violations[:40])
            if len(self.violations) > 40:
                lines.append(f"  … and {len(self.violations) - 40} more")
        return "\n".join(lines)

    def assert_clean(self) -> None:
        assert self.clean, self.render()


async def audit(
    database: AsyncDatabase[dict[str, Any]],
    observed: Callable[[], Sequence[ReceivedEvent]],
    *,
    wait_s: float = 30.0,
    poll_s: float = 1.0,
    ignore_carts: Collection[str] = (),
) -> AuditReport:
    """Audit until clean or `wait_s` passed; returns the last report.

    `observed` returns what the test's Kafka observer received so far (e.g.
    ``lambda: harness.received``); it is called again on every pass, because
    events stored before the audit may still be on their way. `ignore_carts`
    names carts whose stored document a test corrupted on purpose.
    """
    deadline = time.monotonic() + wait_s
    while True:
        report = await audit_once(database, observed(), ignore_carts=ignore_carts)
        if report.clean or time.monotonic() >= deadline:
            return report
        await asyncio.sleep(poll_s)


async def audit_once(
    database: AsyncDatabase[dict[str, Any]],
    observed: Sequence[ReceivedEvent],
    *,
    ignore_carts: Collection[str] = (),
) -> AuditReport:
    """One pass of every check over the database and the observed events."""
    report = AuditReport()
    observed_ids = _check_observed(report, observed)

    documents = [d async for d in database["payment_collections"].find({})]
    # Events leave their document once sent, into the archive (kept long enough).
    archived: dict[str, list[OutboxEvent]] = defaultdict(list)
    async for entry in database[ARCHIVE].find({}):
        archived[entry["collection_id"]].append(archived_event(entry))
    collections: list[PaymentCollection] = []
    for document in documents:
        cart_id = document.get("cart_id")
        if cart_id in ignore_carts:
            continue
        try:
            collection = read_document(document)[0]
        except (KeyError, ValidationError) as exc:
            report.violations.append(f"collection {document.get('_id')} unreadable: {exc}")
            continue
        if collection.unsent_events:
            unsent = [e.type for e in collection.unsent_events]
            report.violations.append(f"cart {cart_id}: unsent events {unsent}")
        # Every event of the collection, sent or not (for the checks below).
        unsent_ids = {e.id for e in collection.outbox}
        sent = [e for e in archived.get(collection.id, []) if e.id not in unsent_ids]
        collection.outbox = [*sent, *collection.outbox]
        collections.append(collection)
        report.outbox_events += len(collection.outbox)
        _check_outbox(report, f"cart {cart_id}", collection.outbox, observed_ids)
    report.carts = len(collections)

    async for document in database["orphan_outcomes"].find({}):
        events = [OutboxEvent.model_validate(e) for e in document.get("events", [])]
        report.orphan_events += len(events)
        if document.get("outbox_pending"):
            report.violations.append(f"orphan answer {document['_id']}: outbox_pending")
        _check_outbox(report, f"orphan {document['_id']}", events, observed_ids)

    ledger = [d async for d in database["sandbox_ledger"].find({})]
    _check_ledger(report, ledger, collections, ignore_carts)
    for collection in collections:
        _check_collection(report, collection)
    return report


# -- observed events ------------------------------------------------------------------


def _check_observed(report: AuditReport, observed: Sequence[ReceivedEvent]) -> set[str]:
    ids_by_cause: dict[tuple[str, ...], set[str]] = defaultdict(set)
    payments_by_cart: dict[str, set[tuple[str, str]]] = defaultdict(set)
    ids: Counter[str] = Counter()
    for received in observed:
        event_id = received.id
        ids[event_id] += 1
        report.event_types[received.type] += 1
        data = received.data
        if received.type == DEAD_LETTER_TYPE:
            report.dead_letters += 1
            report.dead_letter_kinds[str(data.get("error", {}).get("kind"))] += 1
            source: tuple[str, ...] = (
                "dlq",
                str(data.get("source_topic")),
                str(data.get("partition")),
                str(data.get("offset")),
            )
            ids_by_cause[source].add(event_id)
            continue
        cause = str(received.event.get("causationid", ""))
        subject = str(received.event.get("subject", ""))
        ids_by_cause[(received.type, cause, subject)].add(event_id)
        if received.type == "payment.authorized":
            payments_by_cart[str(data.get("cart_id"))].add((str(data.get("payment_id")), event_id))
    report.events_observed = sum(ids.values())
    report.distinct_event_ids = len(ids)
    report.duplicates_by_id = report.events_observed - report.distinct_event_ids
    for origin, event_ids in ids_by_cause.items():
        if len(event_ids) > 1:
            report.violations.append(
                f"{len(event_ids)} different event ids for one cause {origin}: {sorted(event_ids)}"
            )
    for cart_id, payments in payments_by_cart.items():
        if len(payments) > 1:
            report.violations.append(
                f"cart {cart_id}: payment.authorized observed with different "
                f"(payment, event id) pairs {sorted(payments)}"
            )
    return set(ids)


def _check_outbox(
    report: AuditReport,
    owner: str,
    events: Sequence[OutboxEvent],
    observed_ids: set[str],
) -> None:
    for event in events:
        if event.id not in observed_ids:
            report.violations.append(
                f"{owner}: stored {event.type} {event.id} (cause {event.causation_id}, "
                f"sent={event.sent}) never observed on Kafka"
            )


# -- state ---------------------------------------------------------------------------


def _check_collection(report: AuditReport, collection: PaymentCollection) -> None:
    where = f"cart {collection.cart_id}"
    authorized_events = {e.id for e in collection.outbox if e.type == "payment.authorized"}
    if len(authorized_events) > 1:
        report.violations.append(
            f"{where}: {len(authorized_events)} payment.authorized events in the outbox"
        )
    for session in collection.sessions:
        if session.needs_reconcile:
            report.violations.append(
                f"{where}: session {session.id} authorization outcome still unknown"
            )
    payment = collection.payment
    if payment is None:
        return
    report.authorized_payments += 1
    if payment.captured_total > payment.amount:
        report.violations.append(
            f"{where}: captured {payment.captured_total} > authorized {payment.amount}"
        )
    if payment.refunded_total > payment.captured_total:
        report.violations.append(
            f"{where}: refunded {payment.refunded_total} > captured {payment.captured_total}"
        )
    if payment.pending:
        report.violations.append(
            f"{where}: operations still reserved, never settled: "
            f"{[(p.operation, p.command_id, p.amount) for p in payment.pending]}"
        )


def _check_ledger(
    report: AuditReport,
    ledger: Sequence[dict[str, Any]],
    collections: Sequence[PaymentCollection],
    ignore_carts: Collection[str],
) -> None:
    """The provider's side: no double charge, and it agrees with the stored state."""
    voided_keys = {
        str(d["idempotency_key"])[: -len(VOID_SUFFIX)]
        for d in ledger
        if d.get("operation") == "cancel"
        and str(d.get("idempotency_key", "")).endswith(VOID_SUFFIX)
    }
    by_key: Counter[str] = Counter()
    live_by_cart: dict[str, list[dict[str, Any]]] = defaultdict(list)
    captured: Counter[str] = Counter()
    refunded: Counter[str] = Counter()
    authorized_amount: dict[str, int] = {}
    for entry in ledger:
        if entry.get("cart_id") in ignore_carts:
            continue
        operation = entry.get("operation")
        session_id = str(entry.get("session_id"))
        amount = int(entry.get("amount") or 0)
        if operation == "authorize" and entry.get("outcome") == "authorized":
            key = str(entry.get("idempotency_key"))
            by_key[key] += 1
            report.charges += 1
            if key in voided_keys:
                report.voided_charges += 1
                continue
            live_by_cart[str(entry.get("cart_id"))].append(entry)
            authorized_amount[session_id] = amount
        elif operation == "capture":
            report.captures += 1
            report.captured_amount += amount
            captured[session_id] += amount
        elif operation == "refund":
            report.refunds += 1
            report.refunded_amount += amount
            refunded[session_id] += amount
        elif operation == "cancel" and not str(entry.get("idempotency_key")).endswith(VOID_SUFFIX):
            report.cancels += 1
    for key, count in by_key.items():
        if count > 1:
            report.violations.append(f"checkout key {key}: {count} authorizations in the ledger")
    for cart_id, entries in live_by_cart.items():
        if len(entries) > 1:
            report.violations.append(
                f"cart {cart_id}: {len(entries)} live authorizations at the provider "
                f"(keys {[e['idempotency_key'] for e in entries]})"
            )
    for session_id, amount in authorized_amount.items():
        if captured[session_id] > amount:
            report.violations.append(
                f"session {session_id}: provider captured {captured[session_id]} > "
                f"authorized {amount}"
            )
        if refunded[session_id] > captured[session_id]:
            report.violations.append(
                f"session {session_id}: provider refunded {refunded[session_id]} > "
                f"captured {captured[session_id]}"
            )
    by_cart = {c.cart_id: c for c in collections}
    for cart_id, entries in live_by_cart.items():
        collection = by_cart.get(cart_id)
        payment = collection.payment if collection is not None else None
        if payment is None:
            report.violations.append(
                f"cart {cart_id}: charged at the provider (key "
                f"{entries[0]['idempotency_key']}) but no payment recorded"
            )
            continue
        if payment.session_id != entries[0].get("session_id"):
            report.violations.append(
                f"cart {cart_id}: provider authorized session {entries[0].get('session_id')}, "
                f"the payment is on session {payment.session_id}"
            )
        if payment.pending:
            continue  # in flight: the two sides may legitimately differ for now
        session_id = payment.session_id
        if captured[session_id] != payment.captured_total:
            report.violations.append(
                f"cart {cart_id}: provider captured {captured[session_id]}, "
                f"state says {payment.captured_total}"
            )
        if refunded[session_id] != payment.refunded_total:
            report.violations.append(
                f"cart {cart_id}: provider refunded {refunded[session_id]}, "
                f"state says {payment.refunded_total}"
            )
