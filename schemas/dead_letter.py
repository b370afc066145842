"""Dead letters on `payments.dlq` (contract section 5).

A message the service cannot read, or that keeps failing, is published to the DLQ as
a `payments.dead_letter` event carrying the original message byte for byte, so ops
tools can inspect it and send it back to its source topic after a fix.

Kafka keys, values and header values are bytes. To keep the dead letter readable,
each is written as text when it is valid UTF-8 and as base64 otherwise:

* key: `key` (text) or `key_base64`; both absent for a null key.
* value: `value` (text) or `value_base64`; both absent for a null value.
* header values: the UTF-8 text, or `"base64:"` followed by the standard base64
  (with padding) of the bytes. A text value that itself starts with `"base64:"` is
  base64-encoded too, so decoding is never ambiguous. A null header value is written
  as `""`. Kafka allows repeated header names; a JSON object cannot hold them, so
  the last value of a repeated name wins.

A letter always fits the broker's message limit (contract section 5). When the
whole original would not fit in `max_encoded_bytes`, the key is cut to
`CUT_KEY_BYTES`, each header value to `CUT_HEADER_VALUE_BYTES` (names to
`CUT_HEADER_NAME_CHARS`) and the headers as a whole to `CUT_HEADERS_BYTES`, and the
value to whatever room is left, measured on the encoded JSON, so it holds whatever
the bytes are (control characters escaped six times over, binary as base64). The
letter then says `truncated: true` and the value's `original_size` in bytes.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Final

import orjson
from pydantic import Field, StringConstraints, model_validator

from schemas.outbound import OutboundEventData
from schemas.timestamps import Rfc3339DateTime

HEADER_BASE64_PREFIX: Final = "base64:"
"""Prefix of a header value that holds base64 instead of UTF-8 text."""

MAX_DETAIL_CHARS: Final[int] = 2000
"""Longest error `detail` written to a dead letter or a parse `Rejection`."""

CUT_KEY_BYTES: Final[int] = 1024
"""When a letter must be cut: the original key's bytes kept."""
CUT_HEADER_VALUE_BYTES: Final[int] = 1024
"""When a letter must be cut: the bytes kept of each header value."""
CUT_HEADER_NAME_CHARS: Final[int] = 256
"""When a letter must be cut: the characters kept of each header name."""
CUT_HEADERS_BYTES: Final[int] = 32 * 1024
"""When a letter must be cut: the encoded size of all headers kept together."""
MIN_LETTER_BYTES: Final[int] = 128 * 1024
"""The smallest budget a letter can be fitted to: the cut key, headers and detail
(with every character escaped) always fit in it, with the value cut to nothing."""


class DeadLetterKind(StrEnum):
    """Why a message was dead-lettered; the values are fixed by the contract."""

    INVALID_JSON = "invalid_json"
    INVALID_ENVELOPE = "invalid_envelope"
    TYPE_MISMATCH = "type_mismatch"
    SCHEMA_VIOLATION = "schema_violation"
    TOO_LARGE = "too_large"
    UNAUTHORIZED = "unauthorized"
    PROCESSING_FAILED = "processing_failed"


class DeadLetterError(OutboundEventData):
    """What went wrong: a machine-readable `kind` and a human-readable `detail`."""

    kind: DeadLetterKind
    detail: str


NonNegativeStrictInt = Annotated[int, Field(strict=True, ge=0)]


class DeadLetter(OutboundEventData):
    """`payments.dead_letter` data: the original message and why it was rejected."""

    source_topic: Annotated[str, StringConstraints(min_length=1)]
    partition: NonNegativeStrictInt
    offset: NonNegativeStrictInt
    key: str | None = None
    key_base64: str | None = None
    value: str | None = None
    value_base64: str | None = None
    headers: dict[str, str]
    error: DeadLetterError
    failed_at: Rfc3339DateTime
    truncated: bool | None = None
    """True when the key, headers or value were cut to fit the broker's limit."""
    original_size: NonNegativeStrictInt | None = None
    """With `truncated`: the original value's size in bytes."""

    @model_validator(mode="after")
    def _text_or_base64(self) -> DeadLetter:
        if self.key is not None and self.key_base64 is not None:
            raise ValueError("key and key_base64 are mutually exclusive")
        if self.value is not None and self.value_base64 is not None:
            raise ValueError("value and value_base64 are mutually exclusive")
        return self

    def original_key(self) -> bytes | None:
        """The original Kafka key bytes (`None` for a null key)."""
        return _text_or_base64_to_bytes(self.key, self.key_base64)

    def original_value(self) -> bytes | None:
        """The original Kafka value bytes (`None` for a null value)."""
        return _text_or_base64_to_bytes(self.value, self.value_base64)

    def original_headers(self) -> list[tuple[str, bytes]]:
        """The original Kafka headers, for sending the message back to its source topic."""
        return [(name, decode_header_value(text)) for name, text in self.headers.items()]


def _text_or_base64_to_bytes(text: str | None, encoded: str | None) -> bytes | None:
    if text is not None:
        return text.encode("utf-8")
    if encoded is not None:
        return base64.b64decode(encoded, validate=True)
    return None


def _bytes_to_text_or_base64(raw: bytes | None) -> tuple[str | None, str | None]:
    """Split `raw` into `(text, None)` if it is UTF-8, else `(None, base64)`."""
    if raw is None:
        return None, None
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError:
        return None, base64.b64encode(raw).decode("ascii")


def encode_header_value(raw: bytes | None) -> str:
    """Encode a Kafka header value for a dead letter (see the module docstring)."""
    if raw is None:
        return ""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    else:
        if not text.startswith(HEADER_BASE64_PREFIX):
            return text
    return HEADER_BASE64_PREFIX + base64.b64encode(raw).decode("ascii")


def decode_header_value(text: str) -> bytes:
    """Invert `encode_header_value` (a null header value comes back as `b""`)."""
    if text.startswith(HEADER_BASE64_PREFIX):
        try:
            return base64.b64decode(text[len(HEADER_BASE64_PREFIX) :], validate=True)
        except binascii.Error as exc:
            raise ValueError(f"invalid base64 header value: {exc}") from exc
    return text.encode("utf-8")


def truncate_detail(detail: str, limit: int = MAX_DETAIL_CHARS) -> str:
    """Cut `detail` to at most `limit` characters, marking the cut with an ellipsis."""
    if len(detail) <= limit:
        return detail
    return detail[: limit - 1] + "…"


def build_dead_letter_data(
    source_topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes | None]],
    kind: DeadLetterKind,
    detail: str,
    failed_at: datetime,
    *,
    max_encoded_bytes: int | None = None,
    keep_value_bytes: int | None = None,
) -> DeadLetter:
    """Build the `data` of a dead letter from a raw Kafka message.

    Pure: the caller supplies the clock (`failed_at`, timezone-aware) and the
    message. `detail` is cut to `MAX_DETAIL_CHARS`. With `max_encoded_bytes`, the
    letter's JSON (`encoded_size`) is at most that many bytes whatever the message
    holds (see the module docstring); with `keep_value_bytes`, at most that many
    bytes of the value are kept (a `too_large` value is not worth keeping whole).
    """
    if max_encoded_bytes is not None and max_encoded_bytes < MIN_LETTER_BYTES:
        raise ValueError(f"a dead letter needs at least {MIN_LETTER_BYTES} bytes")
    key_text, key_base64 = _bytes_to_text_or_base64(key)
    fields: dict[str, Any] = {
        "source_topic": source_topic,
        "partition": partition,
        "offset": offset,
        "key": key_text,
        "key_base64": key_base64,
        "headers": {name: encode_header_value(raw) for name, raw in headers},
        "error": DeadLetterError(kind=kind, detail=truncate_detail(detail)),
        "failed_at": failed_at,
    }
    original_size = len(value) if value is not None else 0
    kept = value
    if keep_value_bytes is not None and value is not None and len(value) > keep_value_bytes:
        kept = value[:keep_value_bytes]
        fields.update(truncated=True, original_size=original_size)
    letter = DeadLetter(**fields, **_value_fields(kept))
    if max_encoded_bytes is None or encoded_size(letter) <= max_encoded_bytes:
        return letter
    # Too large whole: cut the key and headers to their caps, then the value to the
    # room that is left.
    fields.update(truncated=True, original_size=original_size, headers=_cut_headers(headers))
    if key is not None and len(key) > CUT_KEY_BYTES:
        fields["key"], fields["key_base64"] = _bytes_to_text_or_base64(key[:CUT_KEY_BYTES])
    room = max_encoded_bytes - encoded_size(DeadLetter(**fields))
    return DeadLetter(**fields, **_value_fields(_fit_value(kept, room)))


def encoded_size(data: DeadLetter) -> int:
    """Bytes of the letter's `data` as published (orjson, as the publisher encodes)."""
    return len(orjson.dumps(data.model_dump(mode="json", exclude_none=True)))


def _value_fields(raw: bytes | str | None) -> dict[str, str | None]:
    if isinstance(raw, str):
        return {"value": raw}
    text, encoded = _bytes_to_text_or_base64(raw)
    return {"value": text, "value_base64": encoded}


def _cut_headers(headers: Sequence[tuple[str, bytes | None]]) -> dict[str, str]:
    kept: dict[str, str] = {}
    used = 2  # the braces
    for name, raw in headers:
        short_name = name[:CUT_HEADER_NAME_CHARS]
        text = encode_header_value(None if raw is None else raw[:CUT_HEADER_VALUE_BYTES])
        size = len(orjson.dumps({short_name: text})) - 1  # its share of the object
        if used + size > CUT_HEADERS_BYTES:
            break
        kept[short_name] = text
        used += size
    return kept


_FIELD_OVERHEAD: Final[int] = len(b',"value_base64":""')
"""The most that adding a value field to the JSON object costs besides its content."""


def _fit_value(raw: bytes | None, room: int) -> bytes | str | None:
    """The longest prefix of `raw` whose JSON string fits in `room` bytes.

    UTF-8 text stays text (cut at a character boundary); anything else is cut so
    its base64 fits exactly.
    """
    if raw is None:
        return None
    room -= _FIELD_OVERHEAD
    if room <= 0:
        return b""
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw[: (room // 4) * 3]
    low, high = 0, min(len(raw), room)  # a byte never encodes to less than one
    while low < high:  # the largest n whose encoded prefix fits
        middle = (low + high + 1) // 2
        if _encoded_text_size(raw[:middle]) <= room - 2:
            low = middle
        else:
            high = middle - 1
    return raw[:low].decode("utf-8", "ignore")


def _encoded_text_size(raw: bytes) -> int:
    text: Any = raw.decode("utf-8", "ignore")
    return len(orjson.dumps(text)) - 2
