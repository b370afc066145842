"""The harness's other ways to run: `payments run` as a child process, and `embedded()`."""

from __future__ import annotations

import os
import uuid

import httpx
import psutil
import pytest

from service.testing import builders
from service.testing.harness import ServiceHarness, embedded
from service.testing.service_process import ServiceProcessError, settings_environment

pytestmark = pytest.mark.integration


def test_settings_become_payments_environment_variables() -> None:
    env = settings_environment(
        {
            "kafka_bootstrap_servers": "k:9092",
            "providers": ["manual", "sandbox"],
            "admin_keys": {"ops": "s"},
            "admin_signature_required": False,
            "http_port": 8081,
            "mongodb_url": None,
        }
    )
    assert env == {
        "PAYMENTS_KAFKA_BOOTSTRAP_SERVERS": "k:9092",
        "PAYMENTS_PROVIDERS": "manual,sandbox",
        "PAYMENTS_ADMIN_KEYS": '{"ops": "s"}',
        "PAYMENTS_ADMIN_SIGNATURE_REQUIRED": "false",
        "PAYMENTS_HTTP_PORT": "8081",
    }


async def test_subprocess_mode_runs_payments_run(kafka_bootstrap: str, mongodb_url: str) -> None:
    harness = ServiceHarness(
        kafka_bootstrap,
        mongodb_url,
        mode="subprocess",
        provider_options={"sandbox": {"capture": True}},
    )
    async with harness as h:
        assert h.app is None and h.process is not None
        child = psutil.Process(h.process.pid)
        assert "run" in child.cmdline() and child.ppid() == os.getpid()
        async with httpx.AsyncClient(base_url=h.base_url or "", timeout=10) as client:
            ready = await client.get("/readyz")
            assert ready.status_code == 200 and ready.json()["status"] == "ready"

            cart = f"cart_{uuid.uuid4().hex[:12]}"
            await h.publish("checkout.completed", builders.checkout_completed(cart, 700))
            await h.await_event("payment.authorized", cart_id=cart, timeout=60)
            # The option given to the harness reached the child: capture on authorization.
            await h.await_event("payment.captured", cart_id=cart, timeout=60)
            metrics = await client.get("/metrics")
            assert metrics.status_code == 200 and "payments" in metrics.text
        # SIGTERM is a graceful stop: exit code 0.
        assert await h.process.stop() == 0
    assert h.process is None
    assert not child.is_running()


async def test_subprocess_start_failure_shows_the_log(
    kafka_bootstrap: str, mongodb_url: str
) -> None:
    harness = ServiceHarness(
        kafka_bootstrap,
        mongodb_url,
        mode="subprocess",
        start_service=False,
        providers=["no-such-provider"],
    )
    async with harness as h:
        with pytest.raises(ServiceProcessError, match="no-such-provider"):
            await h.start_app()


async def test_embedded_starts_what_is_missing_and_stops_it() -> None:
    before = {p.pid for p in psutil.Process().children()}
    async with embedded() as h:
        servers = [p for p in psutil.Process().children() if p.pid not in before]
        assert len(servers) == 2, servers  # Tansu and nx-27017
        cart = f"cart_{uuid.uuid4().hex[:12]}"
        await h.publish("checkout.completed", builders.checkout_completed(cart, 300))
        await h.await_event("payment.authorized", cart_id=cart, timeout=60)
        used = {h.kafka_bootstrap, h.mongodb_url}
    assert len(used) == 2
    _, alive = psutil.wait_procs(servers, timeout=15)
    assert alive == []


async def test_embedded_with_addresses_starts_nothing(
    kafka_bootstrap: str, mongodb_url: str
) -> None:
    before = {p.pid for p in psutil.Process().children()}
    async with embedded(kafka_bootstrap, mongodb_url) as h:
        assert (h.kafka_bootstrap, h.mongodb_url) == (kafka_bootstrap, mongodb_url)
        assert {p.pid for p in psutil.Process().children()} == before
        cart = f"cart_{uuid.uuid4().hex[:12]}"
        await h.publish("checkout.completed", builders.checkout_completed(cart, 300))
        await h.await_event("payment.authorized", cart_id=cart, timeout=60)
