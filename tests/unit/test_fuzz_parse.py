"""Fuzzing the raw-bytes parse path: `parse_event` never raises, whatever arrives.

Every consumer feeds every Kafka value through `schemas.parse.parse_event`; an
exception there would stop the partition (contract promise 5: bad input never
stops a consumer). These Hypothesis properties throw at it random bytes, random
JSON, and valid events mutated the way broken producers and corrupted transports
break them — byte flips, truncation, inserted bytes, deleted fields, fields of
another type — on random topics, and require a `ParsedEvent` or a `Rejection`
every time, with a well-formed rejection and a parse that is stable under
re-encoding. Example counts: 2,000 random byte strings, 2,000 mutated events,
1,000 random JSON documents, 500 structural mutations.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.dead_letter import MAX_DETAIL_CHARS, DeadLetterKind
from schemas.envelope import CloudEvent
from schemas.examples import example_event
from schemas.parse import MAX_VALUE_BYTES, Rejection, parse_event
from schemas.topics import INBOUND_DATA_MODELS, INBOUND_TOPICS


def fuzz() -> settings:
    # How many examples is the Hypothesis profile's (tests/conftest.py), not the test's.
    return settings(
        deadline=None,  # a shared CI machine has hiccups; speed is not the property here
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


inbound_types = st.sampled_from(sorted(INBOUND_TOPICS))
any_topic = st.one_of(
    inbound_types,
    st.sampled_from(["payment.authorized", "payments.dlq", "cart.deleted", "", "CART.UPDATED"]),
    st.text(max_size=40),
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=25,
)


def encode(document: Any) -> bytes:
    """JSON bytes; the stdlib encoder, because orjson refuses integers beyond 64 bits."""
    return json.dumps(document, allow_nan=False).encode()


def check_outcome(value: bytes | None, topic: str) -> CloudEvent[Any] | Rejection:
    """Parse and check the shape of whatever came out; it must not raise."""
    result = parse_event(value, topic)
    if isinstance(result, Rejection):
        assert isinstance(result.kind, DeadLetterKind)
        assert result.detail, "a rejection always says why"
        assert len(result.detail) <= MAX_DETAIL_CHARS
        if result.kind == DeadLetterKind.TOO_LARGE:
            assert value is not None and len(value) > MAX_VALUE_BYTES
        return result
    assert isinstance(result, CloudEvent)
    # Only events of the topic's own type parse, into that type's data model.
    assert topic in INBOUND_DATA_MODELS
    assert result.type == topic
    assert isinstance(result.data, INBOUND_DATA_MODELS[topic])
    # What parsed once parses again, identically, from its own encoding.
    again = parse_event(result.to_json_bytes(), topic)
    assert isinstance(again, CloudEvent), again
    assert again == result
    return result


@fuzz()
@given(value=st.one_of(st.none(), st.binary(max_size=512)), topic=any_topic)
def test_random_bytes_never_raise(value: bytes | None, topic: str) -> None:
    check_outcome(value, topic)


@fuzz()
@given(document=json_values, topic=any_topic)
def test_random_json_documents_never_raise(document: Any, topic: str) -> None:
    check_outcome(encode(document), topic)


@st.composite
def byte_mutations(draw: st.DrawFn) -> tuple[bytes, str]:
    """A valid event's bytes, damaged: flipped bytes, a cut, inserted bytes."""
    event_type = draw(inbound_types)
    value = bytearray(orjson.dumps(example_event(event_type)))
    for _ in range(draw(st.integers(min_value=0, max_value=4))):
        position = draw(st.integers(min_value=0, max_value=len(value) - 1))
        value[position] ^= draw(st.integers(min_value=1, max_value=255))
    if draw(st.booleans()):
        value = value[: draw(st.integers(min_value=0, max_value=len(value)))]
    if draw(st.booleans()):
        position = draw(st.integers(min_value=0, max_value=len(value)))
        value[position:position] = draw(st.binary(min_size=1, max_size=8))
    topic = draw(st.one_of(st.just(event_type), any_topic))
    return bytes(value), topic


@fuzz()
@given(case=byte_mutations())
def test_byte_mutated_events_never_raise(case: tuple[bytes, str]) -> None:
    check_outcome(*case)


def _paths(document: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value inside a JSON document (keys and list indexes)."""
    found: list[tuple[Any, ...]] = []
    items: list[tuple[Any, Any]] = []
    if isinstance(document, dict):
        items = list(document.items())
    elif isinstance(document, list):
        items = list(enumerate(document))
    for key, child in items:
        path = (*prefix, key)
        found.append(path)
        found.extend(_paths(child, path))
    return found


@st.composite
def structural_mutations(draw: st.DrawFn) -> tuple[bytes, str, str]:
    """A valid event with one field deleted or replaced by a value of another type."""
    event_type = draw(inbound_types)
    event = copy.deepcopy(example_event(event_type))
    path = draw(st.sampled_from(_paths(event)))
    parent = event
    for key in path[:-1]:
        parent = parent[key]
    action = draw(st.sampled_from(["delete", "retype"]))
    if action == "delete" and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = draw(json_values)
    return encode(event), event_type, ".".join(map(str, path))


@fuzz()
@given(case=structural_mutations())
def test_deleted_and_retyped_fields_never_raise(case: tuple[bytes, str, str]) -> None:
    value, event_type, _path = case
    result = check_outcome(value, event_type)
    if isinstance(result, Rejection):
        # Still valid JSON of an object: only the envelope or the data can be wrong.
        assert result.kind in (
            DeadLetterKind.INVALID_ENVELOPE,
            DeadLetterKind.TYPE_MISMATCH,
            DeadLetterKind.SCHEMA_VIOLATION,
        ), result
