"""`PaymentsApp.start` waits out a broker or MongoDB that is not reachable yet.

The wait is the one retry policy's outage backoff (0.5 s doubling to 5 s, no
limit on attempts); each wait is logged with the attempt, the cause and how long;
anything else than "not reachable" stops the start at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest
from aiokafka.errors import KafkaConnectionError

from service.entrypoints.app import PaymentsApp
from service.ports.store import StoreUnavailable
from service.retry import OUTAGE_BACKOFF
from service.settings import Settings


@pytest.fixture
async def app(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[PaymentsApp]:
    settings = Settings(kafka_bootstrap_servers="127.0.0.1:9", mongodb_url="mongodb://127.0.0.1:9")
    app = PaymentsApp(settings, serve_http=False)
    monkeypatch.setattr(app, "_start_background_tasks", lambda: None)
    yield app
    await app.mongo.close()


def _script(
    app: PaymentsApp, monkeypatch: pytest.MonkeyPatch, errors: list[Exception]
) -> list[int]:
    tries: list[int] = []

    async def connect() -> None:
        tries.append(len(tries) + 1)
        if errors:
            raise errors.pop(0)

    monkeypatch.setattr(app, "_connect", connect)
    return tries


def _record_sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    monkeypatch.setattr(asyncio, "sleep", sleep)
    return waits


async def test_start_waits_until_the_broker_and_mongodb_answer(
    app: PaymentsApp, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    outage: list[Exception] = [
        KafkaConnectionError("no broker"),
        StoreUnavailable("no MongoDB"),
        OSError("connection refused"),
        OSError("connection refused"),
        OSError("connection refused"),
    ]
    tries = _script(app, monkeypatch, outage)
    waits = _record_sleeps(monkeypatch)

    with caplog.at_level(logging.WARNING, logger="service.entrypoints.app"):
        await app.start()

    assert app.started
    assert len(tries) == 6
    assert waits == [0.5, 1.0, 2.0, 4.0, 5.0]
    assert waits == [OUTAGE_BACKOFF.delay_s(n) for n in range(1, 6)]
    lines = [r.getMessage() for r in caplog.records if "unreachable at start-up" in r.getMessage()]
    assert len(lines) == 5
    assert "(attempt 1: KafkaConnectionError: " in lines[0]
    assert lines[0].endswith("no broker); retrying in 0.5s")
    assert lines[-1].endswith("(attempt 5: OSError: connection refused); retrying in 5.0s")


async def test_a_start_up_error_that_is_not_an_outage_stops_the_start(
    app: PaymentsApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    tries = _script(app, monkeypatch, [ValueError("a bad index definition")])
    waits = _record_sleeps(monkeypatch)

    with pytest.raises(ValueError, match="bad index"):
        await app.start()

    assert not app.started
    assert tries == [1]
    assert waits == []


async def test_the_outage_waits_come_from_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(
        kafka_bootstrap_servers="127.0.0.1:9",
        mongodb_url="mongodb://127.0.0.1:9",
        outage_retry_initial_s=0.1,
        outage_retry_max_delay_s=0.3,
    )
    app = PaymentsApp(settings, serve_http=False)
    monkeypatch.setattr(app, "_start_background_tasks", lambda: None)
    try:
        _script(app, monkeypatch, [OSError("connection refused")] * 4)
        waits = _record_sleeps(monkeypatch)
        await app.start()
        assert waits == pytest.approx([0.1, 0.2, 0.3, 0.3])
    finally:
        await app.mongo.close()
