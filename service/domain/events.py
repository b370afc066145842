"""Outbound events as the domain records them in the outbox.

The data of each event is built through its `schemas.outbound` model, so a
decision that would publish something off-contract fails in the unit tests, not
in a downstream consumer.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

from service.domain import ids
from service.domain.model import OutboxEvent, PaymentCollection

EVENT_SOURCE = "/payments-service"


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _envelope(
    event_id: str,
    event_type: str,
    now: datetime,
    subject: str,
    causation_id: str,
    data: BaseModel,
) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": EVENT_SOURCE,
        "type": event_type,
        "time": _iso(now),
        "subject": subject,
        "datacontenttype": "application/json",
        "causationid": causation_id,
        "data": _dump(data),
    }


def _dump(data: BaseModel) -> dict[str, Any]:
    """Optional fields that are None are left out; required ones stay, as null.

    (`payment.failed` for an unknown payment has a null `cart_id`, `collection_id`,
    `provider_id` and `currency_code`: required by the contract's schema, so they
    must be present.)
    """
    dumped = data.model_dump(mode="json", exclude_none=True)
    for name, field in type(data).model_fields.items():
        if field.is_required() and name not in dumped:
            dumped[name] = None
    return dumped


def new_event(
    collection: PaymentCollection,
    data: BaseModel,
    event_type: str,
    causation_id: str,
    now: datetime,
    *,
    key: str | None = None,
    discriminator: str = "",
) -> OutboxEvent:
    """Append an outbound event to the collection's outbox and return it."""
    event_id = ids.event_id(causation_id + discriminator, event_type, collection.id)
    existing = collection.outbox_event(event_id)
    if existing is not None:
        # The same cause deciding the same event again (a lost race re-decided):
        # keep the first one, which may already be published.
        return existing
    event = OutboxEvent(
        id=event_id,
        type=event_type,
        key=key or collection.cart_id,
        payload=_envelope(event_id, event_type, now, collection.cart_id, causation_id, data),
        causation_id=causation_id,
        created_at=now,
    )
    collection.outbox.append(event)
    return event


def standalone_event(
    data: BaseModel,
    event_type: str,
    causation_id: str,
    now: datetime,
    *,
    key: str,
    subject: str,
) -> OutboxEvent:
    """An outbound event that belongs to no collection (e.g. `payment_not_found`)."""
    event_id = ids.event_id(causation_id, event_type, subject)
    return OutboxEvent(
        id=event_id,
        type=event_type,
        key=key,
        payload=_envelope(event_id, event_type, now, subject, causation_id, data),
        causation_id=causation_id,
        created_at=now,
    )
