"""Turn a raw Kafka value into a typed inbound event, or say exactly why not.

`parse_event` is the single entry point every consumer uses, so all of them classify
bad input the same way and dead-letter it with the same `kind`. Checks run from the
cheapest and most basic to the most specific, and the first failing one decides:

1. `too_large`: the value exceeds `MAX_VALUE_BYTES` (checked before decoding);
2. `invalid_json`: no value, not UTF-8, or not JSON;
3. `invalid_envelope`: not a JSON object, or a CloudEvents attribute is missing or
   invalid, or `data` is missing or not an object;
4. `type_mismatch`: `type` differs from the topic's event type, or the topic is not
   one the service consumes;
5. `schema_violation`: `data` does not satisfy the event type's model.

JSON is decoded once with pydantic-core's parser (jiter). It keeps integers of any
size exact, so an oversized `amount` is reported as the schema violation it is.
(orjson, the obvious alternative, silently turns integers beyond 64 bits into floats,
which would also corrupt big numbers inside free-form objects such as `context`.)
The decoded object is validated once against an envelope model built at import.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeAlias

from pydantic import ValidationError
from pydantic_core import ErrorDetails, from_json

from schemas.dead_letter import MAX_DETAIL_CHARS, DeadLetterKind, truncate_detail
from schemas.envelope import CloudEvent
from schemas.inbound import (
    AdminCancel,
    AdminCapture,
    AdminRefund,
    CartUpdated,
    CheckoutCompleted,
    ProviderWebhook,
)
from schemas.json_object import JsonObject
from schemas.topics import EVENT_MODELS, INBOUND_DATA_MODELS

MAX_VALUE_BYTES: Final[int] = 1024 * 1024
"""Largest accepted Kafka value (contract section 1); larger ones are `too_large`."""

MAX_LISTED_ERRORS: Final[int] = 10
"""How many validation errors a rejection detail spells out before summarizing."""

AnyInboundData: TypeAlias = (
    CartUpdated | CheckoutCompleted | AdminCapture | AdminRefund | AdminCancel | ProviderWebhook
)
"""Union of the inbound `data` models; narrow it with `isinstance`."""

if TYPE_CHECKING:
    ParsedEvent: TypeAlias = CloudEvent[AnyInboundData]
else:
    # At run time a parsed event is an instance of the envelope class of its own type,
    # e.g. `CloudEvent[CheckoutCompleted]`, a subclass of `CloudEvent`. Resolving the
    # alias to that base keeps run-time annotation readers (pydantic, FastStream) happy.
    ParsedEvent = CloudEvent
"""What `parse_event` returns on success.

Tell it apart with `isinstance(result, Rejection)` (or `CloudEvent`), then narrow
`result.data` with `isinstance(result.data, CheckoutCompleted)` and so on.
"""


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a message cannot be processed: the dead-letter `kind` and a readable detail.

    `detail` names locations and broken rules but does not echo the message's field
    values (they may hold personal or payment data); the only values it quotes are a
    mismatching event `type` and an unknown currency code. At most `MAX_DETAIL_CHARS`.
    """

    kind: DeadLetterKind
    detail: str


_INBOUND_EVENT_MODELS: Final[dict[str, type[CloudEvent[Any]]]] = {
    event_type: EVENT_MODELS[event_type] for event_type in INBOUND_DATA_MODELS
}
_ENVELOPE_ONLY: Final[type[CloudEvent[JsonObject]]] = CloudEvent[JsonObject]


def parse_event(value: bytes | None, event_type: str) -> ParsedEvent | Rejection:
    """Parse the Kafka `value` of a message that arrived on the topic of `event_type`.

    `event_type` is the topic name with the configured prefix already stripped.
    Returns the typed event, or a `Rejection` to dead-letter; never raises for bad
    input.
    """
    if value is None:
        return Rejection(
            DeadLetterKind.INVALID_JSON, "the message has no value; expected a CloudEvent"
        )
    if len(value) > MAX_VALUE_BYTES:
        return Rejection(
            DeadLetterKind.TOO_LARGE,
            f"the value is {len(value)} bytes; the limit is {MAX_VALUE_BYTES} bytes",
        )
    try:
        document = from_json(value, allow_inf_nan=False)
    except ValueError as exc:
        return Rejection(DeadLetterKind.INVALID_JSON, _describe_json_error(value, exc))
    if not isinstance(document, dict):
        return Rejection(
            DeadLetterKind.INVALID_ENVELOPE,
            f"a CloudEvent must be a JSON object, got {_json_kind(document)}",
        )

    event_model = _INBOUND_EVENT_MODELS.get(event_type)
    if (
        event_model is None
        or document.get("type") != event_type
        or not isinstance(document.get("data"), dict)
    ):
        return _reject_envelope_or_type(document, event_type, known=event_model is not None)

    try:
        event: ParsedEvent = event_model.model_validate(document)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False, include_context=False)
        envelope_errors = [error for error in errors if error["loc"][:1] != ("data",)]
        if envelope_errors:
            return Rejection(
                DeadLetterKind.INVALID_ENVELOPE, _describe_validation_errors(envelope_errors)
            )
        return Rejection(DeadLetterKind.SCHEMA_VIOLATION, _describe_validation_errors(errors))
    return event


def _reject_envelope_or_type(
    document: dict[str, Any], event_type: str, *, known: bool
) -> Rejection:
    """Reject a message whose `data` is not validated: bad envelope, else wrong type."""
    try:
        _ENVELOPE_ONLY.model_validate(document)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False, include_context=False)
        return Rejection(DeadLetterKind.INVALID_ENVELOPE, _describe_validation_errors(errors))
    if not known:
        inbound = ", ".join(INBOUND_DATA_MODELS)
        return Rejection(
            DeadLetterKind.TYPE_MISMATCH,
            truncate_detail(
                f"topic {event_type!r} is not an inbound topic of the payments service "
                f"(inbound topics: {inbound})"
            ),
        )
    return Rejection(
        DeadLetterKind.TYPE_MISMATCH,
        truncate_detail(
            f"event type {document.get('type')!r} does not match the topic's event type "
            f"{event_type!r}"
        ),
    )


def _describe_json_error(value: bytes, exc: ValueError) -> str:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError as decode_error:
        return f"the value is not valid UTF-8 ({decode_error.reason} at byte {decode_error.start})"
    return truncate_detail(f"the value is not valid JSON: {exc}")


def _json_kind(document: object) -> str:
    if isinstance(document, list):
        return "an array"
    if isinstance(document, str):
        return "a string"
    if isinstance(document, bool):
        return "a boolean"
    if isinstance(document, int | float):
        return "a number"
    return "null"


def _describe_validation_errors(errors: Sequence[ErrorDetails]) -> str:
    """Summarize pydantic errors as `path: message; ...` without quoting input values."""
    parts = [
        f"{_format_location(error['loc'])}: {error['msg'].removeprefix('Value error, ')}"
        for error in errors[:MAX_LISTED_ERRORS]
    ]
    hidden = len(errors) - MAX_LISTED_ERRORS
    if hidden > 0:
        parts.append(f"and {hidden} more error{'s' if hidden > 1 else ''}")
    return truncate_detail("; ".join(parts), MAX_DETAIL_CHARS)


def _format_location(location: tuple[int | str, ...]) -> str:
    path = ""
    for part in location:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else part
    return path or "(event)"
