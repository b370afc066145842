"""`build_dead_letter_data`: text when UTF-8, base64 otherwise, and lossless replay."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from schemas import (
    MAX_DETAIL_CHARS,
    DeadLetter,
    DeadLetterKind,
    build_dead_letter_data,
    decode_header_value,
    encode_header_value,
)

FAILED_AT = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
NOT_UTF8 = b"\xff\xfe\x00binary"


def dead_letter(**overrides: Any) -> DeadLetter:
    arguments: dict[str, Any] = {
        "source_topic": "prod.checkout.completed",
        "partition": 2,
        "offset": 99,
        "key": b"cart_1",
        "value": b'{"specversion": "1.0"}',
        "headers": [("content-type", b"application/cloudevents+json")],
        "kind": DeadLetterKind.INVALID_ENVELOPE,
        "detail": "id: Field required",
        "failed_at": FAILED_AT,
    }
    arguments.update(overrides)
    return build_dead_letter_data(**arguments)


def test_utf8_key_value_and_headers_are_written_as_text() -> None:
    letter = dead_letter()

    assert letter.key == "cart_1"
    assert letter.key_base64 is None
    assert letter.value == '{"specversion": "1.0"}'
    assert letter.value_base64 is None
    assert letter.headers == {"content-type": "application/cloudevents+json"}
    assert letter.error.kind is DeadLetterKind.INVALID_ENVELOPE
    assert letter.error.detail == "id: Field required"
    assert (letter.source_topic, letter.partition, letter.offset) == (
        "prod.checkout.completed",
        2,
        99,
    )


def test_non_utf8_key_and_value_are_written_as_base64() -> None:
    letter = dead_letter(key=NOT_UTF8, value=NOT_UTF8)

    assert letter.key is None
    assert letter.key_base64 == base64.b64encode(NOT_UTF8).decode()
    assert letter.value is None
    assert letter.value_base64 == base64.b64encode(NOT_UTF8).decode()


def test_null_key_and_value_are_left_out() -> None:
    letter = dead_letter(key=None, value=None)

    assert letter.original_key() is None
    assert letter.original_value() is None
    dumped = letter.model_dump(exclude_none=True)
    assert {"key", "key_base64", "value", "value_base64"}.isdisjoint(dumped)


def test_empty_value_is_empty_text() -> None:
    letter = dead_letter(value=b"")

    assert letter.value == ""
    assert letter.original_value() == b""


def test_non_utf8_header_value_gets_the_base64_prefix() -> None:
    letter = dead_letter(headers=[("payments-signature", NOT_UTF8), ("trace", b"abc")])

    assert letter.headers["payments-signature"] == "base64:" + base64.b64encode(NOT_UTF8).decode()
    assert letter.headers["trace"] == "abc"


def test_text_header_that_looks_like_base64_is_encoded_to_stay_unambiguous() -> None:
    raw = b"base64:aGVsbG8="

    encoded = encode_header_value(raw)

    assert encoded != raw.decode()
    assert encoded.startswith("base64:")
    assert decode_header_value(encoded) == raw


@pytest.mark.parametrize("raw", [b"", b"plain", "žluť".encode(), NOT_UTF8, b"base64:", b"\x80"])
def test_header_encoding_round_trips(raw: bytes) -> None:
    assert decode_header_value(encode_header_value(raw)) == raw


def test_null_header_value_becomes_empty_text() -> None:
    assert encode_header_value(None) == ""


def test_invalid_base64_header_value_is_reported() -> None:
    with pytest.raises(ValueError, match="invalid base64 header value"):
        decode_header_value("base64:not base64!")


def test_repeated_header_name_keeps_the_last_value() -> None:
    letter = dead_letter(headers=[("x", b"first"), ("x", b"second")])

    assert letter.headers == {"x": "second"}


@pytest.mark.parametrize("raw", [b"cart_1", NOT_UTF8])
def test_original_message_is_recovered_for_replay(raw: bytes) -> None:
    headers = [("content-type", b"application/json"), ("sig", NOT_UTF8)]
    letter = dead_letter(key=raw, value=raw, headers=headers)

    restored = DeadLetter.model_validate_json(letter.model_dump_json(exclude_none=True))

    assert restored.original_key() == raw
    assert restored.original_value() == raw
    assert restored.original_headers() == headers


def test_long_detail_is_truncated() -> None:
    letter = dead_letter(kind=DeadLetterKind.PROCESSING_FAILED, detail="x" * 10_000)

    assert len(letter.error.detail) == MAX_DETAIL_CHARS
    assert letter.error.detail.endswith("…")


def test_dead_letter_kinds_are_exactly_the_contract_kinds() -> None:
    assert {kind.value for kind in DeadLetterKind} == {
        "invalid_json",
        "invalid_envelope",
        "type_mismatch",
        "schema_violation",
        "too_large",
        "unauthorized",
        "processing_failed",
    }


def test_text_and_base64_forms_are_mutually_exclusive() -> None:
    data = dead_letter().model_dump()

    with pytest.raises(ValidationError, match="mutually exclusive"):
        DeadLetter.model_validate({**data, "key_base64": "AA=="})
    with pytest.raises(ValidationError, match="mutually exclusive"):
        DeadLetter.model_validate({**data, "value_base64": "AA=="})


@pytest.mark.parametrize(
    "overrides",
    [{"partition": -1}, {"offset": -1}, {"source_topic": ""}, {"kind": "exploded"}],
)
def test_invalid_coordinates_or_kind_are_rejected(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        dead_letter(**overrides)
