"""Processing retries in the consumer: the one retry policy, the same rules as before.

An unexpected exception from a handler is tried again, `max_attempts` times in
all, then the record is dead-lettered `processing_failed`; MongoDB unavailable is
not the message's fault and is waited out however long it lasts. The waits are the
processor's `Backoff`, slept by the retry loop.

Found while moving the loop onto the policy (issue 14): the hand-written loop let
a store outage use up the message's attempts (it capped a shared counter at
`max_attempts - 1`), so a message that met two outages and then failed once was
dead-lettered at its first failure of its own. `a_store_outage_does_not_use_up...`
names it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from schemas.topics import PAYMENTS_DEAD_LETTER, topic_for
from service.admin_auth import AdminAuthenticator
from service.consumer import BatchProcessor, Record, letter_budget
from service.domain.backoff import Backoff
from service.domain.commands import UpdateCart
from service.handlers import HandleResult, PaymentService
from service.ports.store import StoreUnavailable
from tests.support.memory import RecordingPublisher
from tests.support.world import World

PREFIX = "pr."
BACKOFF = Backoff(initial_s=0.01, max_s=0.04, jitter_s=0.01)
TOPIC = topic_for("cart.updated", PREFIX)


def _cart_updated(cart_id: str, amount: int) -> Record:
    event = {
        "specversion": "1.0",
        "id": f"evt_{cart_id}",
        "source": "/processing-retries",
        "type": "cart.updated",
        "data": {"cart_id": cart_id, "region_id": "eu", "currency_code": "usd", "amount": amount},
    }
    return Record(TOPIC, 0, 0, cart_id.encode(), orjson.dumps(event), ())


class Scene:
    def __init__(self, monkeypatch: pytest.MonkeyPatch, failures: list[BaseException]) -> None:
        """`cart.updated` handlers raise `failures` in turn, then handle the event."""
        self.world = World("fake")
        self.publisher = RecordingPublisher()
        self.processor = BatchProcessor(
            self.world.service,
            self.world.store,
            self.publisher,
            AdminAuthenticator({}),
            self.world.metrics,
            topic_prefix=PREFIX,
            max_concurrency=8,
            max_attempts=3,
            max_letter_bytes=letter_budget(1024 * 1024),
            retry_backoff=BACKOFF,
            clock=self.world.clock,
        )
        self.tries = 0
        self.waits: list[float] = []
        handle: Callable[..., Any] = PaymentService.cart_updated
        scene = self

        async def failing(service: PaymentService, cmd: UpdateCart) -> Any:
            scene.tries += 1
            if failures:
                raise failures.pop(0)
            result: HandleResult = await handle(service, cmd)
            return result

        async def sleep(seconds: float) -> None:
            self.waits.append(seconds)

        monkeypatch.setattr(PaymentService, "cart_updated", failing)
        monkeypatch.setattr(asyncio, "sleep", sleep)

    def retries_counted(self) -> float | None:
        return self.world.metrics.registry.get_sample_value(
            "payments_processing_retries_total", {"topic": TOPIC}
        )

    def dead_letters(self) -> list[Any]:
        return self.publisher.of_type(PAYMENTS_DEAD_LETTER)


async def test_an_unexpected_error_is_tried_again_and_the_event_applied(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    scene = Scene(monkeypatch, [RuntimeError("a bug that passes"), RuntimeError("again")])

    await scene.processor.process([_cart_updated("cart_1", 2500)])

    assert scene.tries == 3
    assert scene.dead_letters() == []
    assert (await scene.world.collection("cart_1")).amount == 2500
    assert scene.retries_counted() == 2
    assert len(scene.waits) == 2
    for retry, wait in enumerate(scene.waits, start=1):
        assert BACKOFF.delay_s(retry) <= wait <= BACKOFF.longest_s(retry)


async def test_an_error_that_persists_is_dead_lettered_after_max_attempts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    scene = Scene(monkeypatch, [RuntimeError(f"broken {n}") for n in range(1, 10)])

    await scene.processor.process([_cart_updated("cart_2", 2500)])

    assert scene.tries == 3
    [letter] = scene.dead_letters()
    error = letter.payload["data"]["error"]
    assert error["kind"] == "processing_failed"
    assert error["detail"] == "RuntimeError: broken 3"
    assert scene.retries_counted() == 2  # the third failure is dead-lettered, not retried


async def test_a_store_outage_is_waited_out_however_long_it_lasts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    scene = Scene(monkeypatch, [StoreUnavailable("MongoDB is down") for _ in range(12)])

    await scene.processor.process([_cart_updated("cart_3", 2500)])

    assert scene.tries == 13
    assert scene.dead_letters() == []
    assert (await scene.world.collection("cart_3")).amount == 2500
    assert scene.retries_counted() == 12
    assert max(scene.waits) <= BACKOFF.max_s
    assert scene.waits[-1] == BACKOFF.max_s  # grown to the cap, not beyond


async def test_a_store_outage_does_not_use_up_the_messages_attempts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    scene = Scene(
        monkeypatch,
        [
            StoreUnavailable("MongoDB is down"),
            StoreUnavailable("still down"),
            RuntimeError("a bug that passes"),
            RuntimeError("again"),
        ],
    )

    await scene.processor.process([_cart_updated("cart_4", 2500)])

    assert scene.tries == 5
    assert scene.dead_letters() == [], "an outage counted as the message's own failure"
    assert (await scene.world.collection("cart_4")).amount == 2500
