"""Build every CloudEvent this code base writes to Kafka: the one envelope builder.

The service's `payment.*` events and dead letters, the webhook intake's
`payment.provider_webhook` events, the CLI demo's and the test harness's inbound
events and the contract's examples are all made here, so the envelope is written
once: attribute names, their order on the wire, `specversion`, `datacontenttype`
and the time format (`schemas.wire_time`).

The contract promises that outbound events always carry `time` and `subject` (the
cart id) and that `type` matches the topic. Deriving `type` from the `data` model
and `subject` from `data.cart_id` here means service code cannot get them wrong.
The clock and the event id are parameters, so the functions stay pure and a
re-published event can keep its `id` (contract section 6).

The result is the JSON object as a dict (what the outbox stores and the publisher
encodes with orjson, keys in insertion order), so its attribute order is the wire's:
`specversion, id, source, type, time, subject, datacontenttype, causationid`, other
extensions, then `data`; attributes without a value are left out.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final, TypeVar, cast

import orjson
from pydantic import BaseModel, TypeAdapter

from schemas.envelope import DATA_CONTENT_TYPE, SPEC_VERSION, CloudEvent
from schemas.outbound import PaymentEventData
from schemas.timestamps import Rfc3339DateTime
from schemas.topics import EVENT_MODELS, EVENT_TYPE_BY_DATA_MODEL
from schemas.wire_time import wire_time

DataModelT = TypeVar("DataModelT", bound=BaseModel)

SERVICE_SOURCE: Final = "/payments-service"
"""The `source` of every event the service itself decides on (`payment.*`, dead letters)."""

_AWARE_TIME: Final = TypeAdapter(Rfc3339DateTime)


def envelope(
    event_type: str,
    data: Mapping[str, Any],
    *,
    event_id: str,
    source: str,
    time: datetime | None = None,
    subject: str | None = None,
    causation_id: str | None = None,
    extensions: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Wrap JSON-ready `data` in a CloudEvent of `event_type`, checking nothing of `data`.

    For producers that must be able to send what the contract rejects (the test
    harness's invalid events); everything else goes through `event_payload`, which
    takes the typed `data`. `time` must be timezone-aware (a `pydantic.ValidationError`
    otherwise). `extensions` are written after the standard attributes, before `data`.
    """
    event: dict[str, Any] = {
        "specversion": SPEC_VERSION,
        "id": event_id,
        "source": source,
        "type": event_type,
    }
    if time is not None:
        event["time"] = wire_time(_AWARE_TIME.validate_python(time))
    if subject is not None:
        event["subject"] = subject
    event["datacontenttype"] = DATA_CONTENT_TYPE
    if causation_id is not None:
        event["causationid"] = causation_id
    if extensions:
        event.update(extensions)
    event["data"] = data
    return event


def event_payload(
    data: BaseModel,
    *,
    event_id: str,
    source: str,
    time: datetime | None,
    subject: str | None = None,
    causation_id: str | None = None,
    event_type: str | None = None,
) -> dict[str, Any]:
    """The CloudEvent of typed `data`, as the JSON object that goes on the wire.

    `type` is the event type registered for the model of `data` (`schemas.topics`);
    an `event_type` given as well must be that one. `subject` defaults to
    `data.cart_id` for `payment.*` events; other events (dead letters, webhooks,
    commands) take `subject` as given. Raises `ValueError` if the model of `data` is
    not in the registry or `event_type` names another, and a
    `pydantic.ValidationError` for a naive `time`.
    """
    registered = EVENT_TYPE_BY_DATA_MODEL.get(type(data))
    if registered is None:
        raise ValueError(f"{type(data).__name__} is not the data model of any event type")
    if event_type is not None and event_type != registered:
        raise ValueError(f"{type(data).__name__} is the data of {registered!r}, not {event_type!r}")
    if subject is None and isinstance(data, PaymentEventData):
        subject = data.cart_id
    return envelope(
        registered,
        dump_data(data),
        event_id=event_id,
        source=source,
        time=time,
        subject=subject,
        causation_id=causation_id,
    )


def event_value(event: Mapping[str, Any]) -> bytes:
    """The Kafka value of an event built here: compact UTF-8 JSON, keys in order."""
    return orjson.dumps(event)


def dump_data(data: BaseModel) -> dict[str, Any]:
    """`data` as JSON: optional fields that are None are left out, required ones stay null.

    (`payment.failed` for an unknown payment has a null `cart_id`, `collection_id`,
    `provider_id` and `currency_code`: required by the contract's schema, so they
    must be present.)
    """
    dumped = data.model_dump(mode="json", exclude_none=True)
    for name in _required_fields(type(data)):
        if name not in dumped:
            dumped[name] = None
    return dumped


@functools.cache
def _required_fields(model: type[BaseModel]) -> tuple[str, ...]:
    return tuple(name for name, field in model.model_fields.items() if field.is_required())


def build_outbound_event(
    data: DataModelT,
    *,
    event_id: str,
    source: str,
    time: datetime,
    causation_id: str | None = None,
    subject: str | None = None,
) -> CloudEvent[DataModelT]:
    """`event_payload` read back as its typed envelope, e.g. `CloudEvent[PaymentCaptured]`.

    For code that wants the model rather than the wire dict (tests, tools); the
    attributes and errors are those of `event_payload`.
    """
    payload = event_payload(
        data,
        event_id=event_id,
        source=source,
        time=time,
        subject=subject,
        causation_id=causation_id,
    )
    event = EVENT_MODELS[payload["type"]].model_validate(payload)
    return cast("CloudEvent[DataModelT]", event)
