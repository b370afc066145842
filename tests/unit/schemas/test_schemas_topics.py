"""The event-type registry and topic naming."""

from __future__ import annotations

import re

import pytest

from schemas import (
    ADMIN_COMMAND_TYPES,
    ALL_DATA_MODELS,
    ALL_TOPICS,
    DLQ_TOPIC,
    EVENT_MODELS,
    EVENT_TYPE_BY_DATA_MODEL,
    INBOUND_DATA_MODELS,
    INBOUND_TOPICS,
    OUTBOUND_DATA_MODELS,
    OUTBOUND_TOPICS,
    PAYMENTS_DEAD_LETTER,
    CloudEvent,
    DeadLetter,
    event_type_for_topic,
    example_event,
    topic_for,
)

CONTRACT_INBOUND = {
    "cart.updated",
    "checkout.completed",
    "admin.payment.capture",
    "admin.payment.refund",
    "admin.payment.cancel",
    "payment.provider_webhook",
}
CONTRACT_OUTBOUND = {
    "payment.authorized",
    "payment.requires_action",
    "payment.failed",
    "payment.captured",
    "payment.refunded",
    "payment.canceled",
    "payment.disputed",
}


def test_topic_sets_match_the_contract() -> None:
    assert set(INBOUND_TOPICS) == CONTRACT_INBOUND
    assert set(OUTBOUND_TOPICS) == CONTRACT_OUTBOUND
    assert set(ALL_TOPICS) == CONTRACT_INBOUND | CONTRACT_OUTBOUND | {"payments.dlq"}
    assert len(ALL_TOPICS) == len(set(ALL_TOPICS))
    assert {
        "admin.payment.capture",
        "admin.payment.refund",
        "admin.payment.cancel",
    } == ADMIN_COMMAND_TYPES


def test_data_model_tables_are_consistent() -> None:
    assert set(INBOUND_DATA_MODELS) == CONTRACT_INBOUND
    assert set(OUTBOUND_DATA_MODELS) == CONTRACT_OUTBOUND
    assert {
        **INBOUND_DATA_MODELS,
        **OUTBOUND_DATA_MODELS,
        PAYMENTS_DEAD_LETTER: DeadLetter,
    } == ALL_DATA_MODELS
    assert set(EVENT_MODELS) == set(ALL_DATA_MODELS)
    assert {model: t for t, model in ALL_DATA_MODELS.items()} == EVENT_TYPE_BY_DATA_MODEL


@pytest.mark.parametrize("event_type", list(ALL_DATA_MODELS))
def test_event_model_wraps_the_data_model(event_type: str) -> None:
    event = EVENT_MODELS[event_type].model_validate(example_event(event_type))

    assert isinstance(event, CloudEvent)
    assert type(event.data) is ALL_DATA_MODELS[event_type]


@pytest.mark.parametrize("event_type", sorted(CONTRACT_INBOUND | CONTRACT_OUTBOUND))
@pytest.mark.parametrize("prefix", ["", "prod.", "test-1234."])
def test_topic_is_prefix_plus_event_type(event_type: str, prefix: str) -> None:
    topic = topic_for(event_type, prefix)

    assert topic == prefix + event_type
    assert event_type_for_topic(topic, prefix) == event_type


@pytest.mark.parametrize("prefix", ["", "prod."])
def test_dead_letters_go_to_the_dlq_topic(prefix: str) -> None:
    assert topic_for(PAYMENTS_DEAD_LETTER, prefix) == prefix + DLQ_TOPIC == prefix + "payments.dlq"
    assert event_type_for_topic(prefix + "payments.dlq", prefix) == "payments.dead_letter"


def test_unknown_event_type_has_no_topic() -> None:
    with pytest.raises(ValueError, match=re.escape("unknown event type 'cart.update'")):
        topic_for("cart.update")


@pytest.mark.parametrize(
    ("topic", "prefix"),
    [
        ("orders.created", ""),
        ("cart.updated", "prod."),
        ("staging.cart.updated", "prod."),
        ("prod.payments.dead_letter", "prod."),
    ],
)
def test_foreign_topics_have_no_event_type(topic: str, prefix: str) -> None:
    assert event_type_for_topic(topic, prefix) is None
