"""`/healthz` and `/readyz`: alive, ready, and which check failed when not."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from service.embedded import free_port
from service.entrypoints.app import PaymentsApp
from service.settings import load_settings
from service.testing.harness import ServiceHarness

# One started service for the module (tests/conftest.py `harness`): each test
# uses its own keys and carts.
pytestmark = [pytest.mark.integration, pytest.mark.harness()]

CHECKS = {"mongodb", "broker", "consumers", "relay", "accepting", "progressing"}


async def _get(port: int, path: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=15) as client:
        return await client.get(f"http://127.0.0.1:{port}{path}")


async def test_alive_and_ready(harness: ServiceHarness) -> None:
    port = harness.app.http_port
    alive = await _get(port, "/healthz")
    assert alive.status_code == 200
    assert alive.json() == {"status": "alive"}

    # The consumer group join takes a moment after start-up: poll, generously.
    deadline = time.monotonic() + 60
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        response = await _get(port, "/readyz")
        body = response.json()
        if response.status_code == 200:
            break
        assert response.status_code == 503
        await asyncio.sleep(0.25)
    assert body == {"status": "ready", "checks": dict.fromkeys(CHECKS, True), "failed": []}


async def test_not_ready_names_the_failed_checks(
    kafka_bootstrap: str, harness: ServiceHarness
) -> None:
    dead_mongo = (
        f"mongodb://127.0.0.1:{free_port()}/?serverSelectionTimeoutMS=300&connectTimeoutMS=300"
    )
    settings = load_settings(**{**harness.settings_overrides, "mongodb_url": dead_mongo})
    app = PaymentsApp(settings)
    # Broker and HTTP up, MongoDB unreachable: start() itself would fail at its
    # first MongoDB call, as it should, so the parts are started by hand.
    await app.broker.start()
    await app._start_http()
    try:
        assert app.http_port
        response = await _get(app.http_port, "/readyz")
        assert response.status_code == 503
        body = response.json()
        assert body["status"] == "not_ready"
        assert set(body["checks"]) == CHECKS
        assert body["checks"]["broker"] is True
        assert body["checks"]["mongodb"] is False
        assert body["failed"] == ["consumers", "mongodb", "relay"]
        assert (await _get(app.http_port, "/healthz")).status_code == 200
    finally:
        await app.stop()
