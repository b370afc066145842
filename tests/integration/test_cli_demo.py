"""`payments demo`: every sandbox outcome against a running service."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cli_testkit import invoke, json_of, kafka_args, ok

from service.testing.harness import ServiceHarness
from service.testing.service_process import ServiceProcess
from service.tools.demo import SCENARIOS

pytestmark = pytest.mark.integration


@pytest.fixture
async def harness(kafka_bootstrap: str, mongodb_url: str) -> AsyncIterator[ServiceHarness]:
    async with ServiceHarness(kafka_bootstrap, mongodb_url) as h:
        yield h


async def test_demo_shows_every_outcome(harness: ServiceHarness) -> None:
    h = harness
    report = json_of(await invoke("demo", "--timeout", "90", "--json", *kafka_args(h)))
    assert report["passed"] is True, report
    by_name = {s["scenario"]: s for s in report["scenarios"]}
    assert set(by_name) == {s.name for s in SCENARIOS}
    types = {name: [e["type"] for e in s["events"]] for name, s in by_name.items()}
    assert types["visa"] == ["payment.authorized"]
    assert types["flaky"] == ["payment.authorized"]
    assert types["lost-response"] == ["payment.authorized"]
    assert types["3ds"] == ["payment.requires_action", "payment.authorized"]
    assert types["declined"] == ["payment.failed"]
    assert by_name["declined"]["events"][0]["data"]["reason"] == "declined"
    assert by_name["provider-error"]["events"][-1]["data"]["reason"] == "provider_unavailable"

    # What the demo printed is what the service stored: one payment per authorized cart.
    for name in ("visa", "3ds", "flaky", "lost-response"):
        collection = await h.collection(by_name[name]["cart_id"])
        assert collection is not None and collection.payment is not None, name
    declined = await h.collection(by_name["declined"]["cart_id"])
    assert declined is not None and declined.payment is None

    human = ok(await invoke("demo", "--timeout", "90", *kafka_args(h))).stdout
    assert "6 of 6 scenarios answered as expected" in human
    assert "payment.requires_action" in human and "provider_unavailable" in human


async def test_demo_finds_the_embedded_servers_of_payments_run(tmp_path: Path) -> None:
    """The README's first steps: `make run` in one terminal, `payments demo` in another,
    with no PAYMENTS_* servers configured anywhere."""
    data_dir = tmp_path / "data"
    service = ServiceProcess({"embedded_data_dir": str(data_dir)}, run_args=())
    await service.start()
    try:
        endpoints = data_dir / "endpoints.json"
        assert endpoints.exists()
        env = {k: v for k, v in os.environ.items() if not k.startswith("PAYMENTS_")}
        env["PAYMENTS_EMBEDDED_DATA_DIR"] = str(data_dir)
        script = os.path.join(os.path.dirname(sys.executable), "payments")
        result = await asyncio.to_thread(
            subprocess.run,
            [script, "demo", "--timeout", "120", "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr + service.log_tail()
        assert json.loads(result.stdout)["passed"] is True
    finally:
        code = await service.stop()
        service.cleanup()
    assert code == 0
    assert not endpoints.exists(), "a stopped service left its addresses behind"
