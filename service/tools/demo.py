"""Demo: drive a running service through every sandbox outcome and show the answers.

For each scenario it sends a `cart.updated` and a `checkout.completed` for a fresh
cart paying with one of the sandbox's test payment methods, then reads the
outbound topics until the scenario's answer arrives. The 3-D Secure scenario
answers `payment.requires_action` the way a storefront would: it re-sends the
checkout with the same idempotency key and the challenge's result.

It only talks to Kafka, like any other producer, so it shows the service exactly
as other teams see it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer, TopicPartition
from pydantic import BaseModel

from schemas.inbound import CartUpdated, CheckoutCompleted
from schemas.outbound_event import event_payload, event_value
from schemas.topics import (
    CART_UPDATED,
    CHECKOUT_COMPLETED,
    DLQ_TOPIC,
    OUTBOUND_TOPICS,
    PAYMENT_AUTHORIZED,
    PAYMENT_FAILED,
    PAYMENT_REQUIRES_ACTION,
)
from service.tools.connection import Connection
from service.tools.kafka_io import throwaway_consumer, tool_producer, topic_partitions


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    title: str
    payment_method: str
    expect_type: str
    expect_reason: str | None = None
    three_ds_result: str | None = None
    """Answer to a `payment.requires_action`, as the storefront would send it."""


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("visa", "card authorizes", "pm_card_visa", PAYMENT_AUTHORIZED),
    Scenario("declined", "card is declined", "pm_card_chargeDeclined", PAYMENT_FAILED, "declined"),
    Scenario(
        "3ds",
        "3-D Secure, then succeeded",
        "pm_card_authenticationRequired",
        PAYMENT_AUTHORIZED,
        three_ds_result="succeeded",
    ),
    Scenario("flaky", "two transient errors, then authorized", "pm_card_flaky", PAYMENT_AUTHORIZED),
    Scenario(
        "provider-error",
        "provider keeps failing: retries run out",
        "pm_card_providerError",
        PAYMENT_FAILED,
        "provider_unavailable",
    ),
    Scenario(
        "lost-response",
        "answer lost in transit: the status query finds it authorized",
        "pm_card_lostResponse",
        PAYMENT_AUTHORIZED,
    ),
)


@dataclass(frozen=True, slots=True)
class DemoEvent:
    """An event that came back for one of the demo's carts."""

    scenario: str
    topic: str
    event: dict[str, Any]

    @property
    def type(self) -> str:
        return str(self.event.get("type"))

    @property
    def data(self) -> dict[str, Any]:
        data = self.event.get("data")
        return data if isinstance(data, dict) else {}


@dataclass(slots=True)
class ScenarioRun:
    scenario: Scenario
    cart_id: str
    idempotency_key: str
    events: list[DemoEvent] = field(default_factory=list)
    answered_action: bool = False
    outcome: str = "waiting"
    """`passed`, `unexpected` (another final answer came) or `waiting` (timed out)."""

    @property
    def done(self) -> bool:
        return self.outcome != "waiting"

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario.name,
            "cart_id": self.cart_id,
            "expected": self.scenario.expect_type
            + (f" ({self.scenario.expect_reason})" if self.scenario.expect_reason else ""),
            "outcome": self.outcome,
            "events": [e.event for e in self.events],
        }


@dataclass(frozen=True, slots=True)
class DemoResult:
    runs: list[ScenarioRun]

    @property
    def passed(self) -> bool:
        return all(r.outcome == "passed" for r in self.runs)

    def summary(self) -> str:
        ok = sum(r.outcome == "passed" for r in self.runs)
        return f"{ok} of {len(self.runs)} scenarios answered as expected"


def _event(data: BaseModel) -> bytes:
    # Like any storefront: no `time` or `subject`, which the contract leaves optional on input.
    return event_value(
        event_payload(
            data, event_id=f"demo_{uuid.uuid4().hex}", source="/payments-cli/demo", time=None
        )
    )


def _checkout(run: ScenarioRun, amount: int, payment_data: dict[str, Any]) -> bytes:
    return _event(
        CheckoutCompleted(
            cart_id=run.cart_id,
            idempotency_key=run.idempotency_key,
            region_id="demo",
            currency_code="usd",
            amount=amount,
            provider_id="sandbox",
            payment_data=payment_data,
        )
    )


def _judge(run: ScenarioRun, received: DemoEvent) -> None:
    expected = run.scenario
    if received.type == expected.expect_type and (
        expected.expect_reason is None or received.data.get("reason") == expected.expect_reason
    ):
        run.outcome = "passed"
    elif received.type in (PAYMENT_AUTHORIZED, PAYMENT_FAILED) or received.topic.endswith(
        DLQ_TOPIC
    ):
        run.outcome = "unexpected"


async def run_demo(
    connection: Connection,
    *,
    scenarios: tuple[Scenario, ...] = SCENARIOS,
    amount: int = 5000,
    timeout_s: float = 60.0,
    on_event: Callable[[DemoEvent], None] | None = None,
) -> DemoResult:
    """Run every scenario at once; return when all are answered or `timeout_s` passed."""
    bootstrap = connection.require_kafka()
    run_id = uuid.uuid4().hex[:8]
    runs = {
        f"demo-{run_id}-{s.name}": ScenarioRun(
            s, f"demo-{run_id}-{s.name}", f"idem-{run_id}-{s.name}"
        )
        for s in scenarios
    }
    watched = [connection.topic(t) for t in (*OUTBOUND_TOPICS, DLQ_TOPIC)]
    async with throwaway_consumer(bootstrap) as consumer, tool_producer(bootstrap) as producer:
        tps = [
            TopicPartition(topic, p)
            for topic in watched
            for p in await topic_partitions(consumer, topic)
        ]
        # Only what arrives after this point can be ours: start at today's ends.
        ends = await consumer.end_offsets(tps)
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, ends[tp])
        await _send_carts(connection, producer, runs.values(), amount)
        deadline = time.monotonic() + timeout_s
        while not all(r.done for r in runs.values()) and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=300)
            for records in batches.values():
                for record in records:
                    key = record.key.decode("utf-8", "replace") if record.key else ""
                    run = runs.get(key)
                    if run is None or run.done or not record.value:
                        continue
                    received = DemoEvent(
                        run.scenario.name, record.topic, orjson.loads(record.value)
                    )
                    run.events.append(received)
                    if on_event is not None:
                        on_event(received)
                    await _react(connection, producer, run, received, amount)
                    _judge(run, received)
    return DemoResult(list(runs.values()))


async def _send_carts(
    connection: Connection,
    producer: AIOKafkaProducer,
    runs: Iterable[ScenarioRun],
    amount: int,
) -> None:
    for run in runs:
        cart = _event(
            CartUpdated(cart_id=run.cart_id, region_id="demo", currency_code="usd", amount=amount)
        )
        key = run.cart_id.encode()
        await producer.send_and_wait(connection.topic(CART_UPDATED), cart, key=key)
        checkout = _checkout(run, amount, {"payment_method": run.scenario.payment_method})
        await producer.send_and_wait(connection.topic(CHECKOUT_COMPLETED), checkout, key=key)


async def _react(
    connection: Connection,
    producer: AIOKafkaProducer,
    run: ScenarioRun,
    received: DemoEvent,
    amount: int,
) -> None:
    """Complete a 3-D Secure challenge: same idempotency key, with the result."""
    result = run.scenario.three_ds_result
    if received.type != PAYMENT_REQUIRES_ACTION or result is None or run.answered_action:
        return
    run.answered_action = True
    value = _checkout(
        run, amount, {"payment_method": run.scenario.payment_method, "action_result": result}
    )
    await producer.send_and_wait(
        connection.topic(CHECKOUT_COMPLETED), value, key=run.cart_id.encode()
    )
