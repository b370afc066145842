"""Disputes (chargebacks): recorded on the payment, published as `payment.disputed`.

The provider reports a dispute when the customer's bank opens it and on every
change after (evidence due, under review, decided). The payment keeps one record
per dispute with the provider's latest word; `payment.disputed` is published when
a dispute opens and on each change of its `status` (`open` → `won`/`lost`), not
for the provider's intermediate steps. A decided dispute does not reopen: a late
`updated` event arriving after the `closed` one changes nothing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, cast

from schemas.outbound import PaymentDisputed
from schemas.topics import PAYMENT_DISPUTED
from service.domain.bookings import payment_reference
from service.domain.events import new_event
from service.domain.model import Dispute, HistoryEntry, Payment, PaymentCollection

DisputeStatus = Literal["open", "won", "lost"]
DECIDED: frozenset[str] = frozenset({"won", "lost"})


def apply_dispute(
    collection: PaymentCollection,
    *,
    event_id: str,
    amount: int | None,
    data: dict[str, Any],
    now: datetime,
) -> bool:
    """Record what the provider says about one dispute; publish on a status change.
    Returns whether anything changed (a repeated or stale fact changes nothing)."""
    payment = collection.payment
    dispute_id = data.get("dispute_id")
    status = data.get("status")
    if payment is None or not isinstance(dispute_id, str) or not dispute_id:
        return False
    if status not in ("open", "won", "lost"):
        return False
    provider_status = str(data.get("provider_status") or status)
    reason = str(data.get("reason") or "unknown")
    due = data.get("evidence_due_by")
    evidence_due_by = due if isinstance(due, datetime) else None
    existing = next((d for d in payment.disputes if d.id == dispute_id), None)
    if existing is None:
        existing = Dispute(
            id=dispute_id,
            amount=amount if amount is not None else payment.captured_total,
            status=cast(DisputeStatus, status),
            provider_status=provider_status,
            reason=reason,
            evidence_due_by=evidence_due_by,
            opened_at=now,
            updated_at=now,
        )
        payment.disputes.append(existing)
        changed_status = True
    else:
        moved = _moved(existing, cast(DisputeStatus, status), provider_status, amount)
        if moved is None:
            return False
        changed_status = moved
        existing.reason = reason
        if evidence_due_by is not None:
            existing.evidence_due_by = evidence_due_by
        existing.updated_at = now
    payment.log(
        HistoryEntry(
            at=now,
            action="dispute",
            command_id=event_id,
            amount=existing.amount,
            outcome=f"dispute {dispute_id} {provider_status}",
        )
    )
    if changed_status:
        _announce(collection, payment, existing, event_id, now)
    return True


def _moved(
    dispute: Dispute, status: DisputeStatus, provider_status: str, amount: int | None
) -> bool | None:
    """Apply a later word about a known dispute: whether its `status` changed, or None
    when the fact is stale (a decided dispute does not reopen) or repeats what is known."""
    if dispute.status in DECIDED and status != dispute.status:
        return None
    if (
        dispute.status == status
        and dispute.provider_status == provider_status
        and (amount is None or dispute.amount == amount)
    ):
        return None
    changed = dispute.status != status
    dispute.status = status
    dispute.provider_status = provider_status
    if amount is not None:
        dispute.amount = amount
    return changed


def _announce(
    collection: PaymentCollection, payment: Payment, dispute: Dispute, event_id: str, now: datetime
) -> None:
    """`payment.disputed` with the dispute's latest state."""
    new_event(
        collection,
        PaymentDisputed.model_validate(
            {
                **payment_reference(collection, payment),
                "dispute_id": dispute.id,
                "amount": dispute.amount,
                "status": dispute.status,
                "reason": dispute.reason,
                "evidence_due_by": dispute.evidence_due_by,
            }
        ),
        PAYMENT_DISPUTED,
        event_id,
        now,
    )
