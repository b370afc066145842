"""Fixtures of the fault suite: a fault scene per test and a way to print figures.

A scene is the test's own topic prefix and database on the given broker and
MongoDB server, a harness that produces and observes (but runs no service in
process), a `ServiceProcess` per service instance, and the audit at the end.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from service.testing.harness import ServiceHarness
from service.testing.service_process import ServiceProcess
from tests.support.audit import AuditReport, audit

FAULT_SETTINGS: dict[str, Any] = {
    "providers": "sandbox",
    "region_providers": {"eu": ["sandbox"]},
    "relay_interval_s": 1.0,
    "relay_min_age_s": 2.0,
    "reconcile_interval_s": 0.5,
    "reconcile_min_age_s": 1.0,
    "retry_base_delay_s": 0.02,
    "retry_max_delay_s": 0.5,
    "topic_partitions": 8,
    # A SIGKILLed instance stays in the consumer group until its session times
    # out, and its partitions stall until then: keep that short in the tests.
    "kafka_session_timeout_ms": 3000,
    "kafka_heartbeat_interval_ms": 500,
    "log_level": "INFO",
}
"""Service settings of every fault test: only the sandbox (its ledger is the proof),
fast background loops so a test need not wait long for the relay and reconciler."""


class Scene:
    """One fault test's world: harness (producer + observer), service env, logs."""

    def __init__(self, harness: ServiceHarness, log_dir: Path) -> None:
        self.harness = harness
        self.log_dir = log_dir
        self.processes: list[ServiceProcess] = []

    def service(self, name: str = "service", **settings: Any) -> ServiceProcess:
        """A service process on this scene (not started); `settings` override."""
        process = ServiceProcess(
            {**self.harness.settings_overrides, **settings},
            log_path=self.log_dir / f"{name}.log",
            name=name,
        )
        self.processes.append(process)
        return process

    def logs(self) -> str:
        return "\n".join(p.log_tail(3000) for p in self.processes)

    async def audit(self, wait_s: float = 90.0, **kwargs: Any) -> AuditReport:
        return await audit(
            self.harness.database, lambda: self.harness.received, wait_s=wait_s, **kwargs
        )


@pytest.fixture
def show(capsys: pytest.CaptureFixture[str]) -> Callable[[str], None]:
    """Print past pytest's capture, with or without ``-s`` (figures belong in the log)."""

    def _show(text: str) -> None:
        with capsys.disabled():
            sys.stdout.write(f"\n{text}\n")
            sys.stdout.flush()

    return _show


@pytest.fixture
def scene_factory(
    tmp_path: Path,
) -> Callable[..., Any]:
    """`async with scene_factory(kafka, mongo, **settings) as scene:` — always cleaned up."""

    @asynccontextmanager
    async def make(kafka_bootstrap: str, mongodb_url: str, **settings: Any) -> AsyncIterator[Scene]:
        harness = ServiceHarness(
            kafka_bootstrap, mongodb_url, start_service=False, **{**FAULT_SETTINGS, **settings}
        )
        await harness.start()
        scene = Scene(harness, tmp_path)
        try:
            yield scene
        finally:
            for process in scene.processes:
                await process.stop(timeout=15)
            await harness.stop()

    return make
