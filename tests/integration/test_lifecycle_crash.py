"""A crash between the store write and the publish loses nothing (contract promise 3).

The service is stopped at that instruction by wrapping its store port
(`tests.support.crashing_store`): the save that stores the outcome runs `crash`
before it returns, so the batch never reaches its publish. Two variants:
* a real process kill: the service runs in a subprocess whose `crash` SIGKILLs
  it; a new in-process app then publishes the stored event with its stored id;
* in-process: `crash` never returns, and the app is then torn down without its
  final outbox flush (as if the process had died); the stuck batch is abandoned
  uncommitted after the shutdown grace period.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from schemas.topics import topic_for
from service.domain.model import OutboxEvent, PaymentCollection
from service.entrypoints.app import PaymentsApp
from service.settings import load_settings
from service.testing import builders
from service.testing.builders import new_cart_id as _cart
from service.testing.harness import ServiceHarness
from tests.support.crashing_store import crash_after_store

# `store`: also proven on FerretDB (`make test-store`): it exercises store semantics.
pytestmark = [pytest.mark.integration, pytest.mark.store]

REPO_ROOT = Path(__file__).resolve().parents[2]

CRASHING_SERVICE = """
import asyncio, json, os, signal, sys
from service.entrypoints.app import PaymentsApp
from service.settings import load_settings
from tests.support.crashing_store import crash_after_store

async def crash() -> None:
    # The outcome is stored, nothing is published yet: die without any cleanup.
    os.kill(os.getpid(), signal.SIGKILL)

async def main() -> None:
    app = PaymentsApp(load_settings(**json.loads(sys.argv[1])), serve_http=False)
    crash_after_store(app, crash)
    await app.start()
    print("started", flush=True)
    await asyncio.sleep(300)

asyncio.run(main())
"""


@pytest.fixture
async def harness(kafka_bootstrap: str, mongodb_url: str) -> AsyncIterator[ServiceHarness]:
    async with ServiceHarness(kafka_bootstrap, mongodb_url, start_service=False) as h:
        yield h


async def _wait_collection(
    harness: ServiceHarness, cart: str, timeout: float = 60.0
) -> PaymentCollection:
    deadline = time.monotonic() + timeout
    while True:
        collection = await harness.collection(cart)
        if collection is not None and collection.payment is not None:
            return collection
        assert time.monotonic() < deadline, f"no authorized collection for {cart}"
        await asyncio.sleep(0.05)


def _stored_authorized(collection: PaymentCollection) -> OutboxEvent:
    stored = [e for e in collection.outbox if e.type == "payment.authorized"]
    assert len(stored) == 1, collection.outbox
    return stored[0]


async def _assert_published_after_restart(
    harness: ServiceHarness,
    cart: str,
    stored: OutboxEvent,
    checkout_id: str,
    **app_overrides: Any,
) -> None:
    await harness.start_app(**app_overrides)
    received = await harness.await_event("payment.authorized", cart_id=cart, timeout=60)
    assert received.id == stored.id
    assert received.event == stored.payload
    assert received.event["causationid"] == checkout_id
    assert received.key == cart
    # The checkout is delivered again (its offset was never committed): a duplicate,
    # nothing new.
    deadline = time.monotonic() + 20
    topic = topic_for("checkout.completed", harness.prefix)
    while not harness.app.metrics.registry.get_sample_value(
        "payments_events_handled_total", {"topic": topic, "outcome": "duplicate"}
    ):
        assert time.monotonic() < deadline, "the checkout was not redelivered"
        await asyncio.sleep(0.05)
    await harness.settle(quiet_s=1.0)
    assert {r.id for r in harness.events(cart_id=cart)} == {stored.id}
    ledger = await harness.ledger(cart_id=cart)
    assert [(d["operation"], d["outcome"]) for d in ledger] == [("authorize", "authorized")]
    # The event is marked sent: gone from the document, kept in the archive.
    deadline = time.monotonic() + 10
    while True:
        collection = await harness.collection(cart)
        assert collection is not None
        stored_events = await harness.stored_events(cart)
        if not collection.outbox and [(e.id, e.sent) for e in stored_events] == [(stored.id, True)]:
            break
        assert time.monotonic() < deadline, f"outbox never marked sent: {stored_events}"
        await asyncio.sleep(0.1)


async def test_sigkill_between_store_and_publish(harness: ServiceHarness) -> None:
    overrides: dict[str, Any] = dict(harness.settings_overrides)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CRASHING_SERVICE,
        json.dumps(overrides),
        cwd=str(REPO_ROOT),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 30)
        assert line.strip() == b"started", line

        cart = _cart()
        checkout_id = await harness.publish(
            "checkout.completed", builders.checkout_completed(cart, 5000)
        )
        returncode = await asyncio.wait_for(process.wait(), 60)
        assert returncode == -signal.SIGKILL
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    collection = await _wait_collection(harness, cart, timeout=30)
    stored = _stored_authorized(collection)
    assert stored.sent is False
    assert stored.causation_id == checkout_id
    await harness.settle(quiet_s=1.0)
    assert harness.events("payment.authorized", cart_id=cart) == []

    # Same consumer group: the uncommitted checkout comes back. (Re-joining a group
    # on the embedded Tansu broker takes ~18 s, hence this test's duration.)
    await _assert_published_after_restart(harness, cart, stored, checkout_id)


async def test_in_process_crash_between_store_and_publish(harness: ServiceHarness) -> None:
    stored_once = asyncio.Event()
    attempts = 0

    async def hang_after_store() -> None:
        nonlocal attempts
        attempts += 1
        stored_once.set()
        await asyncio.Event().wait()  # until the app's stop abandons the batch

    # A long relay interval: the crashing app's relay must not publish behind our back.
    # A short grace: the stuck batch is abandoned (uncommitted) soon after the stop.
    settings = load_settings(
        **{**harness.settings_overrides, "relay_interval_s": 3600.0, "shutdown_grace_s": 1.0}
    )
    app = PaymentsApp(settings, serve_http=False)
    crash_after_store(app, hang_after_store)
    await app.start()
    harness.app = app
    cart = _cart()
    checkout_id = await harness.publish(
        "checkout.completed", builders.checkout_completed(cart, 5000)
    )
    await asyncio.wait_for(stored_once.wait(), 20)

    collection = await _wait_collection(harness, cart, timeout=30)
    stored = _stored_authorized(collection)
    assert stored.sent is False
    await harness.settle(quiet_s=1.0)
    assert harness.events("payment.authorized", cart_id=cart) == []
    assert attempts >= 1

    # Die: no final outbox flush (a killed process runs no shutdown code).
    async def no_flush(*args: object, **kwargs: object) -> int:
        return 0

    app.relay.run_once = no_flush  # type: ignore[method-assign]
    await harness.stop_app()
    await harness.settle(quiet_s=0.5)
    assert harness.events("payment.authorized", cart_id=cart) == []
    still = await harness.collection(cart)
    assert still is not None and not _stored_authorized(still).sent

    # A fresh consumer group keeps this variant fast (re-joining the same group on
    # Tansu takes ~18 s); the SIGKILL variant covers the same-group redelivery.
    await _assert_published_after_restart(
        harness,
        cart,
        stored,
        checkout_id,
        consumer_group=harness.settings_overrides["consumer_group"] + "-restart",
    )
