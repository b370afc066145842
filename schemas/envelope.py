"""The CloudEvents 1.0 envelope every message on every topic is wrapped in (section 1).

Messages use CloudEvents *structured content mode*: the whole Kafka value is one
JSON object holding the context attributes and `data`. `CloudEvent` is generic in
its data model so a parsed event is fully typed (`CloudEvent[CheckoutCompleted]`)
and the envelope rules are written once for every event type.
"""

from __future__ import annotations

from typing import Annotated, Final, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, StringConstraints

from schemas.ids import EventId
from schemas.timestamps import Rfc3339DateTime

SPEC_VERSION: Final = "1.0"
"""The only CloudEvents `specversion` the service reads or writes."""

DATA_CONTENT_TYPE: Final = "application/json"
"""The only `datacontenttype` allowed when the attribute is present."""

CLOUDEVENTS_CONTENT_TYPE: Final = "application/cloudevents+json; charset=utf-8"
"""Value of the Kafka `content-type` header on every outbound message."""

DataT = TypeVar("DataT")


class CloudEvent(BaseModel, Generic[DataT]):
    """A CloudEvents 1.0 event in structured mode, with `data` of type `DataT`.

    Unknown top-level attributes are CloudEvents extensions: they are accepted (and kept
    in `model_extra`, e.g. for tracing) but the service gives them no meaning. The one
    extension the service itself writes is `causationid`: the `id` of the inbound
    event or command that caused an outbound event.

    `time` and `subject` are optional on input; outbound events always carry them
    (`schemas.build_outbound_event` fills them in).
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    specversion: Literal["1.0"]
    id: EventId
    source: Annotated[str, StringConstraints(min_length=1)]
    type: Annotated[str, StringConstraints(min_length=1)]
    time: Rfc3339DateTime | None = None
    subject: str | None = None
    datacontenttype: Literal["application/json"] | None = None
    data: DataT
    causationid: EventId | None = None

    def to_json_bytes(self) -> bytes:
        """Encode the event as the compact UTF-8 JSON Kafka value.

        Attributes and data fields that are `None` are left out rather than written
        as `null`: the contract treats them as absent. Currency codes are already
        lowercase because `CurrencyCode` normalizes them on construction.
        """
        return self.__pydantic_serializer__.to_json(self, exclude_none=True)
