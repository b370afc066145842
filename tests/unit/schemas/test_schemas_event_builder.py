"""The one envelope builder: every event this code base writes is built by it and is valid.

Each site that puts a CloudEvent on Kafka (the domain's outbox events, the consumer's
dead letters, the webhook intake, the CLI demo, the test harness, the contract's
examples) is exercised here and its output read back with the contract's own models:
`parse_event` for what the service consumes, the registry's `CloudEvent[...]` models
for what it publishes. A source scan keeps the envelope and the time format from
being written by hand again anywhere else.
"""

from __future__ import annotations

import ast
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import BaseModel, ValidationError

from schemas.dead_letter import DeadLetterKind
from schemas.envelope import CloudEvent
from schemas.examples import example_event, example_event_bytes
from schemas.inbound import ProviderWebhook
from schemas.outbound import FailureReason, PaymentCaptured, PaymentFailed
from schemas.outbound_event import (
    SERVICE_SOURCE,
    build_outbound_event,
    event_payload,
    event_value,
)
from schemas.parse import Rejection, parse_event
from schemas.topics import (
    ALL_DATA_MODELS,
    DLQ_TOPIC,
    EVENT_MODELS,
    INBOUND_DATA_MODELS,
    OUTBOUND_DATA_MODELS,
    PAYMENT_CAPTURED,
    PAYMENT_FAILED,
    PAYMENT_PROVIDER_WEBHOOK,
    PAYMENTS_DEAD_LETTER,
    event_type_for_topic,
)
from schemas.wire_time import wire_time

ROOT = Path(__file__).resolve().parents[3]
NOW = datetime(2024, 5, 1, 12, 0, 0, 120, tzinfo=UTC)

WIRE_ORDER = (
    "specversion",
    "id",
    "source",
    "type",
    "time",
    "subject",
    "datacontenttype",
    "causationid",
    "data",
)
"""The attribute order every outbound event has always had on the wire (orjson keeps it)."""


def example_data(event_type: str) -> dict[str, Any]:
    data: dict[str, Any] = example_event(event_type)["data"]
    return data


def typed_example(event_type: str) -> BaseModel:
    return ALL_DATA_MODELS[event_type].model_validate(example_data(event_type))


def read_back(value: bytes, event_type: str, *, documented: bool = False) -> CloudEvent[Any]:
    """Validate a Kafka value with the contract: `parse_event` for inbound types, else
    the registry's envelope model (what downstream consumers and the DLQ tools use)."""
    if event_type in INBOUND_DATA_MODELS:
        parsed = parse_event(value, event_type)
        assert not isinstance(parsed, Rejection), parsed
        return parsed
    event = EVENT_MODELS[event_type].model_validate_json(value)
    # Outbound events always carry `time` and `subject` (contract section 1); the
    # documented dead-letter example has no `subject` (its committed docs would drift).
    assert event.time is not None and (documented or event.subject is not None)
    return event


# -- the builder itself ---------------------------------------------------------------


@pytest.mark.parametrize("event_type", ALL_DATA_MODELS)
def test_every_event_type_built_from_typed_data_validates(event_type: str) -> None:
    data = typed_example(event_type)

    payload = event_payload(
        data, event_id="evt_1", source="/payments", time=NOW, subject="s_1", causation_id="c_1"
    )
    event = read_back(event_value(payload), event_type)

    assert event.type == event_type
    assert event.data == data
    assert event.time == NOW
    assert (event.id, event.subject, event.causationid) == ("evt_1", "s_1", "c_1")


@pytest.mark.parametrize("event_type", ALL_DATA_MODELS)
def test_examples_are_built_by_the_builder_and_validate(event_type: str) -> None:
    example = example_event(event_type)

    event = read_back(example_event_bytes(event_type), event_type, documented=True)

    assert event.data == typed_example(event_type)
    assert list(example) == [name for name in WIRE_ORDER if name in example]
    assert example_event(event_type) is not example  # fresh on every call


@pytest.mark.parametrize("event_type", OUTBOUND_DATA_MODELS)
def test_typed_envelope_model_reads_the_same_payload(event_type: str) -> None:
    data = typed_example(event_type)
    payload = event_payload(data, event_id="e1", source="/p", time=NOW, causation_id="c1")

    model = build_outbound_event(data, event_id="e1", source="/p", time=NOW, causation_id="c1")

    assert model == EVENT_MODELS[event_type].model_validate(payload)
    assert model.subject == payload["subject"] == example_data(event_type)["cart_id"]


def test_attributes_are_written_in_wire_order_and_absent_ones_left_out() -> None:
    data = typed_example(PAYMENT_CAPTURED)

    full = event_payload(data, event_id="e", source="/p", time=NOW, causation_id="c")
    bare = event_payload(data, event_id="e", source="/p", time=None, subject=None)

    assert tuple(full) == WIRE_ORDER
    assert tuple(bare) == (
        "specversion",
        "id",
        "source",
        "type",
        "subject",
        "datacontenttype",
        "data",
    )
    assert full["time"] == "2024-05-01T12:00:00.000120Z"


def test_required_nullable_data_fields_stay_null_and_optional_ones_are_left_out() -> None:
    data = PaymentFailed(
        cart_id=None,
        collection_id=None,
        provider_id=None,
        currency_code=None,
        operation="refund",
        reason=FailureReason.PAYMENT_NOT_FOUND,
        message="no such payment",
        retryable=False,
        payment_id="pay_1",
    )

    payload = event_payload(data, event_id="e", source="/p", time=NOW, subject="pay_1")

    assert {"cart_id", "collection_id", "provider_id", "currency_code"} <= set(payload["data"])
    assert payload["data"]["cart_id"] is None
    assert "amount" not in payload["data"] and "session_id" not in payload["data"]
    assert EVENT_MODELS[PAYMENT_FAILED].model_validate_json(event_value(payload)).data == data


def test_type_comes_from_the_data_model_and_a_contradicting_type_is_refused() -> None:
    data = typed_example(PAYMENT_CAPTURED)
    assert isinstance(data, PaymentCaptured)

    with pytest.raises(ValueError, match=r"payment\.captured"):
        event_payload(data, event_id="e", source="/p", time=NOW, event_type=PAYMENT_FAILED)

    class Unregistered(BaseModel):
        cart_id: str

    with pytest.raises(ValueError, match="not the data model"):
        event_payload(Unregistered(cart_id="c"), event_id="e", source="/p", time=NOW)


def test_naive_time_is_refused() -> None:
    with pytest.raises(ValidationError):
        event_payload(
            typed_example(PAYMENT_CAPTURED),
            event_id="e",
            source="/p",
            time=datetime(2024, 5, 1, 12, 0),
        )


@pytest.mark.parametrize(
    ("moment", "timespec", "text"),
    [
        (datetime(2024, 5, 1, 12, 0, tzinfo=UTC), "auto", "2024-05-01T12:00:00Z"),
        (datetime(2024, 5, 1, 12, 0, 0, 5000, tzinfo=UTC), "auto", "2024-05-01T12:00:00.005000Z"),
        (datetime(2024, 5, 1, 12, 0, 0, 5000, tzinfo=UTC), "seconds", "2024-05-01T12:00:00Z"),
        (
            datetime(2024, 5, 1, 14, 0, 0, 1, tzinfo=timezone(timedelta(hours=2))),
            "auto",
            "2024-05-01T14:00:00.000001+02:00",
        ),
    ],
)
def test_wire_time_writes_what_pydantic_writes_inside_data(
    moment: datetime, timespec: Any, text: str
) -> None:
    assert wire_time(moment, timespec) == text
    if timespec == "auto":
        # The envelope's `time` and a datetime inside `data` read the same.
        webhook = ProviderWebhook(provider_id="p", received_at=moment, headers={}, payload="")
        assert webhook.model_dump(mode="json")["received_at"] == text


# -- every site that writes an event uses it -------------------------------------------


def test_domain_outbox_events_validate_in_wire_order() -> None:
    from service.domain.cart import new_collection
    from service.domain.events import new_event, standalone_event

    collection = new_collection("cart_1", "eu", "usd", 5000, NOW)
    data = PaymentCaptured.model_validate(
        dict(example_data(PAYMENT_CAPTURED), cart_id="cart_1", collection_id=collection.id)
    )
    stored = new_event(collection, data, PAYMENT_CAPTURED, "cmd_1", NOW)
    orphan = standalone_event(
        typed_example(PAYMENT_FAILED), PAYMENT_FAILED, "cmd_2", NOW, key="pay_x", subject="pay_x"
    )

    for outbox_event in (stored, orphan):
        event = read_back(event_value(outbox_event.payload), outbox_event.type)
        assert tuple(outbox_event.payload) == WIRE_ORDER
        assert (event.id, event.source, event.causationid) == (
            outbox_event.id,
            SERVICE_SOURCE,
            outbox_event.causation_id,
        )
    assert stored.payload["subject"] == "cart_1" and orphan.payload["subject"] == "pay_x"


def test_dead_letters_validate() -> None:
    from service.consumer import Record, dead_letter_event, letter_budget

    record = Record("prod.checkout.completed", 2, 7, b"cart_1", b"{not json", [("h", b"\xff")])

    letter = dead_letter_event(
        record,
        DeadLetterKind.INVALID_JSON,
        "the value is not JSON",
        NOW,
        max_bytes=letter_budget(1024 * 1024),
    )

    event = read_back(event_value(letter.payload), PAYMENTS_DEAD_LETTER)
    assert event_type_for_topic(DLQ_TOPIC) == letter.type == PAYMENTS_DEAD_LETTER
    assert event.subject == "cart_1" and event.source == SERVICE_SOURCE
    assert tuple(letter.payload) == tuple(n for n in WIRE_ORDER if n != "causationid")


class _AcceptingProvider:
    def verify_webhook(self, headers: dict[str, str], body: bytes, now: datetime) -> None:
        return None


async def test_webhook_intake_events_validate() -> None:
    from service.webhook_intake import WebhookIntake
    from tests.support.memory import RecordingPublisher

    publisher = RecordingPublisher()
    received = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
    intake = WebhookIntake(
        {"stripe": _AcceptingProvider()},  # type: ignore[dict-item]
        publisher,
        clock=lambda: received,
    )
    body = b'{"type": "payment_intent.succeeded", "id": "evt_1"}'

    status, answer = await intake.receive("stripe", {"Stripe-Signature": "t=1,v1=x"}, body)

    assert status == 200
    (published,) = publisher.published
    assert published.type == PAYMENT_PROVIDER_WEBHOOK and published.key == "stripe"
    event = read_back(event_value(published.payload), PAYMENT_PROVIDER_WEBHOOK)
    assert isinstance(event.data, ProviderWebhook)
    assert event.id == answer["id"] and event.subject == "stripe"
    assert event.data.payload == body.decode() and event.data.received_at == event.time == received
    assert event.data.headers == {"stripe-signature": "t=1,v1=x"}


def test_demo_events_validate() -> None:
    from service.tools import demo

    run = demo.ScenarioRun(demo.SCENARIOS[2], "cart_demo_1", "idem_demo_1")

    value = demo._checkout(run, 5000, {"payment_method": "pm_3ds", "action_result": "succeeded"})

    event = read_back(value, "checkout.completed")
    assert event.source == "/payments-cli/demo" and event.time is None
    assert orjson.loads(value)["data"]["payment_data"]["action_result"] == "succeeded"


def test_harness_builders_validate_and_pass_extensions_through() -> None:
    from service.testing import builders

    built = builders.envelope(
        "cart.updated", builders.cart_updated("cart_1"), time="2024-05-01T12:00:00Z"
    )
    off_contract = builders.envelope("cart.updated", {"cart_id": 5}, specversion="0.3")

    assert read_back(builders.encode(built), "cart.updated").time == datetime(
        2024, 5, 1, 12, 0, tzinfo=UTC
    )
    rejected = parse_event(builders.encode(off_contract), "cart.updated")
    assert isinstance(rejected, Rejection) and rejected.kind == DeadLetterKind.INVALID_ENVELOPE
    assert next(iter(off_contract)) == "specversion" and off_contract["specversion"] == "0.3"


# -- nothing else writes an envelope or a timestamp by hand ------------------------------


def _sources() -> list[Path]:
    return sorted(p for d in ("service", "schemas") for p in (ROOT / d).rglob("*.py"))


HAND_WRITTEN = {
    '"specversion"': ["schemas/outbound_event.py"],
    "'specversion'": [],
    '.replace("+00:00"': ["schemas/wire_time.py"],
    ".replace('+00:00'": [],
}
"""Text that means an envelope or a wire timestamp is written, and the one module allowed to."""


@pytest.mark.parametrize("needle", HAND_WRITTEN)
def test_only_the_builder_writes_an_envelope_or_a_wire_time(needle: str) -> None:
    sources = _sources()
    assert len(sources) > 50  # the scan sees the code base

    writers = [
        p.relative_to(ROOT).as_posix() for p in sources if needle in p.read_text(encoding="utf-8")
    ]

    assert writers == HAND_WRITTEN[needle]


def _string_constants(tree: ast.AST) -> list[ast.Constant]:
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
    }
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
    ]


def test_event_types_are_spelled_out_only_in_the_registry() -> None:
    names = {*ALL_DATA_MODELS, DLQ_TOPIC}
    # The AsyncAPI document's descriptions are a table keyed by topic; the drift test
    # checks it against the registry.
    allowed = {ROOT / "schemas" / "topics.py", ROOT / "service" / "tools" / "asyncapi.py"}

    spelled = [
        f"{path.relative_to(ROOT)}:{node.lineno}: {node.value}"
        for path in _sources()
        if path not in allowed
        for node in _string_constants(ast.parse(path.read_text(encoding="utf-8")))
        if node.value in names
    ]

    assert spelled == []
