"""Whole hostile Kafka records through the real `BatchProcessor` (contract promise 5).

Hypothesis builds batches of records — keys, headers and values of every shape a
producer could write, on every inbound topic, with our signature header mangled
every way — and runs each batch through the consumer's real processing (parse,
authenticate, trace context, log context, handle, dead letter, publish) over the
in-memory store and publisher. Whatever the batch holds:

- the batch completes (no exception leaves `process`);
- every record ends applied (or duplicate, ignored, rejected) or dead-lettered
  with a contract kind, exactly once, and never as `processing_failed`: an
  unexpected exception anywhere is a bug this fuzzer found;
- every dead letter fits below the producer's request size;
- a valid checkout in the same batch is authorized all the same.

`make fuzz` runs it longer (`FUZZ_EXAMPLES`).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider

from schemas.dead_letter import DeadLetterKind
from schemas.topics import PAYMENTS_DEAD_LETTER, topic_for
from service.adapters.providers.stripe import StripeProvider
from service.admin_auth import AdminAuthenticator
from service.consumer import BatchProcessor, Record
from service.observability.tracing import MessageTracer
from service.webhook_intake import WebhookVerifier
from tests.support.hostile import STRIPE_SECRET, HostileRecord, hostile_records
from tests.support.memory import RecordingPublisher
from tests.support.world import World

ADMIN_KEY = ("fuzz", "fuzz-secret")
PREFIX = "fz."
#: `make fuzz` sets the count; else the Hypothesis profile's (tests/conftest.py).
EXAMPLES: dict[str, int] = (
    {"max_examples": int(os.environ["FUZZ_EXAMPLES"])} if "FUZZ_EXAMPLES" in os.environ else {}
)
TRACER = MessageTracer(TracerProvider())
KINDS = {kind.value for kind in DeadLetterKind}
#: A real Stripe adapter, for the webhook signature check only (it calls nothing here).
STRIPE = StripeProvider({"api_key": "sk_test_fuzz", "webhook_secret": STRIPE_SECRET})


def _records(batch: list[HostileRecord], partitions: list[int]) -> list[Record]:
    offsets: dict[tuple[str, int], int] = {}
    records = []
    for hostile, partition in zip(batch, partitions, strict=True):
        topic = topic_for(hostile.event_type, PREFIX)
        offset = offsets.get((topic, partition), 0)
        offsets[(topic, partition)] = offset + 1
        records.append(
            Record(
                topic,
                partition,
                offset,
                hostile.key,
                hostile.value,
                tuple(hostile.headers),
                created_ms=hostile.timestamp_ms,
            )
        )
    return records


def _checkout(cart_id: str, offset: int) -> Record:
    event = {
        "specversion": "1.0",
        "id": f"evt_{cart_id}",
        "source": "/fuzz",
        "type": "checkout.completed",
        "data": {
            "cart_id": cart_id,
            "idempotency_key": f"idem_{cart_id}",
            "region_id": "eu",
            "currency_code": "usd",
            "amount": 5000,
            "provider_id": "fake",
        },
    }
    topic = topic_for("checkout.completed", PREFIX)
    return Record(topic, 99, offset, cart_id.encode(), orjson.dumps(event), ())


def _outcomes(processor: BatchProcessor) -> dict[tuple[str, str], float]:
    counted: dict[tuple[str, str], float] = {}
    for metric in processor.metrics.events_outcome.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                key = (sample.labels["topic"], sample.labels["outcome"])
                counted[key] = sample.value
    return counted


def _contained(processor: BatchProcessor) -> float:
    return sum(
        sample.value
        for metric in processor.metrics.contained_errors.collect()
        for sample in metric.samples
        if sample.name.endswith("_total")
    )


async def _process(records: list[Record], valid_cart: str) -> None:
    world = World("fake")
    publisher = RecordingPublisher()
    processor = world.batch_processor(
        publisher, PREFIX, AdminAuthenticator(dict([ADMIN_KEY])), tracer=TRACER
    )
    processor.webhook_verifier = WebhookVerifier({**world.processors, "stripe": STRIPE})
    await asyncio.wait_for(processor.process(records), 60)

    causes = [f"{r.topic}:{r.partition}:{r.offset}" for r in records]
    letters = publisher.of_type(PAYMENTS_DEAD_LETTER)
    lettered = [letter.causation_id for letter in letters]
    assert len(lettered) == len(set(lettered)), "a record was dead-lettered twice"
    assert set(lettered) <= set(causes)
    for letter in letters:
        kind = letter.payload["data"]["error"]["kind"]
        assert kind in KINDS
        assert kind != "processing_failed", letter.payload["data"]["error"]["detail"]
        assert len(orjson.dumps(letter.payload)) <= processor.max_letter_bytes
    outcomes = _outcomes(processor)
    assert sum(outcomes.values()) == len(records), outcomes
    assert sum(v for (_, o), v in outcomes.items() if o == "dead_lettered") == len(letters)
    assert _contained(processor) == 0
    authorized = [e for e in publisher.of_type("payment.authorized") if e.key == valid_cart]
    assert len(authorized) == 1, "the valid checkout in the batch was not authorized"


@settings(
    **EXAMPLES,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)
@given(
    batch=st.lists(hostile_records(ADMIN_KEY), min_size=1, max_size=6),
    data=st.data(),
)
def test_any_batch_completes_and_every_record_ends_applied_or_dead_lettered(
    batch: list[HostileRecord], data: Any
) -> None:
    partitions = data.draw(st.lists(st.integers(0, 2), min_size=len(batch), max_size=len(batch)))
    records = _records(batch, partitions)
    cart = f"cart_fz{data.draw(st.integers(0, 10**9))}"
    position = data.draw(st.integers(0, len(records)))
    records.insert(position, _checkout(cart, 0))
    asyncio.run(_process(records, cart))
