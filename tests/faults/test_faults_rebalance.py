"""Two service processes in one consumer group, with rebalances mid-stream.

The carts (120; 600 in `make soak`) stream in to one instance; a second instance
of the same consumer group starts while they are processed (partitions move to it in a rebalance,
possibly while the first still works on a batch of them), and later the first
instance is SIGKILLed (its partitions move to the second once its session times
out). Both instances share the database, so the same cart can be handled by two
processes at once around a rebalance: the version-checked writes, idempotency
keys and inboxes must still give every cart exactly one charge and every stored
event one id.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.support.faults import CheckoutWorkload, sized

pytestmark = pytest.mark.integration

CARTS = sized(120, 600)
CHUNK = sized(20, 50)
# After a quarter of the carts the second instance starts; after three quarters the
# first is killed (multiples of CHUNK: the workload reports progress per chunk).
SECOND_AT = CARTS // 4 // CHUNK * CHUNK or CHUNK
KILL_AT = 3 * CARTS // 4 // CHUNK * CHUNK


@pytest.mark.timeout(300)
async def test_second_instance_joins_then_first_is_killed(
    kafka_bootstrap: str, mongodb_url: str, scene_factory: Any, show: Callable[[str], None]
) -> None:
    started = time.monotonic()
    async with scene_factory(kafka_bootstrap, mongodb_url) as scene:
        first = scene.service("first")
        second = scene.service("second")
        await first.start()
        workload = CheckoutWorkload(
            kafka_bootstrap, scene.harness.prefix, scene.harness.received, carts=CARTS, seed=8
        )
        await workload.start()
        steps: list[str] = []

        async def rebalance(done: int) -> None:
            if done == SECOND_AT:
                second.spawn()
                steps.append(f"second started at {time.monotonic() - started:.0f}s")
            elif done == KILL_AT:
                await second.wait_ready(timeout=60)
                first.kill()
                steps.append(f"first SIGKILLed at {time.monotonic() - started:.0f}s")

        try:
            await workload.publish_carts(chunk=CHUNK, pause_s=0.4, on_chunk=rebalance)
            await workload.run_until_done(timeout=90, database=scene.harness.database)
        except BaseException:
            show(scene.logs())
            raise
        finally:
            await workload.stop()
        assert second.running and not first.running
        report = await scene.audit()
        show(
            f"[rebalance] {CARTS} carts; {'; '.join(steps)}; "
            f"{time.monotonic() - started:.0f}s; workload {workload.progress()}\n"
            + report.render("rebalance")
        )
        report.assert_clean()
        assert len(steps) == 2
        assert report.dead_letters == 0, report.dead_letter_kinds
        failures = workload.failures()
        assert not failures, failures[:5]
        assert await workload.ledger_mismatches(scene.harness.database) == []
        assert report.carts == CARTS
        assert report.charges == CARTS
        # Both instances held partitions at some point (the log of each says so).
        for process in (first, second):
            log_text = process.log_path.read_text()
            assert re.search(r"assigned [1-9]\d* partition\(s\)", log_text), process.name
