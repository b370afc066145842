"""SIGKILL the service at random points while carts check out, capture and refund.

`payments run` runs as a child process on the session broker and MongoDB server
(its own topic prefix and database). While the carts (150; 1,000 in `make soak`)
go through checkout → two concurrent partial captures → one or two partial
refunds (a tenth are canceled instead), the process is killed with SIGKILL (2
times; 5 in `make soak`) and started again. Each kill waits for progress, not
for time: kill n comes once n/(kills+1) of the carts are authorized, so it
always lands mid-stream, with carts in flight: between a provider call and the
write, between the write and the publish, between the publish and the commit.
Afterwards every cart must be finished exactly once: one charge, the confirmed
amounts in the provider's ledger, every stored event published with its one id
(the audit).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from typing import Any

import pytest

from service.testing.service_process import ServiceProcess
from tests.support.faults import CheckoutWorkload, eventually, sized

pytestmark = pytest.mark.integration

CARTS = sized(150, 1_000)
KILLS = sized(2, 5)


async def _kill_repeatedly(
    service: ServiceProcess,
    workload: CheckoutWorkload,
    kills: int,
    rng: random.Random,
    log: list[str],
    in_flight_at_kill: list[int],
) -> None:
    """Kill and restart `kills` times, each once a further share of the carts is
    authorized (so with carts in flight), a random fraction of a second later."""
    for n in range(1, kills + 1):
        threshold = n * CARTS // (kills + 1)

        async def progressed(threshold: int = threshold) -> bool:
            return workload.progress()["authorized"] >= threshold

        await eventually(progressed, f"{threshold} carts authorized before kill #{n}", 120)
        await asyncio.sleep(rng.uniform(0.0, 0.5))
        in_flight = len(workload.outstanding())
        service.kill()
        log.append(f"kill #{n} at {time.strftime('%X')} ({in_flight} carts in flight)")
        in_flight_at_kill.append(in_flight)
        # Sometimes straight back up, sometimes after a pause (a slow reschedule).
        await asyncio.sleep(rng.choice((0.0, 0.5, 1.5)))
        await service.start(timeout=60)


@pytest.mark.timeout(300)
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
        in_flight: list[int] = []
        killer = asyncio.create_task(
            _kill_repeatedly(service, workload, KILLS, rng, kills, in_flight)
        )
        try:
            # A stream rather than one burst, so kills hit mid-processing.
            await workload.publish_carts(chunk=sized(25, 50), pause_s=0.4)
            published = time.monotonic() - started
            # The kills wait for progress, which needs the workload to react meanwhile.
            await workload.run_until_done(timeout=180, database=scene.harness.database)
            done = time.monotonic() - started
            await killer
            killed = time.monotonic() - started
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
            f"published at {published:.0f}s, done at {done:.0f}s, kills over at {killed:.0f}s, "
            f"audited at {time.monotonic() - started:.0f}s; workload {workload.progress()}\n"
            + report.render("service kill")
        )
        report.assert_clean()
        assert service.kills == KILLS
        # The first kill came while carts were unfinished: it hit work, not an idle service.
        assert in_flight[0] > 0, kills
        assert not workload.unexpected, workload.unexpected
        failures = workload.failures()
        assert not failures, failures[:10]
        mismatches = await workload.ledger_mismatches(scene.harness.database)
        assert not mismatches, mismatches[:10]
        assert report.carts == CARTS
        assert report.charges == CARTS
