"""Hypothesis strategies for whole hostile Kafka records: key, headers, value, size,
timestamp.

Used twice: by the fast fuzzer that drives the real `BatchProcessor` over in-memory
fakes (tests/unit/test_fuzz_transport.py), and by the one that sends records to the
real broker and a running service (tests/integration/test_fuzz_transport_broker.py).
A record is drawn as a `HostileRecord`; the caller signs or sends it as it needs.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
from hypothesis import strategies as st

from schemas.examples import example_event
from schemas.parse import MAX_VALUE_BYTES
from schemas.topics import ADMIN_COMMAND_TYPES, INBOUND_TOPICS, PAYMENT_PROVIDER_WEBHOOK
from service.admin_auth import SIGNATURE_HEADER

Headers = list[tuple[str, bytes | None]]


@dataclass(frozen=True)
class HostileRecord:
    event_type: str
    """The inbound topic's event type (the topic without prefix)."""
    key: bytes | None
    value: bytes | None
    headers: Headers
    label: str
    """What the strategy meant to build (shown when an example fails)."""
    timestamp_ms: int | None = None
    """The record's CreateTime (None: the producer stamps it when sending)."""


# -- keys -----------------------------------------------------------------------------

keys: st.SearchStrategy[bytes | None] = st.one_of(
    st.none(),
    st.just(b""),
    st.binary(min_size=1, max_size=64),
    st.text(max_size=40).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.just(b"k" * 200_000),
    st.just(b"\xff" * 200_000),
)

# -- values ---------------------------------------------------------------------------

_CONTROL = st.text(alphabet=st.characters(max_codepoint=0x1F), min_size=1, max_size=200)
_JSON_LEAF = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=20),
)
_HOSTILE_FIELD_VALUES: st.SearchStrategy[Any] = st.one_of(
    _JSON_LEAF,
    st.integers(min_value=2**63, max_value=2**70),
    st.integers(min_value=-(2**70), max_value=-1),
    st.lists(_JSON_LEAF, max_size=5),
    st.dictionaries(st.text(max_size=8), _JSON_LEAF, max_size=5),
    st.text(alphabet=st.characters(max_codepoint=0x1F), max_size=30),
    st.text(min_size=300, max_size=600),
)


def _valid_event(event_type: str) -> dict[str, Any]:
    event = example_event(event_type)
    event["id"] = f"fz_{uuid.uuid4().hex}"
    return event


@st.composite
def _mutated_event(draw: st.DrawFn, event_type: str) -> bytes:
    """A valid event with one field (envelope or data) changed or removed."""
    event = _valid_event(event_type)
    where = draw(st.sampled_from(["envelope", "data"]))
    target = event if where == "envelope" else event["data"]
    name = draw(st.sampled_from(sorted(target)))
    if draw(st.booleans()):
        del target[name]
    else:
        target[name] = draw(_HOSTILE_FIELD_VALUES)
    # The standard library, since orjson refuses integers beyond 64 bits.
    return json.dumps(event).encode()


def _big_int_value(event_type: str, digits: int) -> bytes:
    event = _valid_event(event_type)
    text = orjson.dumps(event).decode()
    field = '"amount":' if '"amount":' in text else '"specversion":'
    return text.replace(field, f'"big":{"9" * digits},{field}', 1).encode()


def _duplicate_keys(event_type: str) -> bytes:
    # Two "id" members: JSON parsers disagree on which wins; ours must not care.
    body = orjson.dumps(_valid_event(event_type)).decode()
    return ('{"id":"first",' + body[1:]).encode()


def values(event_type: str) -> st.SearchStrategy[tuple[bytes | None, str]]:
    wrong_types = [t for t in INBOUND_TOPICS if t != event_type]
    return st.one_of(
        st.just((None, "tombstone")),
        st.just((b"", "empty")),
        st.binary(max_size=300).map(lambda v: (v, "random bytes")),
        _CONTROL.map(lambda t: (t.encode(), "control characters")),
        st.sampled_from([0x01, 0x00, 0x22, 0x5C, 0xFF]).map(
            lambda b: (bytes([b]) * 180_000, f"180 KB of byte {b:#04x}")
        ),
        st.just((b"\x00" * (MAX_VALUE_BYTES + 1), "over 1 MiB")),
        st.integers(min_value=1, max_value=5000).map(
            lambda n: (b"[" * n + b"]" * n, f"{n} nested arrays")
        ),
        st.just((b'{"a":' * 3000 + b"1" + b"}" * 3000, "3000 nested objects")),
        st.integers(min_value=20, max_value=6000).map(
            lambda digits: (_big_int_value(event_type, digits), f"{digits}-digit integer")
        ),
        st.just((_duplicate_keys(event_type), "duplicate keys")),
        _mutated_event(event_type).map(lambda v: (v, "one field mutated")),
        st.sampled_from(wrong_types).map(
            lambda t: (orjson.dumps(_valid_event(t)), f"valid {t} on the wrong topic")
        ),
        st.just((orjson.dumps(_valid_event(event_type)), "valid")),
        *(
            [stripe_webhook().map(lambda v: (v, "stripe webhook, signature as stored"))]
            if event_type == PAYMENT_PROVIDER_WEBHOOK
            else []
        ),
    )


# -- provider webhooks ---------------------------------------------------------------

#: The Stripe webhook secret of the fuzzers' Stripe provider.
STRIPE_SECRET = "whsec_fuzz"


@st.composite
def stripe_webhook(draw: st.DrawFn) -> bytes:
    """A `payment.provider_webhook` for Stripe whose stored signature is correct or broken."""
    from tests.fixtures.stripe.kit import sign

    payload = draw(st.one_of(st.just('{"type": "payment_intent.succeeded"}'), st.text(max_size=80)))
    good = sign(payload.encode("utf-8", "surrogatepass"), STRIPE_SECRET, 1_700_000_000)
    signature = draw(
        st.one_of(
            st.just(good),
            st.just("t=1,v1=" + "é" * 64),
            st.just("t=1,v1=éé"),
            st.text(max_size=120),
            st.integers(0, len(good)).map(lambda n: good[:n]),
            st.just(good.replace("t=", "t=x", 1)),
        )
    )
    event = _valid_event(PAYMENT_PROVIDER_WEBHOOK)
    event["data"] = {
        "provider_id": "stripe",
        "received_at": "2026-01-01T00:00:00Z",
        "headers": {"stripe-signature": signature, "content-type": "application/json"},
        "payload": payload,
    }
    return json.dumps(event).encode("utf-8", "surrogatepass")


# -- headers --------------------------------------------------------------------------

_HEADER_VALUES: st.SearchStrategy[bytes | None] = st.one_of(
    st.none(),
    st.binary(max_size=40),
    st.text(max_size=40).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.just(b"\xff\xfe\x00"),
    st.just("é".encode() * 10),
)
_HEADER_NAMES = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["content-type", "traceparent", "tracestate", SIGNATURE_HEADER]),
)


def signature(value: bytes | None, key_id: str, secret: str) -> bytes:
    digest = hmac.new(secret.encode(), value or b"", hashlib.sha256).hexdigest()
    return f"keyid={key_id},v1={digest}".encode()


@st.composite
def mangled_signature(draw: st.DrawFn, value: bytes | None, key_id: str, secret: str) -> bytes:
    """Our signature header, correct or broken in one of the ways a producer could."""
    good = signature(value, key_id, secret)
    how = draw(
        st.sampled_from(
            [
                "correct",
                "truncated",
                "non-ascii digest",
                "not utf-8",
                "extra bytes",
                "upper case",
                "unknown key id",
                "one digit changed",
                "random",
            ]
        )
    )
    if how == "correct":
        return good
    if how == "truncated":
        return good[: draw(st.integers(min_value=0, max_value=len(good) - 1))]
    if how == "non-ascii digest":
        return f"keyid={key_id},v1=éé".encode()
    if how == "not utf-8":
        return f"keyid={key_id},v1=".encode() + b"\xff\xfe\x00"
    if how == "extra bytes":
        return good + draw(st.binary(min_size=1, max_size=8))
    if how == "upper case":
        return good.upper()
    if how == "unknown key id":
        return good.replace(key_id.encode(), b"someone-else", 1)
    if how == "one digit changed":
        position = draw(st.integers(min_value=len(good) - 64, max_value=len(good) - 1))
        changed = bytearray(good)
        changed[position] = ord("0") if changed[position] != ord("0") else ord("1")
        return bytes(changed)
    return draw(st.binary(max_size=120))


@st.composite
def headers_for(
    draw: st.DrawFn, event_type: str, value: bytes | None, key: tuple[str, str]
) -> Headers:
    shape = draw(st.sampled_from(["none", "few", "hundreds"]))
    headers: Headers = []
    if shape == "few":
        headers = draw(st.lists(st.tuples(_HEADER_NAMES, _HEADER_VALUES), max_size=6))
    elif shape == "hundreds":
        count = draw(st.integers(min_value=100, max_value=400))
        headers = [(f"x-h{i}", b"v" * (i % 50)) for i in range(count)]
    if event_type in ADMIN_COMMAND_TYPES and draw(st.booleans()):
        headers.append((SIGNATURE_HEADER, draw(mangled_signature(value, *key))))
    return headers


# -- timestamps -----------------------------------------------------------------------


_STARTED_MS = int(time.time() * 1000)


def timestamps(*, broker: bool) -> st.SearchStrategy[int | None]:
    """A producer's CreateTime: none (stamped when sent), the epoch, long ago, now, an
    hour ahead of our clock (skewed producers). `broker=False` adds what only a
    consumer record built in-process can carry (Kafka's -1 for "none", the largest
    long); Apache Kafka refuses records more than an hour in the future
    (`log.message.timestamp.after.max.ms`)."""
    now_ms = _STARTED_MS  # fixed per run: Hypothesis needs the same strategy each time
    choices = [
        st.none(),
        st.just(0),
        st.integers(min_value=0, max_value=now_ms),
        st.just(now_ms + 50 * 60 * 1000),
    ]
    if not broker:
        choices += [st.just(-1), st.just(2**63 - 1), st.integers(min_value=now_ms)]
    return st.one_of(choices)


# -- whole records --------------------------------------------------------------------


@st.composite
def hostile_records(
    draw: st.DrawFn, admin_key: tuple[str, str], *, broker: bool = False
) -> HostileRecord:
    """Any record a producer could write to one of our inbound topics (`broker`: one
    a real broker accepts, see `timestamps`)."""
    event_type = draw(st.sampled_from(INBOUND_TOPICS))
    value, label = draw(values(event_type))
    return HostileRecord(
        event_type=event_type,
        key=draw(keys),
        value=value,
        headers=draw(headers_for(event_type, value, admin_key)),
        label=label,
        timestamp_ms=draw(timestamps(broker=broker)),
    )
