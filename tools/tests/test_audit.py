"""`make audit`'s ignore list: every entry names what it accepts and says why."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "audit"))
import audit  # tools/audit is a script folder, not a package


def test_every_ignored_entry_has_a_reason() -> None:
    for entry, reason in audit.ignore_list().items():
        assert re.fullmatch(r"[\w.-]+==[\w.+-]+|(pysec|ghsa|cve)-[\w-]+", entry), entry
        assert len(reason) > 20, (entry, reason)


def test_an_entry_without_a_reason_is_refused(tmp_path: Path) -> None:
    listed = tmp_path / "ignore.txt"
    listed.write_text("# a comment\nGHSA-xxxx-yyyy-zzzz\n")
    with pytest.raises(SystemExit, match="without a reason"):
        audit.ignore_list(listed)
