"""What the wheel ships: the service and the public harness, nothing only our tests use.

The runtime package holds the service, the schemas and the harness downstream
suites use (`service.testing`: harness, builders, pytest plugin, infrastructure,
service launcher). The fault injector, the audit, localstripe, the JVM Kafka and
FerretDB servers and every other helper of this repository's own suites live under
`tests/` and must neither ship nor be imported by shipped code.

The wheel is built from a copy of the checkout with `uv build --wheel` (build
isolation, as the image's `pip wheel`; uv may use its cache and PyPI).
"""

from __future__ import annotations

import ast
import configparser
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.packaging

REPO = Path(__file__).resolve().parents[2]
BUILD_TIMEOUT_S = 300.0

#: Not part of a checkout (or regenerated from it): left out of the copy.
NOT_SOURCE = (
    ".git",
    ".venv",
    ".cache",
    ".data",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    "*.pyc",
    ".pytest_cache",
    ".mypy_cache",
    ".ruff_cache",
    ".hypothesis",
    "results",
)

#: The harness downstream suites get with the package (README, "Testing").
PUBLIC_HARNESS = {
    "service/testing/__init__.py",
    "service/testing/builders.py",
    "service/testing/harness.py",
    "service/testing/infrastructure.py",
    "service/testing/pool.py",
    "service/testing/pytest_plugin.py",
    "service/testing/service_process.py",
}

#: Packages of this repository that are not the runtime: nothing shipped imports them.
REPOSITORY_ONLY = ("tests", "bench", "tools")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[zipfile.ZipFile]:
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(*NOT_SOURCE))
    done = subprocess.run(
        [
            str(Path(sys.executable).with_name("uv")),
            "build",
            "--wheel",
            "-q",
            "-o",
            str(root),
            str(source),
        ],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, f"uv build failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    (built,) = root.glob("payments_service-*.whl")
    with zipfile.ZipFile(built) as archive:
        yield archive


def _python_files(wheel: zipfile.ZipFile) -> list[str]:
    return [name for name in wheel.namelist() if name.endswith(".py")]


def test_the_wheel_holds_only_the_runtime_packages(wheel: zipfile.ZipFile) -> None:
    top_level = {name.split("/", 1)[0] for name in wheel.namelist()}
    dist_info = {name for name in top_level if name.endswith(".dist-info")}
    assert top_level - dist_info == {"service", "schemas"}


def test_no_test_only_module_ships(wheel: zipfile.ZipFile) -> None:
    shipped = {Path(name).name for name in _python_files(wheel)} - {"__init__.py"}
    test_only = {
        path.name
        for folder in ("tests/support", "tests/fixtures", "tests/faults")
        for path in (REPO / folder).rglob("*.py")
    } - {"__init__.py", "conftest.py"}
    assert {"faults.py", "audit.py", "localstripe.py", "real_servers.py"} <= test_only
    assert shipped & test_only == set()
    assert [name for name in wheel.namelist() if "/tests/" in f"/{name}"] == []


def test_the_public_harness_ships_with_its_plugin(wheel: zipfile.ZipFile) -> None:
    assert {n for n in _python_files(wheel) if n.startswith("service/testing/")} == PUBLIC_HARNESS
    (entry_points,) = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    parser = configparser.ConfigParser()
    parser.read_string(wheel.read(entry_points).decode())
    plugin = parser["pytest11"]["payments"]
    assert plugin.replace(".", "/") + ".py" in PUBLIC_HARNESS


def _imported_modules(tree: ast.AST) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module


def test_no_shipped_file_imports_repository_only_code(wheel: zipfile.ZipFile) -> None:
    offenders = [
        f"{name}: {module}"
        for name in _python_files(wheel)
        for module in _imported_modules(ast.parse(wheel.read(name), filename=name))
        if module.split(".")[0] in REPOSITORY_ONLY
    ]
    assert offenders == []


def test_no_file_under_service_imports_from_tests() -> None:
    # The checkout too: a module left out of the wheel by mistake is still checked.
    offenders = [
        f"{path.relative_to(REPO)}: {module}"
        for folder in ("service", "schemas")
        for path in sorted((REPO / folder).rglob("*.py"))
        for module in _imported_modules(ast.parse(path.read_bytes(), filename=str(path)))
        if module.split(".")[0] in REPOSITORY_ONLY
    ]
    assert offenders == []
