"""`parse_event`: every inbound event type parses, and every kind of bad input is classified."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from schemas import (
    ADMIN_PAYMENT_REFUND,
    CART_UPDATED,
    CHECKOUT_COMPLETED,
    INBOUND_DATA_MODELS,
    INBOUND_TOPICS,
    MAX_CONTEXT_BYTES,
    MAX_DETAIL_CHARS,
    MAX_VALUE_BYTES,
    OUTBOUND_TOPICS,
    AdminCapture,
    CartUpdated,
    CheckoutCompleted,
    CloudEvent,
    DeadLetterKind,
    Rejection,
    example_event,
    parse_event,
)

AMOUNT_TYPES = [
    event_type
    for event_type, model in INBOUND_DATA_MODELS.items()
    if "amount" in model.model_fields
]
CART_TYPES = [CART_UPDATED, CHECKOUT_COMPLETED]
CONTEXT_TYPES = [CART_UPDATED, CHECKOUT_COMPLETED]


def encode(event: Any) -> bytes:
    return orjson.dumps(event)


def rejection(value: bytes | None, event_type: str) -> Rejection:
    result = parse_event(value, event_type)
    assert isinstance(result, Rejection), f"expected a rejection, got {result!r}"
    assert 0 < len(result.detail) <= MAX_DETAIL_CHARS
    return result


def with_data(event_type: str, **changes: Any) -> dict[str, Any]:
    event = example_event(event_type)
    event["data"].update(changes)
    return event


# --- valid input -------------------------------------------------------------------------


@pytest.mark.parametrize("event_type", INBOUND_TOPICS)
def test_example_of_every_inbound_type_parses_to_its_model(event_type: str) -> None:
    event = example_event(event_type)

    result = parse_event(encode(event), event_type)

    assert isinstance(result, CloudEvent)
    assert type(result.data) is INBOUND_DATA_MODELS[event_type]
    assert result.id == event["id"]
    assert result.type == event_type


def test_parsed_fields_are_typed_values() -> None:
    result = parse_event(encode(example_event(CHECKOUT_COMPLETED)), CHECKOUT_COMPLETED)

    assert isinstance(result, CloudEvent)
    assert isinstance(result.data, CheckoutCompleted)
    assert result.data.amount == 5000
    assert result.data.payment_data == {"payment_method": "pm_card_visa"}
    assert result.time is not None
    assert result.time.utcoffset() is not None


@pytest.mark.parametrize("event_type", INBOUND_TOPICS)
def test_minimal_envelope_without_optional_attributes_parses(event_type: str) -> None:
    event = example_event(event_type)
    for optional in ("time", "subject", "datacontenttype"):
        event.pop(optional, None)

    result = parse_event(encode(event), event_type)

    assert isinstance(result, CloudEvent)
    assert result.time is None


def test_optional_data_fields_may_be_absent() -> None:
    event = example_event(CART_UPDATED)
    required = {"cart_id", "region_id", "currency_code", "amount"}
    event["data"] = {name: value for name, value in event["data"].items() if name in required}

    result = parse_event(encode(event), CART_UPDATED)

    assert isinstance(result, CloudEvent)
    assert isinstance(result.data, CartUpdated)
    assert result.data.version is None
    assert result.data.customer is None


def test_extension_attributes_are_accepted_and_ignored() -> None:
    event = example_event(CART_UPDATED)
    event["traceparent"] = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    event["partitionkey"] = "cart_01HXAMPLE"

    result = parse_event(encode(event), CART_UPDATED)
    plain = parse_event(encode(example_event(CART_UPDATED)), CART_UPDATED)

    assert isinstance(result, CloudEvent)
    assert isinstance(plain, CloudEvent)
    assert result.data == plain.data
    assert result.model_extra == {
        "traceparent": event["traceparent"],
        "partitionkey": event["partitionkey"],
    }


def test_unknown_data_fields_are_ignored() -> None:
    event = with_data(CHECKOUT_COMPLETED, shipping_method="express", future_field={"a": 1})

    result = parse_event(encode(event), CHECKOUT_COMPLETED)

    assert isinstance(result, CloudEvent)
    assert not hasattr(result.data, "shipping_method")


def test_amount_bounds_are_inclusive() -> None:
    for amount in (0, 10**12):
        result = parse_event(encode(with_data(CART_UPDATED, amount=amount)), CART_UPDATED)
        assert isinstance(result, CloudEvent)
        assert isinstance(result.data, CartUpdated)
        assert result.data.amount == amount


def test_value_of_exactly_the_size_limit_is_not_too_large() -> None:
    value = encode(example_event(CART_UPDATED))
    padded = value[:-1] + b" " * (MAX_VALUE_BYTES - len(value)) + b"}"
    assert len(padded) == MAX_VALUE_BYTES

    assert isinstance(parse_event(padded, CART_UPDATED), CloudEvent)


def test_context_of_exactly_16_kib_is_accepted() -> None:
    overhead = len(encode({"k": ""}))
    context = {"k": "x" * (MAX_CONTEXT_BYTES - overhead)}
    assert len(encode(context)) == MAX_CONTEXT_BYTES

    result = parse_event(encode(with_data(CART_UPDATED, context=context)), CART_UPDATED)

    assert isinstance(result, CloudEvent)


def test_refund_reason_of_255_chars_is_accepted() -> None:
    event = with_data(ADMIN_PAYMENT_REFUND, reason="r" * 255)

    assert isinstance(parse_event(encode(event), ADMIN_PAYMENT_REFUND), CloudEvent)


def test_optional_admin_amount_defaults_to_none() -> None:
    event = example_event("admin.payment.capture")
    del event["data"]["amount"]

    result = parse_event(encode(event), "admin.payment.capture")

    assert isinstance(result, CloudEvent)
    assert isinstance(result.data, AdminCapture)
    assert result.data.amount is None


def test_big_integers_in_free_form_objects_stay_exact() -> None:
    huge = 10**30
    raw = encode(example_event(CHECKOUT_COMPLETED)).replace(
        b'"payment_method":"pm_card_visa"', b'"n":' + str(huge).encode()
    )
    result = parse_event(raw, CHECKOUT_COMPLETED)

    assert isinstance(result, CloudEvent)
    assert isinstance(result.data, CheckoutCompleted)
    assert result.data.payment_data == {"n": huge}


# --- too_large -----------------------------------------------------------------------------


@pytest.mark.parametrize("event_type", INBOUND_TOPICS)
def test_value_over_one_mib_is_too_large(event_type: str) -> None:
    value = encode(example_event(event_type))
    oversized = value[:-1] + b" " * (MAX_VALUE_BYTES + 1 - len(value)) + b"}"

    result = rejection(oversized, event_type)

    assert result.kind is DeadLetterKind.TOO_LARGE
    assert str(MAX_VALUE_BYTES) in result.detail


def test_size_is_checked_before_decoding() -> None:
    result = rejection(b"\xff" * (MAX_VALUE_BYTES + 1), CART_UPDATED)

    assert result.kind is DeadLetterKind.TOO_LARGE


# --- invalid_json --------------------------------------------------------------------------


@pytest.mark.parametrize("event_type", INBOUND_TOPICS)
@pytest.mark.parametrize(
    ("value", "detail_part"),
    [
        (None, "no value"),
        (b"", "not valid JSON"),
        (b"not json at all", "not valid JSON"),
        (b'{"specversion": "1.0",', "not valid JSON"),
        (b"\xff\xfe{}", "not valid UTF-8"),
        (b'{"specversion": "\xe9"}', "not valid UTF-8"),
        (b'{"a": NaN}', "not valid JSON"),
        (b"\xef\xbb\xbf{}", "not valid JSON"),
        (b"{} {}", "not valid JSON"),
    ],
    ids=["none", "empty", "garbage", "truncated", "utf16-bom", "latin1", "nan", "bom", "two-docs"],
)
def test_unreadable_value_is_invalid_json(
    event_type: str, value: bytes | None, detail_part: str
) -> None:
    result = rejection(value, event_type)

    assert result.kind is DeadLetterKind.INVALID_JSON
    assert detail_part in result.detail


# --- invalid_envelope ----------------------------------------------------------------------


def _without(attribute: str) -> Any:
    def mutate(event: dict[str, Any]) -> Any:
        del event[attribute]
        return event

    return mutate


def _setting(attribute: str, value: Any) -> Any:
    def mutate(event: dict[str, Any]) -> Any:
        event[attribute] = value
        return event

    return mutate


ENVELOPE_BREAKERS: dict[str, tuple[Any, str]] = {
    "array": (lambda event: [event], "got an array"),
    "string": (lambda event: "cloud event", "got a string"),
    "number": (lambda event: 42, "got a number"),
    "null": (lambda event: None, "got null"),
    "missing-id": (_without("id"), "id: Field required"),
    "empty-id": (_setting("id", ""), "id: String should have at least 1 character"),
    "id-129-chars": (_setting("id", "e" * 129), "id: String should have at most 128 characters"),
    "id-number": (_setting("id", 7), "id: Input should be a valid string"),
    "missing-specversion": (_without("specversion"), "specversion: Field required"),
    "wrong-specversion": (_setting("specversion", "0.3"), "specversion: Input should be '1.0'"),
    "missing-source": (_without("source"), "source: Field required"),
    "empty-source": (_setting("source", ""), "source: String should have at least 1 character"),
    "missing-type": (_without("type"), "type: Field required"),
    "type-number": (_setting("type", 1), "type: Input should be a valid string"),
    "missing-data": (_without("data"), "data: Field required"),
    "data-array": (_setting("data", [1, 2]), "data: Input should be a valid dictionary"),
    "data-string": (_setting("data", "{}"), "data: Input should be a valid dictionary"),
    "data-null": (_setting("data", None), "data: Input should be a valid dictionary"),
    "time-unix": (_setting("time", 1714564800), "time: expected an RFC 3339"),
    "time-garbage": (_setting("time", "yesterday"), "time: expected an RFC 3339"),
    "time-naive": (_setting("time", "2024-05-01T12:00:00"), "time: expected an RFC 3339"),
    "time-date-only": (_setting("time", "2024-05-01"), "time: expected an RFC 3339"),
    "time-invalid-day": (_setting("time", "2024-02-30T12:00:00Z"), "time: Input should be"),
    "bad-datacontenttype": (
        _setting("datacontenttype", "text/xml"),
        "datacontenttype: Input should be 'application/json'",
    ),
    "subject-number": (_setting("subject", 5), "subject: Input should be a valid string"),
    "causationid-empty": (_setting("causationid", ""), "causationid: String should have"),
}


@pytest.mark.parametrize("event_type", INBOUND_TOPICS)
@pytest.mark.parametrize("breaker", ENVELOPE_BREAKERS, ids=str)
def test_broken_envelope_is_invalid_envelope(event_type: str, breaker: str) -> None:
    mutate, detail_part = ENVELOPE_BREAKERS[breaker]

    result = rejection(encode(mutate(example_event(event_type))), event_type)

    assert result.kind is DeadLetterKind.INVALID_ENVELOPE
    assert detail_part in result.detail


def test_invalid_envelope_wins_over_type_mismatch_and_schema_violation() -> None:
    event = with_data(CART_UPDATED, amount="lots")
    event["type"] = CHECKOUT_COMPLETED
    del event["id"]

    result = rejection(encode(event), CART_UPDATED)

    assert result.kind is DeadLetterKind.INVALID_ENVELOPE
    assert result.detail == "id: Field required"


def test_invalid_envelope_wins_over_schema_violation_on_matching_type() -> None:
    event = with_data(CART_UPDATED, amount="lots")
    event["specversion"] = "2.0"

    result = rejection(encode(event), CART_UPDATED)

    assert result.kind is DeadLetterKind.INVALID_ENVELOPE
    assert "data.amount" not in result.detail


# --- type_mismatch -------------------------------------------------------------------------


@pytest.mark.parametrize("event_type", INBOUND_TOPICS)
def test_type_of_another_topic_is_type_mismatch(event_type: str) -> None:
    other = next(t for t in INBOUND_TOPICS if t != event_type)

    result = rejection(encode(example_event(other)), event_type)

    assert result.kind is DeadLetterKind.TYPE_MISMATCH
    assert repr(other) in result.detail
    assert repr(event_type) in result.detail


def test_prefixed_type_is_type_mismatch() -> None:
    event = example_event(CART_UPDATED)
    event["type"] = "prod.cart.updated"

    assert rejection(encode(event), CART_UPDATED).kind is DeadLetterKind.TYPE_MISMATCH


def test_type_mismatch_wins_over_schema_violation() -> None:
    event = with_data(CART_UPDATED, amount="lots")
    event["type"] = CHECKOUT_COMPLETED

    assert rejection(encode(event), CART_UPDATED).kind is DeadLetterKind.TYPE_MISMATCH


@pytest.mark.parametrize("topic", [*OUTBOUND_TOPICS, "payments.dlq", "orders.created", ""])
def test_topic_that_is_not_inbound_is_type_mismatch(topic: str) -> None:
    event = example_event(CART_UPDATED)
    event["type"] = topic or "x"

    result = rejection(encode(event), topic)

    assert result.kind is DeadLetterKind.TYPE_MISMATCH
    assert "is not an inbound topic" in result.detail


def test_unknown_topic_still_reports_a_broken_envelope_first() -> None:
    result = rejection(b"[]", "orders.created")

    assert result.kind is DeadLetterKind.INVALID_ENVELOPE


# --- schema_violation ----------------------------------------------------------------------


@pytest.mark.parametrize("event_type", AMOUNT_TYPES)
@pytest.mark.parametrize(
    ("raw_amount", "detail_part"),
    [
        (b"5000.0", "Input should be a valid integer"),
        (b"5e3", "Input should be a valid integer"),
        (b"true", "Input should be a valid integer"),
        (b'"5000"', "Input should be a valid integer"),
        (b"-1", "Input should be greater than or equal to 0"),
        (str(10**12 + 1).encode(), "Input should be less than or equal to 1000000000000"),
        (str(10**30).encode(), "Input should be less than or equal to 1000000000000"),
        (b"1e400", "Input should be a valid integer"),
        (b"[5000]", "Input should be a valid integer"),
    ],
    ids=["float", "exponent", "bool", "string", "negative", "max+1", "huge", "inf", "list"],
)
def test_amount_that_is_not_a_bounded_integer_is_schema_violation(
    event_type: str, raw_amount: bytes, detail_part: str
) -> None:
    value = encode(with_data(event_type, amount=123454321))
    value = value.replace(b'"amount":123454321', b'"amount":' + raw_amount)

    result = rejection(value, event_type)

    assert result.kind is DeadLetterKind.SCHEMA_VIOLATION
    assert result.detail == f"data.amount: {detail_part}"


@pytest.mark.parametrize("event_type", CART_TYPES)
@pytest.mark.parametrize("code", ["xyz", "us", "usdollar", "", "12$", 840])
def test_unknown_currency_is_schema_violation(event_type: str, code: object) -> None:
    result = rejection(encode(with_data(event_type, currency_code=code)), event_type)

    assert result.kind is DeadLetterKind.SCHEMA_VIOLATION
    assert result.detail.startswith("data.currency_code: ")


def test_unknown_currency_detail_names_the_code() -> None:
    result = rejection(encode(with_data(CART_UPDATED, currency_code="xyz")), CART_UPDATED)

    assert result.detail == "data.currency_code: unknown ISO 4217 currency code 'xyz'"


@pytest.mark.parametrize("event_type", CART_TYPES)
@pytest.mark.parametrize(
    "cart_id",
    ["cart 1", "cart/1", "cärt", "cart\n", "", "c" * 129, "cart#1"],
    ids=["space", "slash", "non-ascii", "newline", "empty", "129-chars", "hash"],
)
def test_bad_cart_id_is_schema_violation(event_type: str, cart_id: str) -> None:
    result = rejection(encode(with_data(event_type, cart_id=cart_id)), event_type)

    assert result.kind is DeadLetterKind.SCHEMA_VIOLATION
    assert result.detail.startswith("data.cart_id: ")


REQUIRED_FIELDS = [
    (event_type, name)
    for event_type, model in INBOUND_DATA_MODELS.items()
    for name, field in model.model_fields.items()
    if field.is_required()
]


@pytest.mark.parametrize(("event_type", "field"), REQUIRED_FIELDS, ids=str)
def test_missing_required_field_is_schema_violation(event_type: str, field: str) -> None:
    event = example_event(event_type)
    del event["data"][field]

    result = rejection(encode(event), event_type)

    assert result.kind is DeadLetterKind.SCHEMA_VIOLATION
    assert result.detail == f"data.{field}: Field required"


@pytest.mark.parametrize("event_type", INBOUND_TOPICS)
def test_empty_data_object_lists_every_missing_field(event_type: str) -> None:
    event = example_event(event_type)
    event["data"] = {}

    result = rejection(encode(event), event_type)

    assert result.kind is DeadLetterKind.SCHEMA_VIOLATION
    for event_type_, field in REQUIRED_FIELDS:
        if event_type_ == event_type:
            assert f"data.{field}: Field required" in result.detail


@pytest.mark.parametrize("event_type", CONTEXT_TYPES)
def test_context_over_16_kib_is_schema_violation(event_type: str) -> None:
    overhead = len(encode({"k": ""}))
    context = {"k": "x" * (MAX_CONTEXT_BYTES - overhead + 1)}

    result = rejection(encode(with_data(event_type, context=context)), event_type)

    assert result.kind is DeadLetterKind.SCHEMA_VIOLATION
    assert result.detail.startswith("data.context: context is 16385 bytes")


def test_context_size_counts_multibyte_characters_as_utf8_bytes() -> None:
    overhead = len(encode({"k": ""}))
    context = {"k": "é" * ((MAX_CONTEXT_BYTES - overhead) // 2 + 1)}

    result = rejection(encode(with_data(CART_UPDATED, context=context)), CART_UPDATED)

    assert result.kind is DeadLetterKind.SCHEMA_VIOLATION


def test_refund_reason_over_255_chars_is_schema_violation() -> None:
    event = with_data(ADMIN_PAYMENT_REFUND, reason="r" * 256)

    result = rejection(encode(event), ADMIN_PAYMENT_REFUND)

    assert result.kind is DeadLetterKind.SCHEMA_VIOLATION
    assert result.detail == "data.reason: String should have at most 255 characters"


@pytest.mark.parametrize(
    ("event_type", "changes", "location"),
    [
        (CART_UPDATED, {"version": -1}, "data.version"),
        (CART_UPDATED, {"version": 1.0}, "data.version"),
        (CART_UPDATED, {"version": "3"}, "data.version"),
        (CART_UPDATED, {"customer": {"email": 5}}, "data.customer.email"),
        (CART_UPDATED, {"customer": "jane"}, "data.customer"),
        (CART_UPDATED, {"payment_data": ["pm_card_visa"]}, "data.payment_data"),
        (CART_UPDATED, {"context": "ip=1.2.3.4"}, "data.context"),
        (CART_UPDATED, {"provider_id": "Stripe!"}, "data.provider_id"),
        (CART_UPDATED, {"region_id": ""}, "data.region_id"),
        (CHECKOUT_COMPLETED, {"idempotency_key": ""}, "data.idempotency_key"),
        (CHECKOUT_COMPLETED, {"idempotency_key": "k" * 256}, "data.idempotency_key"),
        ("admin.payment.capture", {"payment_id": "pay 1"}, "data.payment_id"),
        ("admin.payment.capture", {"requested_by": ""}, "data.requested_by"),
        ("payment.provider_webhook", {"headers": {"x": 1}}, "data.headers.x"),
        ("payment.provider_webhook", {"received_at": "now"}, "data.received_at"),
        ("payment.provider_webhook", {"payload": {"a": 1}}, "data.payload"),
    ],
)
def test_field_rule_violations_are_schema_violations(
    event_type: str, changes: dict[str, Any], location: str
) -> None:
    result = rejection(encode(with_data(event_type, **changes)), event_type)

    assert result.kind is DeadLetterKind.SCHEMA_VIOLATION
    assert result.detail.startswith(f"{location}: ")


def test_list_positions_appear_in_the_location() -> None:
    event = with_data(CART_UPDATED, customer={"metadata": {"tags": []}, "id": ["a"]})

    result = rejection(encode(event), CART_UPDATED)

    assert result.detail == "data.customer.id: Input should be a valid string"


def test_detail_does_not_echo_field_values() -> None:
    secret = "4242424242424242"
    event = with_data(CHECKOUT_COMPLETED, amount=secret, email=secret, cart_id=secret + "!")

    result = rejection(encode(event), CHECKOUT_COMPLETED)

    assert result.kind is DeadLetterKind.SCHEMA_VIOLATION
    assert secret not in result.detail


def test_many_errors_are_summarized_within_the_detail_limit() -> None:
    event = with_data(CART_UPDATED, customer={"metadata": 0, "id": 1, "email": 2})
    event["data"].update({"amount": "a", "currency_code": 1, "region_id": 2, "cart_id": 3})
    event["data"].update({"version": "v", "email": 4, "provider_id": 5, "context": 6})
    event["data"]["payment_data"] = 7
    # 12 errors: the 9 top-level fields above plus the 3 inside customer.

    result = rejection(encode(event), CART_UPDATED)

    assert result.kind is DeadLetterKind.SCHEMA_VIOLATION
    assert result.detail.count("; ") == 10
    assert result.detail.endswith("; and 2 more errors")
