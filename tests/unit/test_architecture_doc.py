"""`docs/contribute/architecture.md` names files, classes and functions: they must
exist, and the import rules it states must hold.

The page is the newcomer's map; a rename that leaves it pointing at nothing, or an
import that breaks the layering it describes, fails here instead of misleading the
next reader.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "contribute" / "architecture.md"
CODE_DIRS = ("service", "schemas")

_TOKEN = re.compile(r"`([^`\n]+)`")
_PATH = re.compile(r"^[\w./-]+/(?:[\w.-]+\.(?:py|md))?$|^[\w-]+\.py$")
_NAME = re.compile(r"^[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*$")
NOT_CODE = frozenset({"payments", "manual", "sandbox", "stripe", "load", "KafkaBroker"})
"""Backticked words that name a command, a provider id, a role or a library's class,
not a symbol of ours."""


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
    paths = [t for t in _tokens() if _PATH.match(t)]
    assert paths, "the page names no file"
    assert [p for p in paths if not _resolves(p)] == []


def test_every_class_and_function_on_the_page_is_defined() -> None:
    names = [t for t in _tokens() if _NAME.match(t) and not _PATH.match(t) and t not in NOT_CODE]
    assert names, "the page names no code"
    missing = [n for n in names if not all(_defined(part) for part in n.split("."))]
    assert missing == []


# -- the import rules of "The layers" -------------------------------------------------

DRIVERS = frozenset({"pymongo", "aiokafka", "faststream", "stripe"})
SERVICE_LAYER = frozenset(
    {"bus", "consumer", "handlers", "unit_of_work", "provider_calls", "retry", "outbox"}
    | {"outbox_relay", "reconciler", "auditor", "webhook_intake", "admin_auth"}
)
SHARED = frozenset({"settings", "metrics", "observability"})
ALLOWED = {
    "schemas": {"schemas"},
    "domain": {"schemas", "domain"},
    "ports": {"schemas", "domain", "ports"},
    "shared": {"schemas", "domain", "shared"},
    "adapters": {"schemas", "domain", "ports", "adapters", "shared"},
    "service layer": {"schemas", "domain", "ports", "service layer", "shared"},
}
"""Which layers each layer may import; entrypoints, tools, the harness and the
embedded servers (the outer ring) may import anything."""
DRIVER_EXCEPTIONS = {
    ("service.observability.logging", "faststream"),
}
"""The modules the page names as importing a driver outside the adapters."""


def _layer(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] == "schemas":
        return "schemas"
    if parts[0] != "service":
        return None
    name = parts[1] if len(parts) > 1 else ""
    if name in ("domain", "ports", "adapters"):
        return name
    if name in SERVICE_LAYER:
        return "service layer"
    return "shared" if name in SHARED else "outer"


def _imports() -> list[tuple[str, str]]:
    found = []
    for path in sorted([*ROOT.glob("schemas/**/*.py"), *ROOT.glob("service/**/*.py")]):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found += [(module, alias.name) for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.append((module, node.module))
    return found


def test_every_module_of_service_is_in_a_layer() -> None:
    # A new module must be placed: the service layer, shared, or the outer ring.
    top = {p.stem for p in (ROOT / "service").glob("*.py")} - {"__init__"}
    outer = {"embedded"}
    assert top - SERVICE_LAYER - SHARED - outer == set()


def test_each_layer_imports_only_the_layers_the_page_allows() -> None:
    imports = _imports()
    assert len(imports) > 100, "found too few imports to check"
    wrong = [
        f"{module} ({_layer(module)}) imports {name} ({_layer(name)})"
        for module, name in imports
        if _layer(module) in ALLOWED
        and _layer(name) is not None
        and _layer(name) not in ALLOWED[str(_layer(module))]
    ]
    assert wrong == []


def test_drivers_are_imported_by_adapters_and_entrypoints_and_the_named_exceptions() -> None:
    outside = {
        (module, name.split(".")[0])
        for module, name in _imports()
        if name.split(".")[0] in DRIVERS and _layer(module) not in ("adapters", "outer")
    }
    assert outside == DRIVER_EXCEPTIONS, "update the page's exceptions and this list together"
    page = PAGE.read_text(encoding="utf-8")
    for module, _ in DRIVER_EXCEPTIONS:
        assert f"{module.rpartition('.')[2]}.py`" in page, module
