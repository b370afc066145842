"""`docs/architecture.md` names files, classes and functions: they must exist.

The page is the newcomer's map; a rename that leaves it pointing at nothing
fails here instead of misleading the next reader.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "architecture.md"
CODE_DIRS = ("service", "schemas")

_TOKEN = re.compile(r"`([^`\n]+)`")
_PATH = re.compile(r"^[\w./-]+/(?:[\w.-]+\.(?:py|md))?$|^[\w-]+\.py$")
_NAME = re.compile(r"^[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*$")
NOT_CODE = frozenset({"payments", "manual", "sandbox", "stripe", "load"})
"""Backticked words that name a command, a provider id or a role, not a symbol."""


def _tokens() -> list[str]:
    return _TOKEN.findall(PAGE.read_text(encoding="utf-8"))


@cache
def _source() -> str:
    return "\n".join(
        path.read_text(encoding="utf-8")
        for directory in CODE_DIRS
        for path in sorted((ROOT / directory).rglob("*.py"))
    )


def _defined(name: str) -> bool:
    pattern = rf"(?m)^\s*(?:(?:async\s+)?def|class)\s+{name}\b|^\s*{name}\s*[:=]"
    return re.search(pattern, _source()) is not None


def _resolves(path: str) -> bool:
    """A path is relative to the repository root or, for a bare module name, to a
    directory the page names (`options.py` in `service/adapters/providers/`)."""
    if (ROOT / path).exists():
        return True
    bare = path.rstrip("/")
    if "/" in bare:
        return False
    return any(next((ROOT / directory).rglob(bare), None) is not None for directory in CODE_DIRS)


def test_every_path_on_the_page_exists() -> None:
    # Links out of the repository (the shared contract) are not checked here.
    paths = [t for t in _tokens() if _PATH.match(t) and not t.startswith("../")]
    assert paths, "the page names no file"
    assert [p for p in paths if not _resolves(p)] == []


def test_every_class_and_function_on_the_page_is_defined() -> None:
    names = [t for t in _tokens() if _NAME.match(t) and not _PATH.match(t) and t not in NOT_CODE]
    assert names, "the page names no code"
    missing = [n for n in names if not all(_defined(part) for part in n.split("."))]
    assert missing == []
