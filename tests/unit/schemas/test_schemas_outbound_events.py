"""Outbound events: building, serializing to Kafka values and reading them back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from pydantic import BaseModel, ValidationError

from schemas import (
    CLOUDEVENTS_CONTENT_TYPE,
    EVENT_MODELS,
    OUTBOUND_DATA_MODELS,
    OUTBOUND_TOPICS,
    PAYMENT_FAILED,
    PAYMENTS_DEAD_LETTER,
    REASONS_BY_OPERATION,
    RETRYABLE_BY_REASON,
    CloudEvent,
    DeadLetterKind,
    FailureReason,
    PaymentAuthorized,
    PaymentCanceled,
    PaymentEventData,
    PaymentFailed,
    build_dead_letter_data,
    build_outbound_event,
    example_event,
)

NOW = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)

CONTRACT_REASONS = {
    "declined",
    "provider_error",
    "provider_unavailable",
    "amount_mismatch",
    "currency_mismatch",
    "provider_not_available",
    "invalid_payment_data",
    "collection_canceled",
    "payment_not_found",
    "not_authorized",
    "amount_exceeds_authorized",
    "payment_canceled",
    "nothing_captured",
    "amount_exceeds_captured",
    "already_captured",
    "idempotency_conflict",
    "needs_attention",
    "operation_in_flight",
}


def outbound_data(event_type: str, **changes: Any) -> BaseModel:
    data = dict(example_event(event_type)["data"], **changes)
    return OUTBOUND_DATA_MODELS[event_type].model_validate(data)


@pytest.mark.parametrize("event_type", OUTBOUND_TOPICS)
def test_every_outbound_event_round_trips_through_json_bytes(event_type: str) -> None:
    data = outbound_data(event_type)
    event = build_outbound_event(
        data, event_id="evt_out_1", source="/payments", time=NOW, causation_id="evt_in_1"
    )

    value = event.to_json_bytes()
    parsed = EVENT_MODELS[event_type].model_validate_json(value)

    assert parsed == event
    assert type(parsed.data) is OUTBOUND_DATA_MODELS[event_type]
    assert parsed.causationid == "evt_in_1"
    assert parsed.type == event_type


@pytest.mark.parametrize("event_type", OUTBOUND_TOPICS)
def test_outbound_envelope_always_has_time_subject_and_type(event_type: str) -> None:
    data = outbound_data(event_type)
    assert isinstance(data, PaymentEventData)

    wire = orjson.loads(
        build_outbound_event(data, event_id="e1", source="/payments", time=NOW).to_json_bytes()
    )

    assert wire["specversion"] == "1.0"
    assert wire["type"] == event_type
    assert wire["subject"] == data.cart_id
    assert wire["time"] == "2024-05-01T12:00:00.123456Z"
    assert wire["datacontenttype"] == "application/json"


def test_json_bytes_are_compact_and_leave_out_none() -> None:
    data = PaymentFailed.model_validate(
        dict(example_event(PAYMENT_FAILED)["data"], amount=None, session_id=None)
    )
    event = build_outbound_event(data, event_id="e1", source="/payments", time=NOW)

    value = event.to_json_bytes()

    assert b" " not in value.replace(b"Your card was declined.", b"")
    wire = orjson.loads(value)
    assert "causationid" not in wire
    assert {"amount", "payment_id", "session_id"}.isdisjoint(wire["data"])


def test_currency_is_lowercase_on_the_wire() -> None:
    data = outbound_data("payment.captured", currency_code="JPY")
    value = build_outbound_event(data, event_id="e1", source="/p", time=NOW).to_json_bytes()

    assert orjson.loads(value)["data"]["currency_code"] == "jpy"


def test_time_with_offset_keeps_its_offset() -> None:
    time = datetime(2024, 5, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    data = outbound_data("payment.canceled", canceled_at=time)
    value = build_outbound_event(data, event_id="e1", source="/p", time=time).to_json_bytes()

    wire = orjson.loads(value)
    assert wire["time"] == "2024-05-01T14:00:00+02:00"
    assert wire["data"]["canceled_at"] == "2024-05-01T14:00:00+02:00"


def test_naive_datetimes_are_rejected_on_output() -> None:
    with pytest.raises(ValidationError):
        outbound_data("payment.canceled", canceled_at=datetime(2024, 5, 1, 12, 0))
    with pytest.raises(ValidationError):
        build_outbound_event(
            outbound_data("payment.canceled"),
            event_id="e1",
            source="/p",
            time=datetime(2024, 5, 1, 12, 0),
        )


def test_extension_attributes_given_explicitly_are_kept_on_output() -> None:
    event = CloudEvent[PaymentCanceled](
        specversion="1.0",
        id="e1",
        source="/payments",
        type="payment.canceled",
        time=NOW,
        subject="cart_1",
        data=outbound_data("payment.canceled"),
        causationid="cmd_1",
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    )

    wire = orjson.loads(event.to_json_bytes())

    assert wire["causationid"] == "cmd_1"
    assert wire["traceparent"].startswith("00-")


@pytest.mark.parametrize("event_type", OUTBOUND_TOPICS)
def test_outbound_data_forbids_unknown_fields(event_type: str) -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        outbound_data(event_type, surprise=1)


@pytest.mark.parametrize("event_type", OUTBOUND_TOPICS)
def test_outbound_data_requires_the_common_payment_fields(event_type: str) -> None:
    for field in ("cart_id", "collection_id", "provider_id", "currency_code"):
        data = example_event(event_type)["data"]
        del data[field]
        with pytest.raises(ValidationError, match=field):
            OUTBOUND_DATA_MODELS[event_type].model_validate(data)


def test_failure_reasons_are_exactly_the_contract_codes() -> None:
    assert {reason.value for reason in FailureReason} == CONTRACT_REASONS
    assert set().union(*REASONS_BY_OPERATION.values()) == set(FailureReason)
    assert set(REASONS_BY_OPERATION) == {"authorize", "capture", "refund", "cancel"}


@pytest.mark.parametrize(
    ("operation", "reason"),
    # Sorted: the reasons are a set, and pytest-xdist's workers must collect one order.
    [(op, reason) for op, reasons in REASONS_BY_OPERATION.items() for reason in sorted(reasons)],
)
def test_payment_failed_accepts_the_reasons_of_its_operation(
    operation: str, reason: FailureReason
) -> None:
    retryable = RETRYABLE_BY_REASON.get(reason, False)
    data = outbound_data(
        PAYMENT_FAILED, operation=operation, reason=reason.value, retryable=retryable
    )

    assert isinstance(data, PaymentFailed)
    assert data.reason is reason


@pytest.mark.parametrize(
    ("operation", "reason"),
    [("capture", "declined"), ("refund", "already_captured"), ("cancel", "nothing_captured")],
)
def test_payment_failed_rejects_a_reason_of_another_operation(operation: str, reason: str) -> None:
    with pytest.raises(ValidationError, match="is not a reason of operation"):
        outbound_data(PAYMENT_FAILED, operation=operation, reason=reason)


def test_needs_attention_and_operation_in_flight_have_the_contracts_operations() -> None:
    for operation, reasons in REASONS_BY_OPERATION.items():
        assert FailureReason.NEEDS_ATTENTION in reasons
        assert (FailureReason.OPERATION_IN_FLIGHT in reasons) is (operation != "authorize")


@pytest.mark.parametrize(
    ("operation", "reason", "retryable"),
    [
        ("capture", "needs_attention", True),
        ("authorize", "needs_attention", True),
        ("refund", "operation_in_flight", False),
    ],
)
def test_payment_failed_keeps_the_retryable_the_contract_fixes(
    operation: str, reason: str, retryable: bool
) -> None:
    with pytest.raises(ValidationError, match="is always retryable"):
        outbound_data(PAYMENT_FAILED, operation=operation, reason=reason, retryable=retryable)


def test_captured_may_say_what_it_released() -> None:
    data = outbound_data("payment.captured", amount=3000, captured_total=3000, released_amount=2000)
    wire = orjson.loads(
        build_outbound_event(data, event_id="e1", source="/p", time=NOW).to_json_bytes()
    )
    assert wire["data"]["released_amount"] == 2000
    without = outbound_data("payment.captured")
    value = build_outbound_event(without, event_id="e2", source="/p", time=NOW).to_json_bytes()
    assert "released_amount" not in orjson.loads(value)["data"]


@pytest.mark.parametrize(
    "changes",
    [
        {"reason": "card_declined"},
        {"operation": "void"},
        {"retryable": "no"},
        {"retryable": 0},
        {"message": None},
    ],
)
def test_payment_failed_rejects_values_outside_the_contract(changes: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        outbound_data(PAYMENT_FAILED, **changes)


def test_captured_flags_must_be_real_booleans() -> None:
    with pytest.raises(ValidationError):
        outbound_data("payment.captured", fully_captured="true")


def test_requires_action_passes_the_action_object_through() -> None:
    action = {"type": "redirect_to_url", "url": "https://x.example/3ds", "extra": None}
    data = outbound_data("payment.requires_action", action=action)
    value = build_outbound_event(data, event_id="e1", source="/p", time=NOW).to_json_bytes()

    assert orjson.loads(value)["data"]["action"] == action


def test_dead_letter_event_round_trips_and_has_no_default_subject() -> None:
    data = build_dead_letter_data(
        source_topic="prod.cart.updated",
        partition=0,
        offset=7,
        key=b"cart_1",
        value=b"\x00\xff",
        headers=[],
        kind=DeadLetterKind.INVALID_JSON,
        detail="the value is not valid UTF-8",
        failed_at=NOW,
    )
    event = build_outbound_event(data, event_id="dlq_1", source="/payments", time=NOW)

    wire = orjson.loads(event.to_json_bytes())
    parsed = EVENT_MODELS[PAYMENTS_DEAD_LETTER].model_validate_json(event.to_json_bytes())

    assert wire["type"] == "payments.dead_letter"
    assert "subject" not in wire
    assert parsed == event


def test_unregistered_data_model_cannot_be_published() -> None:
    class Stray(BaseModel):
        x: int

    with pytest.raises(ValueError, match="Stray is not the data model"):
        build_outbound_event(Stray(x=1), event_id="e1", source="/p", time=NOW)


def test_event_models_are_immutable() -> None:
    data = outbound_data("payment.authorized")
    assert isinstance(data, PaymentAuthorized)

    with pytest.raises(ValidationError):
        data.amount = 1  # type: ignore[misc]


def test_content_type_header_value() -> None:
    assert CLOUDEVENTS_CONTENT_TYPE == "application/cloudevents+json; charset=utf-8"
