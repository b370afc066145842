"""Build the envelope of an event the service publishes.

The contract promises that outbound events always carry `time` and `subject` (the
cart id) and that `type` matches the topic. Deriving `type` from the `data` model
and `subject` from `data.cart_id` here means service code cannot get them wrong.
The clock and the event id are parameters, so the function stays pure and a
re-published event can keep its `id` (contract section 6).
"""

from __future__ import annotations

from datetime import datetime
from typing import TypeVar, cast

from pydantic import BaseModel

from schemas.envelope import SPEC_VERSION, CloudEvent
from schemas.outbound import PaymentEventData
from schemas.topics import EVENT_MODELS, EVENT_TYPE_BY_DATA_MODEL

DataModelT = TypeVar("DataModelT", bound=BaseModel)


def build_outbound_event(
    data: DataModelT,
    *,
    event_id: str,
    source: str,
    time: datetime,
    causation_id: str | None = None,
    subject: str | None = None,
) -> CloudEvent[DataModelT]:
    """Wrap `data` in a CloudEvent of the event type registered for its model.

    `subject` defaults to `data.cart_id` for `payment.*` events; other events
    (dead letters, provider webhooks) have no cart id and take `subject` as given.
    `time` must be timezone-aware. Raises `ValueError` if the model of `data` is
    not in the registry, or a `pydantic.ValidationError` if an attribute is invalid.
    """
    event_type = EVENT_TYPE_BY_DATA_MODEL.get(type(data))
    if event_type is None:
        raise ValueError(f"{type(data).__name__} is not the data model of any event type")
    if subject is None and isinstance(data, PaymentEventData):
        subject = data.cart_id
    event = EVENT_MODELS[event_type](
        specversion=SPEC_VERSION,
        id=event_id,
        source=source,
        type=event_type,
        time=time,
        subject=subject,
        datacontenttype="application/json",
        data=data,
        causationid=causation_id,
    )
    return cast("CloudEvent[DataModelT]", event)
