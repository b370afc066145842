"""Rich tables for `payments inspect`: one table per part of a payment collection.

Kept apart from :mod:`service.tools.inspection` so the data side stays free of
presentation and the tables can change without touching what scripts read.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from schemas.wire_time import wire_time
from service.domain.model import PaymentCollection
from service.tools.inspection import Inspection


def _time(value: datetime | None) -> str:
    return "" if value is None else wire_time(value, "seconds")


def _money(amount: int | None, currency: str) -> str:
    # Minor units, as stored and as on the wire: no guessing of decimal places.
    return "" if amount is None else f"{amount} {currency}"


NO_WRAP_COLUMNS = frozenset({"id", "event id"})
"""A row's own id is what gets copied into the next command: kept on one line."""


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title, title_justify="left", title_style="bold", expand=False)
    for column in columns:
        table.add_column(column, overflow="fold", no_wrap=column in NO_WRAP_COLUMNS)
    return table


def _overview(inspection: Inspection) -> Table:
    c = inspection.collection
    table = _table(f"Payment collection {c.id}", "field", "value")
    rows: list[tuple[str, Any]] = [
        ("cart", c.cart_id),
        ("status", c.status.value),
        ("amount", _money(c.amount, c.currency_code)),
        ("region", c.region_id),
        ("cart version", c.cart_version),
        ("selected provider", c.selected_provider_id),
        ("email", c.email),
        ("document version", inspection.version),
        ("created", _time(c.created_at)),
        ("updated", _time(c.updated_at)),
    ]
    for name, value in rows:
        table.add_row(name, "" if value is None else str(value))
    return table


def _sessions(c: PaymentCollection) -> Table:
    table = _table("Sessions", "id", "provider", "status", "amount", "error", "reconcile")
    for s in c.sessions:
        table.add_row(
            s.id,
            s.provider_id,
            s.status.value,
            _money(s.amount, s.currency_code),
            s.last_error or "",
            "yes" if s.needs_reconcile else "",
        )
    return table


def _payment(c: PaymentCollection) -> list[RenderableType]:
    p = c.payment
    if p is None:
        return [Text("No payment (not authorized).", style="dim")]
    cur = p.currency_code
    overview = _table(f"Payment {p.id}", "field", "value")
    for name, value in (
        ("provider", p.provider_id),
        ("session", p.session_id),
        ("authorized", _money(p.amount, cur)),
        ("authorized at", _time(p.authorized_at)),
        ("captured", _money(p.captured_total, cur)),
        ("refunded", _money(p.refunded_total, cur)),
        ("canceled at", _time(p.canceled_at)),
    ):
        overview.add_row(name, value)
    captures = _table("Captures", "id", "amount", "source", "command", "at")
    for capture in p.captures:
        captures.add_row(
            capture.id,
            _money(capture.amount, cur),
            capture.source,
            capture.command_id,
            _time(capture.created_at),
        )
    refunds = _table("Refunds", "id", "amount", "reason", "command", "at")
    for refund in p.refunds:
        refunds.add_row(
            refund.id,
            _money(refund.amount, cur),
            refund.reason or "",
            refund.command_id,
            _time(refund.created_at),
        )
    disputes = _table(
        "Disputes", "id", "amount", "status", "provider status", "reason", "evidence due", "opened"
    )
    for dispute in p.disputes:
        disputes.add_row(
            dispute.id,
            _money(dispute.amount, cur),
            dispute.status,
            dispute.provider_status,
            dispute.reason,
            _time(dispute.evidence_due_by),
            _time(dispute.opened_at),
        )
    pending = _table(
        "Pending operations",
        "operation",
        "amount",
        "command",
        "provider key",
        "since",
        "needs attention",
    )
    for op in p.pending:
        pending.add_row(
            op.operation,
            _money(op.amount, cur),
            op.command_id,
            op.provider_key,
            _time(op.started_at),
            op.attention or "",
        )
    history = _table("History", "at", "action", "amount", "outcome", "by", "key id", "note")
    for entry in p.history:
        history.add_row(
            _time(entry.at),
            entry.action,
            _money(entry.amount, cur),
            entry.outcome,
            entry.requested_by or "",
            entry.key_id or "",
            entry.note or "",
        )
    return [overview, captures, refunds, disputes, pending, history]


def _inbox(c: PaymentCollection) -> Table:
    table = _table("Inbox (events that took effect)", "event id", "type", "at")
    for event in c.processed:
        table.add_row(event.id, event.type, _time(event.at))
    return table


def _outbox(c: PaymentCollection) -> Table:
    table = _table("Outbox (events published)", "event id", "type", "cause", "sent", "at", "data")
    for event in c.outbox:
        data = event.payload.get("data") or {}
        brief = ", ".join(
            f"{k}={data[k]}"
            for k in ("amount", "reason", "payment_id", "capture_id", "refund_id")
            if k in data
        )
        table.add_row(
            event.id,
            event.type,
            event.causation_id,
            "yes" if event.sent else "no",
            _time(event.created_at),
            brief,
        )
    return table


def render_inspection(inspection: Inspection) -> RenderableType:
    """Every part of the collection as a group of tables, in reading order."""
    c = inspection.collection
    return Group(
        _overview(inspection),
        _sessions(c),
        *_payment(c),
        _inbox(c),
        _outbox(c),
    )
