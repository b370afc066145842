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
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Final

from pydantic import Field, StringConstraints, model_validator

from schemas.outbound import OutboundEventData
from schemas.timestamps import Rfc3339DateTime

HEADER_BASE64_PREFIX: Final = "base64:"
"""Prefix of a header value that holds base64 instead of UTF-8 text."""

MAX_DETAIL_CHARS: Final[int] = 2000
"""Longest error `detail` written to a dead letter or a parse `Rejection`."""


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
) -> DeadLetter:
    """Build the `data` of a dead letter from a raw Kafka message.

    Pure: the caller supplies the clock (`failed_at`, timezone-aware) and the
    message. `detail` is cut to `MAX_DETAIL_CHARS`.
    """
    key_text, key_base64 = _bytes_to_text_or_base64(key)
    value_text, value_base64 = _bytes_to_text_or_base64(value)
    return DeadLetter(
        source_topic=source_topic,
        partition=partition,
        offset=offset,
        key=key_text,
        key_base64=key_base64,
        value=value_text,
        value_base64=value_base64,
        headers={name: encode_header_value(raw) for name, raw in headers},
        error=DeadLetterError(kind=kind, detail=truncate_detail(detail)),
        failed_at=failed_at,
    )
