"""Bad input of every dead-letter kind, interleaved with valid traffic.

Invalid messages of each cheap kind (40 each; 1,000 in `make soak`) —
`invalid_json`, `invalid_envelope`, `type_mismatch`, `schema_violation` and
`unauthorized`, spread over every inbound topic — plus 3 `too_large` values (1 MiB
each, so only a few) and `processing_failed` ones (checkouts of carts whose stored
document is corrupt: the handler fails on every attempt, honestly, not by a hook)
are published between the events of the carts (50; 200 in `make soak`) that
check out, capture and refund,
on the same partitions (same keys). Every bad message must be dead-lettered with
the right kind at its source coordinates (topic, partition, offset), nothing
else be dead-lettered, and every valid event be applied: the consumer never stops.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from schemas.examples import example_event
from schemas.parse import MAX_VALUE_BYTES, Rejection, parse_event
from schemas.topics import ADMIN_COMMAND_TYPES, INBOUND_DATA_MODELS, INBOUND_TOPICS, topic_for
from service.testing import builders
from tests.support.faults import CheckoutWorkload, eventually, sized

pytestmark = pytest.mark.integration

PER_KIND = sized(40, 1_000)
TOO_LARGE = 3
CORRUPT_CARTS = sized(2, 5)
CARTS = sized(50, 200)
KINDS = ("invalid_json", "invalid_envelope", "type_mismatch", "schema_violation", "unauthorized")

Message = tuple[str, str, bytes | None, list[tuple[str, bytes]], str]
"""(event type of the topic, key, value, headers, expected dead-letter kind)."""


def _event(event_type: str, rng: random.Random) -> dict[str, Any]:
    event = example_event(event_type)
    event["id"] = f"bad_{rng.getrandbits(64):016x}"
    return event


def _invalid_json(event_type: str, rng: random.Random) -> bytes | None:
    valid = orjson.dumps(_event(event_type, rng))
    return rng.choice(
        [
            None,  # a tombstone: no value at all
            b"",
            b"{not json",
            valid[: rng.randrange(1, len(valid) - 1)],  # truncated
            b"\xff\xfe" + valid,  # not UTF-8
            valid.replace(b":", b"=", 1),
            b'{"a": NaN}',
        ]
    )


def _invalid_envelope(event_type: str, rng: random.Random) -> bytes:
    event = _event(event_type, rng)
    broken: Any
    match rng.randrange(7):
        case 0:
            broken = [event]
        case 1:
            broken = {k: v for k, v in event.items() if k != "id"}
        case 2:
            broken = {**event, "specversion": "0.3"}
        case 3:
            broken = {k: v for k, v in event.items() if k != "data"}
        case 4:
            broken = {**event, "data": [event["data"]]}
        case 5:
            broken = {**event, "id": "x" * 129}
        case _:
            broken = {**event, "source": ""}
    return orjson.dumps(broken)


def _type_mismatch(event_type: str, rng: random.Random) -> bytes:
    other = rng.choice([t for t in INBOUND_TOPICS if t != event_type] + ["cart.deleted"])
    return orjson.dumps({**_event(event_type, rng), "type": other})


_BAD_FIELDS: list[tuple[str, Any]] = [
    ("amount", 50.5),
    ("amount", -1),
    ("amount", 10**13),
    ("amount", "5000"),
    ("amount", True),
    ("currency_code", "xyz"),
    ("currency_code", "US"),
    ("cart_id", "has space"),
    ("cart_id", ""),
    ("payment_id", "bad id!"),
    ("requested_by", ""),
    ("provider_id", "Sandbox!"),
    ("idempotency_key", ""),
    ("region_id", 7),
    ("received_at", "yesterday"),
    ("payload", 5),
    ("headers", "x"),
]


def _schema_violation(event_type: str, rng: random.Random) -> bytes:
    event = _event(event_type, rng)
    data = event["data"]
    applicable = [(field, bad) for field, bad in _BAD_FIELDS if field in data]
    fields = INBOUND_DATA_MODELS[event_type].model_fields
    required = [name for name in data if name in fields and fields[name].is_required()]
    if rng.random() < 0.3 and required:
        del data[rng.choice(required)]
    else:
        field, bad = rng.choice(applicable)
        data[field] = bad
    return orjson.dumps(event)


def _unauthorized(rng: random.Random) -> tuple[str, bytes, list[tuple[str, bytes]]]:
    event_type = rng.choice(sorted(ADMIN_COMMAND_TYPES))
    value = orjson.dumps(_event(event_type, rng))
    other = orjson.dumps(_event(event_type, rng))
    headers = rng.choice(
        [
            [],
            [builders.sign(value, "harness", "wrong-secret")],
            [builders.sign(value, "nobody", "harness-secret")],
            [builders.sign(other, "harness", "harness-secret")],  # signs another value
            [("payments-signature", b"garbage")],
            [("payments-signature", b"keyid=harness")],
        ]
    )
    return event_type, value, headers


def invalid_messages(keys: list[str], rng: random.Random) -> list[Message]:
    """`PER_KIND` messages of each kind plus `TOO_LARGE`, each checked to be that kind.

    Unauthorized commands are valid events with a missing, malformed or wrong
    signature, so only the service's authenticator can classify them.
    """
    messages: list[Message] = []
    topics = list(INBOUND_TOPICS)
    for _ in range(PER_KIND):
        key = rng.choice(keys)
        messages.append((t := rng.choice(topics), key, _invalid_json(t, rng), [], "invalid_json"))
        t = rng.choice(topics)
        messages.append((t, key, _invalid_envelope(t, rng), [], "invalid_envelope"))
        t = rng.choice(topics)
        messages.append((t, key, _type_mismatch(t, rng), [], "type_mismatch"))
        t = rng.choice(topics)
        messages.append((t, key, _schema_violation(t, rng), [], "schema_violation"))
        t, value, headers = _unauthorized(rng)
        messages.append((t, key, value, headers, "unauthorized"))
    for _ in range(TOO_LARGE):
        filler = b" " * (MAX_VALUE_BYTES + 10)
        messages.append(
            ("checkout.completed", rng.choice(keys), b"{" + filler + b"}", [], "too_large")
        )
    for event_type, _, raw, _, kind in messages:
        # The input is what it claims to be (the parser's own tests cover it in depth).
        if kind != "unauthorized":
            parsed = parse_event(raw, event_type)
            assert isinstance(parsed, Rejection) and parsed.kind == kind, (kind, raw, parsed)
    rng.shuffle(messages)
    return messages


async def _corrupt_carts(database: Any, count: int) -> list[str]:
    """Stored documents the service cannot read: a handler fails on every attempt."""
    carts = [f"cart_corrupt_{n}_{time.time_ns()}" for n in range(count)]
    for cart in carts:
        await database["payment_collections"].insert_one(
            {
                "_id": f"paycol_corrupt_{cart}",
                "cart_id": cart,
                "payment_id": None,
                "version": 1,
                "outbox_pending": False,
                "reconcile": False,
                "updated_at": datetime.now(UTC),
                "state": {"id": f"paycol_corrupt_{cart}", "cart_id": cart, "amount": "garbage"},
            }
        )
    return carts


@pytest.mark.timeout(300)
async def test_every_dead_letter_kind_interleaved_with_valid_traffic(
    kafka_bootstrap: str, mongodb_url: str, scene_factory: Any, show: Callable[[str], None]
) -> None:
    rng = random.Random(99)
    started = time.monotonic()
    async with scene_factory(kafka_bootstrap, mongodb_url) as scene:
        harness = scene.harness
        service = scene.service()
        await service.start()
        workload = CheckoutWorkload(
            kafka_bootstrap, harness.prefix, harness.received, carts=CARTS, seed=9
        )
        corrupt = await _corrupt_carts(harness.database, CORRUPT_CARTS)
        bad = invalid_messages(list(workload.plans), rng)
        for cart in corrupt:
            checkout = builders.envelope(
                "checkout.completed", builders.checkout_completed(cart, 5000, region_id="eu")
            )
            bad.insert(
                rng.randrange(len(bad)),
                ("checkout.completed", cart, builders.encode(checkout), [], "processing_failed"),
            )
        producer = AIOKafkaProducer(
            bootstrap_servers=kafka_bootstrap, linger_ms=5, max_request_size=4 * 1024 * 1024
        )
        await producer.start()
        expected: dict[tuple[str, int, int], str] = {}
        slice_size = len(bad) // (CARTS // 25) + 1

        async def interleave(done: int) -> None:
            chunk = bad[(done // 25 - 1) * slice_size : (done // 25) * slice_size]
            sends = []
            for event_type, key, value, headers, kind in chunk:
                topic = topic_for(event_type, harness.prefix)
                future = await producer.send(topic, value, key=key.encode(), headers=headers)
                sends.append((future, kind))
            for future, kind in sends:
                metadata = await future
                expected[(metadata.topic, metadata.partition, metadata.offset)] = kind

        await workload.start()
        try:
            await workload.publish_carts(chunk=25, pause_s=0.2, on_chunk=interleave)
            await workload.run_until_done(timeout=90, database=harness.database)

            async def every_bad_message_lettered() -> bool:
                lettered = {
                    (str(r.data.get("source_topic")), r.data.get("partition"), r.data.get("offset"))
                    for r in harness.events("payments.dead_letter")
                }
                return len(expected) == len(bad) and lettered >= set(expected)

            # A condition, not a quiet period: a letter may come late on a loaded machine.
            await eventually(every_bad_message_lettered, "a dead letter for every bad message", 90)
            await harness.settle(quiet_s=1.0, timeout=30)  # then any unexpected extra
        except BaseException:
            show(scene.logs())
            raise
        finally:
            await workload.stop()
            await producer.stop()
        assert len(expected) == len(bad), "every bad message was published"

        # Dead letters by source coordinates: one kind each, every one present.
        got: dict[tuple[str, int, int], set[str]] = {}
        for letter in harness.events("payments.dead_letter"):
            data = letter.data
            source = (str(data["source_topic"]), int(data["partition"]), int(data["offset"]))
            got.setdefault(source, set()).add(str(data["error"]["kind"]))
        missing = [(s, k) for s, k in expected.items() if s not in got]
        wrong = [(s, k, got[s]) for s, k in expected.items() if s in got and got[s] != {k}]
        unexpected = [s for s in got if s not in expected]
        report = await scene.audit(ignore_carts=corrupt)
        show(
            f"[dead letters] {len(bad)} bad messages ({dict(Counter(expected.values()))}) among "
            f"{workload.published} valid ones; {len(got)} dead-lettered, {len(missing)} missing, "
            f"{len(wrong)} of the wrong kind, {len(unexpected)} unexpected; "
            f"{time.monotonic() - started:.0f}s\n" + report.render("dead letters")
        )
        assert not missing, missing[:10]
        assert not wrong, wrong[:10]
        assert not unexpected, unexpected[:10]
        assert service.running
        report.assert_clean()
        assert Counter(expected.values()) == {
            **dict.fromkeys(KINDS, PER_KIND),
            "too_large": TOO_LARGE,
            "processing_failed": CORRUPT_CARTS,
        }
        failures = workload.failures()
        assert not failures, failures[:5]
        assert await workload.ledger_mismatches(harness.database) == []
        assert report.carts == CARTS
