"""Outbound events as the domain records them in the outbox.

The data of each event is built through its `schemas.outbound` model and wrapped by
the one envelope builder (`schemas.outbound_event.event_payload`), so a decision that
would publish something off-contract fails in the unit tests, not in a downstream
consumer, and the event's `type` is the one registered for its data model.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

from schemas.outbound_event import SERVICE_SOURCE, event_payload
from service.domain import derived_ids as ids
from service.domain.model import OutboxEvent, PaymentCollection


def outbox_entry(
    payload: dict[str, Any], *, key: str, causation_id: str, now: datetime
) -> OutboxEvent:
    """A built event as the outbox stores it: id and type read from the event itself."""
    return OutboxEvent(
        id=payload["id"],
        type=payload["type"],
        key=key,
        payload=payload,
        causation_id=causation_id,
        created_at=now,
    )


def _decided(
    data: BaseModel,
    event_type: str,
    event_id: str,
    causation_id: str,
    now: datetime,
    *,
    key: str,
    subject: str,
) -> OutboxEvent:
    payload = event_payload(
        data,
        event_id=event_id,
        source=SERVICE_SOURCE,
        time=now,
        subject=subject,
        causation_id=causation_id,
        event_type=event_type,
    )
    return outbox_entry(payload, key=key, causation_id=causation_id, now=now)


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
    """Record an outbound event on the collection (see `PaymentCollection.record`).

    `event_type` must be the type registered for the model of `data` (it names the
    event id before the event is built); a mismatch raises `ValueError`.
    """
    event_id = ids.event_id(causation_id + discriminator, event_type, collection.id)
    existing = collection.outbox_event(event_id)
    if existing is not None:
        # The same cause deciding the same event again (a lost race re-decided):
        # keep the first one, which may already be published.
        return existing
    return collection.record(
        _decided(
            data,
            event_type,
            event_id,
            causation_id,
            now,
            key=key or collection.cart_id,
            subject=collection.cart_id,
        )
    )


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
    return _decided(data, event_type, event_id, causation_id, now, key=key, subject=subject)
