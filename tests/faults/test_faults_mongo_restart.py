"""The MongoDB server goes away mid-stream and comes back on the same port.

The test runs its own file-backed MongoDB-protocol server (nx-27017 over SQLite
in a temporary directory) so it can stop it without disturbing other tests; the
broker is the session's. While the carts (150; 400 in `make soak`) check out,
capture and refund, the
server is stopped (SIGTERM) for a few seconds and started again on the same port
with the same files, and later killed (SIGKILL) and started again. The service
must wait the outage out (no dead letters: an outage is not the message's
fault), lose nothing that was acknowledged, and finish every cart exactly once.

The sandbox keeps its ledger in the same database, so the outage is also a
provider outage for the calls in flight when it starts: an authorization whose
outcome stays unknown is settled by the reconciler once the server is back and,
when the sandbox has no record of it, reported as a retryable
`provider_unavailable` failure (contract promise 7). The workload retries those
as a storefront would (same idempotency key); any other failure fails the test.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from service.embedded import EmbeddedMongo
from tests.support.faults import CheckoutWorkload, sized

pytestmark = pytest.mark.integration

CARTS = sized(150, 400)
CHUNK = sized(25, 50)
# A stop after a quarter of the carts, a SIGKILL after three quarters.
OUTAGES_AT = (CARTS // 4 // CHUNK * CHUNK or CHUNK, 3 * CARTS // 4 // CHUNK * CHUNK)
OUTAGE_S = 4.0


async def _restart(mongo: EmbeddedMongo, data: Path, *, kill: bool) -> EmbeddedMongo:
    """Stop (or SIGKILL) the server, wait, and start a new one on the same port and files."""
    port = mongo.port
    if kill and mongo.pid is not None:
        os.kill(mongo.pid, signal.SIGKILL)
    await asyncio.to_thread(mongo.stop)
    await asyncio.sleep(OUTAGE_S)
    restarted = EmbeddedMongo(data, port=port)
    await asyncio.to_thread(restarted.start)
    return restarted


@pytest.mark.timeout(300)
async def test_mongodb_stopped_and_killed_mid_stream(
    kafka_bootstrap: str, scene_factory: Any, show: Callable[[str], None], tmp_path: Path
) -> None:
    started = time.monotonic()
    data = tmp_path / "mongo"
    mongo = EmbeddedMongo(data)
    await asyncio.to_thread(mongo.start)
    outages: list[str] = []
    try:
        async with scene_factory(kafka_bootstrap, mongo.url) as scene:
            service = scene.service()
            await service.start()
            workload = CheckoutWorkload(
                kafka_bootstrap,
                scene.harness.prefix,
                scene.harness.received,
                carts=CARTS,
                seed=5,
                retry_failures=True,
            )
            await workload.start()

            async def outage(done: int) -> None:
                nonlocal mongo
                if done in OUTAGES_AT:
                    kill = done == OUTAGES_AT[1]
                    outages.append(
                        f"{'SIGKILL' if kill else 'stop'} at {time.monotonic() - started:.0f}s"
                    )
                    mongo = await _restart(mongo, data, kill=kill)

            try:
                await workload.publish_carts(chunk=CHUNK, pause_s=0.5, on_chunk=outage)
                await workload.run_until_done(timeout=90, database=scene.harness.database)
            except BaseException:
                show(scene.logs())
                raise
            finally:
                await workload.stop()
            assert service.running, "the service must ride out the outage, not exit"
            report = await scene.audit()
            show(
                f"[mongodb restart] {CARTS} carts, outages of {OUTAGE_S:g}s: "
                f"{', '.join(outages)}; {time.monotonic() - started:.0f}s; "
                f"workload {workload.progress()}; retried failures "
                f"{dict(workload.failure_kinds())}\n" + report.render("mongodb restart")
            )
            report.assert_clean()
            assert len(outages) == 2
            assert report.dead_letters == 0, report.dead_letter_kinds
            # Only "try again" from the provider sharing the database; never a store
            # outage reported as the payment's failure, nor a failure for good.
            failures = workload.failures_beyond_unavailable(operations=("authorize",))
            assert not failures, failures[:5]
            assert await workload.ledger_mismatches(scene.harness.database) == []
            assert report.carts == CARTS
    finally:
        await asyncio.to_thread(mongo.stop)
