"""A start-up that cannot succeed says what to fix in one line, not a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_a_crash_at_start_up_prints_one_line_naming_the_cause(tmp_path: Path) -> None:
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("x")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYMENTS_")} | {
        "PAYMENTS_EMBEDDED_DATA_DIR": str(not_a_directory / "data"),
        "PAYMENTS_HTTP_PORT": "0",
    }
    payments = Path(sys.executable).with_name("payments")
    result = subprocess.run(
        [str(payments), "run"], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("payments run:")]
    assert len(errors) == 1, result.stderr
    assert "data" in errors[0]
    assert "Traceback" not in result.stderr
