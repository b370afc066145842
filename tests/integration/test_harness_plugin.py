"""The `payments` pytest plugin, as a downstream project gets it.

The example test file of docs/integrate/harness.md is run by a separate pytest in an
empty directory: no conftest of ours, strict asyncio mode, only the installed entry point. The
infrastructure comes from PAYMENTS_TEST_KAFKA / PAYMENTS_TEST_MONGODB_URL (this
session's servers), and the service runs as `payments run` in a child process.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import service.testing.pytest_plugin as plugin

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).with_name("test_harness_downstream_example.py")
PAGE = Path(__file__).resolve().parents[2] / "docs" / "integrate" / "harness.md"


def test_the_docs_show_the_example_verbatim() -> None:
    example = EXAMPLE.read_text(encoding="utf-8")
    assert f"```python\n{example}```" in PAGE.read_text(encoding="utf-8"), (
        "docs/integrate/harness.md's downstream example differs from " + EXAMPLE.name
    )


def test_plugin_is_registered_and_its_fixtures_are_namespaced(
    pytestconfig: pytest.Config,
) -> None:
    assert pytestconfig.pluginmanager.get_plugin("payments") is plugin
    fixtures = {
        name
        for name, value in vars(plugin).items()
        if type(value).__name__ == "FixtureFunctionDefinition"
    }
    assert fixtures == {"payments_infrastructure", "payments_service_settings", "payments_service"}


def test_importing_the_plugin_starts_and_loads_nothing_heavy() -> None:
    """It is loaded into every pytest run of an environment with the package."""
    probe = (
        "import sys, psutil, service.testing.pytest_plugin\n"
        "heavy = [m for m in ('aiokafka', 'pymongo', 'faststream', 'service.embedded') "
        "if m in sys.modules]\n"
        "print(heavy, len(psutil.Process().children()))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[] 0"


async def test_example_runs_in_a_bare_downstream_project(
    tmp_path: Path, kafka_bootstrap: str, mongodb_url: str
) -> None:
    shutil.copy(EXAMPLE, tmp_path / "test_checkout_flow.py")
    (tmp_path / "pytest.ini").write_text(
        # No `markers =`: the plugin registers `integration` itself.
        "[pytest]\nasyncio_mode = strict\n",
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYMENTS_")}
    env.update(
        PAYMENTS_TEST_KAFKA=kafka_bootstrap,
        PAYMENTS_TEST_MONGODB_URL=mongodb_url,
        PYTHONPATH="",  # only what is installed, like a downstream checkout
    )
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "--payments-harness-mode=subprocess",
        "-W",
        "error::pytest.PytestUnknownMarkWarning",
        "test_checkout_flow.py",
    ]
    result = await asyncio.to_thread(
        subprocess.run, command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "2 passed" in result.stdout
