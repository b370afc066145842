"""The service as a child process (`payments run`), for black-box harnesses.

In-process harnesses share the test's event loop and imports; a child process is
the service exactly as deployed: its own interpreter, configured only through
`PAYMENTS_*` environment variables, ready when `GET /readyz` says so, stopped by
SIGTERM like a container. The child dies with the test process even when that
one is killed (the same parent-death signal the embedded servers use).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from service.embedded import _death_signal_preexec, _spawner  # the die-with-parent launch
from service.settings import ENV_PREFIX

DEFAULT_STARTUP_TIMEOUT_S = 90.0
"""Generous: a cold interpreter importing the service on a busy CI machine is slow."""


class ServiceProcessError(RuntimeError):
    """The child did not become ready; the message carries its log tail."""


def settings_environment(settings: Mapping[str, Any]) -> dict[str, str]:
    """`PAYMENTS_*` variables for settings given as keyword values (None = unset)."""
    env: dict[str, str] = {}
    for name, value in settings.items():
        if value is None:
            continue
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, list | tuple):
            text = ",".join(str(v) for v in value)  # the providers list
        elif isinstance(value, dict):
            text = json.dumps(value)
        else:
            text = str(value)
        env[f"{ENV_PREFIX}{name.upper()}"] = text
    return env


def payments_command() -> list[str]:
    """`payments` from this interpreter's environment, or the module if not installed."""
    script = Path(sys.executable).with_name("payments")
    if script.exists():
        return [str(script)]
    found = shutil.which("payments")
    return [found] if found else [sys.executable, "-m", "service.entrypoints.cli"]


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServiceProcess:
    """`payments run` with the given settings; `start()` returns once it is ready."""

    def __init__(
        self,
        settings: Mapping[str, Any],
        *,
        startup_timeout_s: float = DEFAULT_STARTUP_TIMEOUT_S,
        run_args: Sequence[str] = ("--no-embedded",),
    ) -> None:
        self.run_args = tuple(run_args)
        """Options of `payments run`; `()` lets it start embedded servers when no
        addresses are configured, as `make run` does."""
        self.settings = dict(settings)
        if not self.settings.get("http_port"):
            self.settings["http_port"] = free_port()
        self.settings.setdefault("http_host", "127.0.0.1")
        self.http_port = int(self.settings["http_port"])
        self.startup_timeout_s = startup_timeout_s
        self.workdir = Path(tempfile.mkdtemp(prefix="payments-service-"))
        self.log_path = self.workdir / "service.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def log_tail(self, limit: int = 4000) -> str:
        try:
            data = self.log_path.read_bytes()[-limit:]
        except OSError:
            return "<no log>"
        return data.decode("utf-8", "replace").strip() or "<empty log>"

    def _launch(self) -> subprocess.Popen[bytes]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
        env.update(settings_environment(self.settings))
        command = [*payments_command(), "run", *self.run_args]
        parent_pid = os.getpid()

        def launch() -> subprocess.Popen[bytes]:
            with self.log_path.open("ab") as log:
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

        return _spawner.spawn(launch)

    async def start(self) -> None:
        self.proc = await asyncio.to_thread(self._launch)
        deadline = time.monotonic() + self.startup_timeout_s
        last = "no answer yet"
        async with httpx.AsyncClient(timeout=2.0) as client:
            while True:
                if self.proc.poll() is not None:
                    raise ServiceProcessError(
                        f"`payments run` exited with code {self.proc.returncode} during start-up. "
                        f"Log tail ({self.log_path}):\n{self.log_tail()}"
                    )
                try:
                    response = await client.get(f"{self.base_url}/readyz")
                    if response.status_code == 200:
                        return
                    last = f"{response.status_code} {response.text[:300]}"
                except httpx.HTTPError as exc:
                    last = f"{type(exc).__name__}: {exc}"
                if time.monotonic() > deadline:
                    await self.stop()
                    raise ServiceProcessError(
                        f"`payments run` not ready after {self.startup_timeout_s:g}s "
                        f"(/readyz: {last}). Log tail ({self.log_path}):\n{self.log_tail()}"
                    )
                await asyncio.sleep(0.3)

    async def stop(self, grace_s: float = 20.0) -> int | None:
        """SIGTERM (graceful: finish the batch, flush the outbox), then SIGKILL."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                await asyncio.to_thread(proc.wait, grace_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await asyncio.to_thread(proc.wait)
        return proc.returncode

    def cleanup(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)
