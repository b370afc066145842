"""The broker is unreachable when the service starts, and again for a while mid-stream.

The test runs its own Tansu broker behind a :class:`TcpProxy` and makes the broker
advertise the proxy's address, so every client of the service (producer,
consumer, admin) reaches it only through the proxy: cutting the proxy really
takes the broker away from the service. Connections of the test process itself
(the storefront's producer, the observer) are exempt, so the world keeps
producing during the outage, as it would.

1. The proxy is cut before the service starts: the service must wait for the
   broker (no exit, no crash loop; `/healthz` alive, `/readyz` not ready), then
   start once it is reachable. A second instance is sent SIGTERM while it waits:
   it must stop cleanly (exit code 0) instead of waiting on.
2. The carts (100; 300 in `make soak`) stream in; after a third of them the
   proxy is cut for 8 s (every open connection reset, new ones refused) and
   restored.
Every cart must then finish exactly once, every stored event be published.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from tests.support.faults import (
    CheckoutWorkload,
    TcpProxy,
    eventually,
    proxied_test_kafka,
    sized,
)

pytestmark = pytest.mark.integration

CARTS = sized(100, 300)
CHUNK = sized(25, 50)
OUTAGE_AT = CARTS // 3 // CHUNK * CHUNK or CHUNK
STARTUP_OUTAGE_S = 6.0
OUTAGE_S = 8.0


@pytest.fixture
async def proxied_broker() -> AsyncIterator[TcpProxy]:
    """A broker (Tansu, or Apache Kafka under kafka-jvm) reachable only through the proxy."""
    proxy = TcpProxy(exempt_own_process=True)
    proxy.start()
    kafka = proxied_test_kafka(advertised_port=proxy.port)
    try:
        await asyncio.to_thread(kafka.start)
        proxy.target_port = kafka.port
        yield proxy
    finally:
        proxy.close()
        await asyncio.to_thread(kafka.stop)


@pytest.mark.timeout(300)
async def test_broker_unreachable_at_startup_and_mid_stream(
    proxied_broker: TcpProxy,
    mongodb_url: str,
    scene_factory: Any,
    show: Callable[[str], None],
) -> None:
    proxy = proxied_broker
    started = time.monotonic()
    async with scene_factory(proxy.address, mongodb_url) as scene:
        service = scene.service()
        workload = CheckoutWorkload(
            proxy.address, scene.harness.prefix, scene.harness.received, carts=CARTS, seed=6
        )
        await workload.start()
        try:
            # 1. No broker at start-up.
            proxy.cut()
            service.spawn()
            impatient = scene.service("stopped-while-waiting")
            impatient.spawn()
            outage_started = time.monotonic()

            async def alive() -> bool:
                assert service.running, "the service gave up while the broker was unreachable"
                return await service.http_status("/healthz") == 200

            # Alive (however long a loaded machine takes to start it), and honest
            # about not being ready; still so when the outage has lasted its time.
            await eventually(alive, "the waiting service answers /healthz", timeout=60)
            assert await service.http_status("/readyz") == 503
            await asyncio.sleep(max(0.0, STARTUP_OUTAGE_S - (time.monotonic() - outage_started)))
            assert await alive(), "the service stopped answering while it waited"
            assert await service.http_status("/readyz") == 503

            # The second instance too is up and waiting (its signal handlers are in
            # place: a SIGTERM during interpreter start-up would just kill it).
            async def impatient_alive() -> bool:
                return await impatient.http_status("/healthz") == 200

            await eventually(impatient_alive, "the second waiting instance answers", timeout=60)
            # SIGTERM while waiting for the broker still stops the process, cleanly:
            # by itself (exit code 0), not killed after the 30 s grace.
            assert await impatient.stop(timeout=30) == 0, impatient.log_tail()
            refused_at_start = proxy.refused
            proxy.restore()
            await service.wait_ready(timeout=60)
            ready_after = time.monotonic() - started

            # 2. The broker goes away mid-stream.
            async def outage(done: int) -> None:
                if done == OUTAGE_AT:
                    proxy.cut()
                    await asyncio.sleep(OUTAGE_S)
                    proxy.restore()

            await workload.publish_carts(chunk=CHUNK, pause_s=0.3, on_chunk=outage)
            await workload.run_until_done(timeout=90, database=scene.harness.database)
        except BaseException:
            show(scene.logs())
            raise
        finally:
            await workload.stop()
        assert service.running
        report = await scene.audit()
        show(
            f"[broker outage] {CARTS} carts; start-up outage {STARTUP_OUTAGE_S:g}s "
            f"({refused_at_start} connections refused), ready at {ready_after:.0f}s; "
            f"mid-stream outage {OUTAGE_S:g}s ({proxy.aborted} connections cut); "
            f"{time.monotonic() - started:.0f}s; workload {workload.progress()}\n"
            + report.render("broker outage")
        )
        report.assert_clean()
        assert refused_at_start > 0 and proxy.aborted > 0, "the outages did not happen"
        assert report.dead_letters == 0, report.dead_letter_kinds
        failures = workload.failures()
        assert not failures, failures[:5]
        assert await workload.ledger_mismatches(scene.harness.database) == []
        assert report.carts == CARTS
