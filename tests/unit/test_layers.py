"""The layers of docs/contribute/architecture.md, enforced on the imports.

Read from the source with `ast` (nothing is imported): each module's imports, at any
depth (a function-level import counts too), checked against what its layer may use.

    schemas → domain → ports → service layer → adapters → entrypoints (and the tools)

- `schemas/` imports no `service` and no driver;
- `service/domain/` imports only `schemas` and itself;
- `service/ports/` imports only `schemas`, the domain and itself;
- the service layer (`service/*.py`) imports no driver (PyMongo, aiokafka, FastStream,
  Stripe, httpx) and none of the outer modules (adapters, entrypoints, embedded
  servers, tools, testing): it sees the outside through the ports only;
- `service/observability/` (logs, tracing) depends on no outer module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DRIVERS = ("pymongo", "bson", "motor", "aiokafka", "faststream", "stripe", "httpx", "uvicorn")
OUTER = (
    "service.adapters",
    "service.entrypoints",
    "service.embedded",
    "service.tools",
    "service.testing",
)


def _imports(path: Path) -> list[str]:
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
    return found


def _under(name: str, *packages: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def _modules(pattern: str) -> list[Path]:
    return sorted(ROOT.glob(pattern))


def _violations(
    paths: list[Path], allowed: tuple[str, ...], forbidden: tuple[str, ...]
) -> list[str]:
    """Imports of first-party code outside `allowed`, and of anything in `forbidden`."""
    bad = []
    for path in paths:
        for name in _imports(path):
            first_party = _under(name, "service", "schemas")
            if (first_party and not _under(name, *allowed)) or _under(name, *forbidden):
                bad.append(f"{path.relative_to(ROOT)} imports {name}")
    return bad


LAYERS = {
    "schemas": (_modules("schemas/*.py"), ("schemas",), (*DRIVERS, "service")),
    "domain": (
        _modules("service/domain/*.py"),
        ("schemas", "service.domain"),
        DRIVERS,
    ),
    "ports": (
        _modules("service/ports/*.py"),
        ("schemas", "service.domain", "service.ports"),
        DRIVERS,
    ),
    "service layer": (
        [p for p in _modules("service/*.py") if p.name != "embedded.py"],
        ("schemas", "service"),
        (*DRIVERS, *OUTER),
    ),
    # Logs, redaction and tracing serve every layer; they configure the libraries'
    # loggers and instrument the broker, but depend on no adapter or entrypoint.
    "observability": (
        _modules("service/observability/*.py"),
        ("schemas", "service"),
        OUTER,
    ),
}


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_each_layer_imports_only_the_layers_before_it(layer: str) -> None:
    paths, allowed, forbidden = LAYERS[layer]
    assert paths, f"no module found for the {layer}"
    assert _violations(paths, allowed, forbidden) == []


def test_the_check_sees_a_violation(tmp_path: Path) -> None:
    # Guards the test above against passing vacuously (an import form it cannot see).
    module = tmp_path / "bad.py"
    module.write_text(
        "def f():\n    from pymongo.errors import AutoReconnect\n    import service.adapters\n"
    )
    assert _imports(module) == ["pymongo.errors", "service.adapters"]
