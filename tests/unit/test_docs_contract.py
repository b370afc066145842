"""`docs/contract.md` says what `schemas/` does: the page other teams build against.

Its tables are written by hand, in words for people; these tests hold them to the
models: the topic table to the event-type registry, each event's field table to its
`data` model (every field, and whether it is always there), the envelope table to
`CloudEvent`. The reason codes, the dead-letter kinds and the examples are generated
into the page (`tools/docs/generate.py`) and checked in `test_docs_generated.py`.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import BaseModel

from schemas.dead_letter import DeadLetter
from schemas.envelope import CloudEvent
from schemas.outbound import PaymentEventData
from schemas.topics import (
    ADMIN_COMMAND_TYPES,
    ALL_DATA_MODELS,
    ALL_TOPICS,
    DLQ_TOPIC,
    INBOUND_DATA_MODELS,
    OUTBOUND_DATA_MODELS,
    PAYMENTS_DEAD_LETTER,
)

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "contract.md"
HEADING = re.compile(r"^(#{2,4}) (.+)$", re.M)
FIELD_TABLE = re.compile(
    r"^\| field \| required \| type / rule \|\n\|---\|---\|---\|\n((?:\|.*\|\n)+)", re.M
)
ROW = re.compile(r"^\| `(\w+)` \| ([^|]+?) \|", re.M)
COMMON = "Fields of every `payment.*` event"
DEAD_LETTERS = f"Dead letters: `{DLQ_TOPIC}`"


def _sections() -> dict[str, str]:
    """Section text by heading ("`cart.updated`", "Dead letters: `payments.dlq`")."""
    text = PAGE.read_text(encoding="utf-8")
    headings = list(HEADING.finditer(text))
    sections: dict[str, str] = {}
    for heading, following in zip(headings, [*headings[1:], None], strict=True):
        end = following.start() if following else len(text)
        sections[heading[2]] = text[heading.end() : end]
    return sections


def _field_table(section: str) -> dict[str, bool]:
    """field -> always present, from the section's field table."""
    found = FIELD_TABLE.search(section)
    assert found, "no `| field | required | type / rule |` table"
    rows = {name: cell.strip() for name, cell in ROW.findall(found[1])}
    return {name: cell.split()[0] in ("yes", "always") for name, cell in rows.items()}


def _model_fields(model: type[BaseModel], without: frozenset[str] = frozenset()) -> dict[str, bool]:
    return {
        name: field.is_required()
        for name, field in model.model_fields.items()
        if name not in without
    }


COMMON_FIELDS = frozenset(PaymentEventData.model_fields)


def _expected(event_type: str) -> dict[str, bool]:
    model = ALL_DATA_MODELS[event_type]
    if event_type in OUTBOUND_DATA_MODELS:
        return _model_fields(model, COMMON_FIELDS)
    return _model_fields(model)


@pytest.mark.parametrize("event_type", [t for t in ALL_DATA_MODELS if t != PAYMENTS_DEAD_LETTER])
def test_each_event_table_has_the_models_fields(event_type: str) -> None:
    sections = _sections()
    assert f"`{event_type}`" in sections, f"no section headed `{event_type}`"
    assert _field_table(sections[f"`{event_type}`"]) == _expected(event_type)


def test_the_common_payment_fields_are_those_of_every_payment_event() -> None:
    assert _field_table(_sections()[COMMON]) == _model_fields(PaymentEventData)
    for model in OUTBOUND_DATA_MODELS.values():
        assert set(model.model_fields) >= COMMON_FIELDS


def test_the_dead_letter_table_has_the_models_fields() -> None:
    assert _field_table(_sections()[DEAD_LETTERS]) == _model_fields(DeadLetter)


def test_the_envelope_table_has_the_cloudevent_attributes() -> None:
    text = PAGE.read_text(encoding="utf-8")
    start = text.index("## The envelope")
    table = text[start : text.index("\n## ", start + 1)]
    attributes = set(re.findall(r"^\| `(\w+)` \|", table, re.M))
    # `causationid` is the one extension the service writes; the page says so in prose.
    assert attributes == set(CloudEvent.model_fields) - {"causationid"}
    assert "`causationid`" in table


def test_the_topic_table_matches_the_registry() -> None:
    text = PAGE.read_text(encoding="utf-8")
    start = text.index("## Topics and keys")
    rows = re.findall(
        r"^\| `([\w.]+)` \| ([^|]+) \| ([^|]+) \| `(\w+)`",
        text[start : text.index("\n## ", start)],
        re.M,
    )
    assert {topic for topic, *_ in rows} == set(ALL_TOPICS)
    for topic, direction, key, model in rows:
        event_type = PAYMENTS_DEAD_LETTER if topic == DLQ_TOPIC else topic
        assert model == ALL_DATA_MODELS[event_type].__name__, topic
        assert direction.startswith("in") is (topic in INBOUND_DATA_MODELS), topic
        assert ("signed" in direction) is (topic in ADMIN_COMMAND_TYPES), topic
        expected_key = "payment id" if topic in ADMIN_COMMAND_TYPES else None
        if topic in INBOUND_DATA_MODELS and topic not in ADMIN_COMMAND_TYPES:
            expected_key = "provider id" if "webhook" in topic else "cart id"
        if expected_key:
            assert key.strip() == expected_key, topic
        elif topic in OUTBOUND_DATA_MODELS:
            assert key.startswith("cart id"), topic


def test_the_promises_are_numbered_one_to_ten() -> None:
    text = PAGE.read_text(encoding="utf-8")
    start = text.index("## The promises")
    numbers = re.findall(r"^(\d+)\. \*\*", text[start : text.index("\n## ", start)], re.M)
    assert numbers == [str(n) for n in range(1, 11)]
