"""SIGKILL the service at random points while carts check out, capture and refund.

`payments run` runs as a child process on the session broker and MongoDB server
(its own topic prefix and database). While 1,000 carts go through checkout →
two concurrent partial captures → one or two partial refunds (a tenth are
canceled instead), the process is killed with SIGKILL every few seconds and
started again: kills land between a provider call and the write, between the
write and the publish, between the publish and the commit. Afterwards every cart
must be finished exactly once: one charge, the confirmed amounts in the
provider's ledger, every stored event published with its one id (the audit).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from typing import Any

import pytest

from service.testing.service_process import ServiceProcess
from tests.support.faults import CheckoutWorkload

pytestmark = pytest.mark.integration

CARTS = 1_000
KILLS = 5


async def _kill_repeatedly(
    service: ServiceProcess, kills: int, rng: random.Random, log: list[str]
) -> None:
    """Kill and restart `kills` times, a random 1–3 s after each (re)start is ready."""
    for n in range(1, kills + 1):
        await asyncio.sleep(rng.uniform(1.0, 3.0))
        service.kill()
        log.append(f"kill #{n} at {time.strftime('%X')}")
        # Sometimes straight back up, sometimes after a pause (a slow reschedule).
        await asyncio.sleep(rng.choice((0.0, 0.5, 1.5)))
        await service.start(timeout=60)


@pytest.mark.timeout(180)
async def test_sigkill_during_checkout_capture_refund_stream(
    kafka_bootstrap: str, mongodb_url: str, scene_factory: Any, show: Callable[[str], None]
) -> None:
    rng = random.Random(20240501)
    started = time.monotonic()
    async with scene_factory(kafka_bootstrap, mongodb_url) as scene:
        service = scene.service()
        await service.start()
        workload = CheckoutWorkload(
            kafka_bootstrap, scene.harness.prefix, scene.harness.received, carts=CARTS, seed=1
        )
        await workload.start()
        kills: list[str] = []
        killer = asyncio.create_task(_kill_repeatedly(service, KILLS, rng, kills))
        try:
            # A stream over ~10 s rather than one burst, so kills hit mid-processing.
            await workload.publish_carts(chunk=50, pause_s=0.4)
            published = time.monotonic() - started
            await killer
            killed = time.monotonic() - started
            await workload.run_until_done(timeout=120, database=scene.harness.database)
            done = time.monotonic() - started
        except BaseException:
            killer.cancel()
            show(scene.logs())
            raise
        finally:
            await workload.stop()
        if not service.running:
            await service.start()
        report = await scene.audit()
        show(
            f"[service kill] {CARTS} carts, {service.kills} SIGKILLs ({'; '.join(kills)}), "
            f"published at {published:.0f}s, kills over at {killed:.0f}s, done at {done:.0f}s, "
            f"audited at {time.monotonic() - started:.0f}s; workload {workload.progress()}\n"
            + report.render("service kill")
        )
        report.assert_clean()
        assert service.kills == KILLS
        assert not workload.unexpected, workload.unexpected
        failures = workload.failures()
        assert not failures, failures[:10]
        mismatches = await workload.ledger_mismatches(scene.harness.database)
        assert not mismatches, mismatches[:10]
        assert report.carts == CARTS
        assert report.charges == CARTS
