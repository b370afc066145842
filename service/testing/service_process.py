"""The service as a child process (`payments run`): the one launcher of every harness.

In-process harnesses share the test's event loop and imports; a child process is
the service exactly as deployed: its own interpreter, configured only through
`PAYMENTS_*` environment variables, ready when `GET /readyz` says so, stopped by
SIGTERM like a container. The subprocess mode of `ServiceHarness` uses it, and so
do suites that kill the service at any instruction (SIGKILL: no `finally` runs, no
offset is committed, no buffered record is flushed) and start it again.

The child dies with the test process even when that one is killed (the same
parent-death signal the embedded servers use).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from service.embedded import (  # the die-with-parent launch
    LOOPBACK,
    _death_signal_preexec,
    _spawner,
    free_port,
)
from service.settings import ENV_PREFIX

DEFAULT_STARTUP_TIMEOUT_S = 90.0
"""Generous: a cold interpreter importing the service on a busy CI machine is slow."""

DEFAULT_STOP_TIMEOUT_S = 30.0
"""SIGTERM lets the service finish its batch and flush the outbox; SIGKILL after this."""


class ServiceProcessError(RuntimeError):
    """The child did not become ready; the message carries its log tail."""


def settings_environment(settings: Mapping[str, Any]) -> dict[str, str]:
    """`PAYMENTS_*` variables for settings given as keyword values (None = unset).

    Lists are comma-separated (how `Settings` reads the providers list), dicts are
    JSON, secrets are given in clear: the child must be able to read them.
    """
    env: dict[str, str] = {}
    for name, value in settings.items():
        if value is None:
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, list | tuple):
            text = ",".join(str(v) for v in value)
        elif isinstance(value, dict):
            text = json.dumps(value)
        else:
            text = str(value)
        env[f"{ENV_PREFIX}{name.upper()}"] = text
    return env


def service_environment(settings: Mapping[str, Any]) -> dict[str, str]:
    """The whole environment of a child run with `settings`.

    Inherited `PAYMENTS_*` variables are dropped so a developer's shell cannot point
    the child at another broker or database; output is unbuffered so a log read
    after a kill holds everything the child said.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env.update(settings_environment(settings))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def payments_command() -> list[str]:
    """`payments` from this interpreter's environment, or the module if not installed."""
    script = Path(sys.executable).with_name("payments")
    if script.exists():
        return [str(script)]
    found = shutil.which("payments")
    return [found] if found else [sys.executable, "-m", "service.entrypoints.cli"]


async def http_status(port: int, path: str, timeout: float = 2.0) -> int | None:
    """Status code of `GET path` on the loopback port, None when nothing answers."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(LOOPBACK, port), timeout)
    except (OSError, TimeoutError):
        return None
    try:
        writer.write(f"GET {path} HTTP/1.0\r\nHost: {LOOPBACK}\r\n\r\n".encode())
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout)
        parts = line.split()
        return int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else None
    except (OSError, TimeoutError, ValueError):
        return None
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


class ServiceProcess:
    """`payments run` with the given settings, to start, stop, kill and start again.

    `start()` returns once `/readyz` answers 200; `spawn()` does not wait (for a
    service started while its broker is unreachable). Each start gets a fresh HTTP
    port unless the settings fix one, and appends to one log file (`log_path`, else
    one in a temporary directory), so a failing test can show what the service said
    across restarts.
    """

    def __init__(
        self,
        settings: Mapping[str, Any],
        *,
        log_path: Path | None = None,
        name: str = "service",
        run_args: Sequence[str] = ("--no-embedded",),
        startup_timeout_s: float = DEFAULT_STARTUP_TIMEOUT_S,
    ) -> None:
        self.settings = dict(settings)
        self.settings.setdefault("http_host", LOOPBACK)
        self.name = name
        self.run_args = tuple(run_args)
        """Options of `payments run`; `()` lets it start embedded servers when no
        addresses are configured, as `make run` does."""
        self.startup_timeout_s = startup_timeout_s
        self._own_workdir = log_path is None
        self.workdir = (
            Path(tempfile.mkdtemp(prefix="payments-service-"))
            if log_path is None
            else log_path.parent
        )
        self.log_path = log_path if log_path is not None else self.workdir / "service.log"
        self.http_port: int | None = None
        self.starts = 0
        self.kills = 0
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.http_port}"

    def log_tail(self, limit: int = 6000) -> str:
        try:
            data = self.log_path.read_bytes()[-limit:]
        except OSError:
            return f"<no log at {self.log_path}>"
        text = data.decode("utf-8", "replace").strip() or "<empty log>"
        return f"--- {self.name} log tail ({self.log_path}) ---\n{text}"

    def spawn(self) -> None:
        """Start the process and return at once (see `wait_ready`)."""
        if self.running:
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        fixed = self.settings.get("http_port")
        self.http_port = int(fixed) if fixed else free_port()
        env = service_environment({**self.settings, "http_port": self.http_port})
        command = [*payments_command(), "run", *self.run_args]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        parent_pid = os.getpid()
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"\n===== {self.name} start #{self.starts} =====\n".encode())
            log.flush()

            def launch() -> subprocess.Popen[bytes]:
                return subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self.workdir,
                    env=env,
                    start_new_session=True,
                    preexec_fn=_death_signal_preexec(parent_pid),
                )

            # From the long-lived spawner thread: the parent-death signal fires when
            # the *thread* that forked exits.
            self._proc = _spawner.spawn(launch)

    async def wait_ready(self, timeout: float | None = None) -> None:
        """Return once `/readyz` answers 200; raise with the log tail otherwise."""
        timeout = self.startup_timeout_s if timeout is None else timeout
        deadline = time.monotonic() + timeout
        last: int | None = None
        while True:
            proc = self._proc
            if proc is None or proc.poll() is not None:
                code = None if proc is None else proc.returncode
                raise ServiceProcessError(
                    f"`payments run` ({self.name}) exited with code {code} during start-up.\n"
                    f"{self.log_tail()}"
                )
            if self.http_port is not None:
                last = await http_status(self.http_port, "/readyz")
                if last == 200:
                    return
            if time.monotonic() > deadline:
                raise ServiceProcessError(
                    f"`payments run` ({self.name}) not ready after {timeout:g}s "
                    f"(/readyz: {last or 'no answer'}).\n{self.log_tail()}"
                )
            await asyncio.sleep(0.2)

    async def start(self, timeout: float | None = None) -> None:
        """Start the process and wait until it is ready; stop it if it never is."""
        await asyncio.to_thread(self.spawn)
        try:
            await self.wait_ready(timeout)
        except ServiceProcessError:
            await self.stop()
            raise

    async def http_status(self, path: str) -> int | None:
        """Status of `GET path` on the running instance (None: nothing answers)."""
        if self.http_port is None or not self.running:
            return None
        return await http_status(self.http_port, path)

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to flush, commit or clean up."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            self.kills += 1
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGKILL)
        proc.wait()

    async def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT_S) -> int | None:
        """SIGTERM (graceful: finish the batch, flush the outbox), SIGKILL after
        `timeout`; returns the exit code (None when it was not running)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(proc.wait, timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
        return await asyncio.to_thread(proc.wait)

    def cleanup(self) -> None:
        """Remove the temporary directory (and log) this launcher made, if any."""
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
