"""promtool, Prometheus's own rule checker and rule unit tester, built from source.

    python tools/prometheus/promtool.py install          # go build into .cache/prometheus/bin/
    python tools/prometheus/promtool.py version
    python tools/prometheus/promtool.py run ARGS...      # promtool ARGS..., building it first

The version is the Prometheus Go module pinned in `tools/prometheus/go.mod` (a `tool`
directive, with go.sum pinning every dependency). The first build fetches the module
from the Go proxy and takes a few minutes; the binary is cached under `.cache/`
(`PAYMENTS_CACHE_DIR` elsewhere) like FerretDB's, and never committed.
`tests/unit/test_monitoring_rules.py` runs `promtool check rules` and
`promtool test rules` over `deploy/monitoring/`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

MODULE_DIR = Path(__file__).resolve().parent
REPO_ROOT = MODULE_DIR.parents[1]
PACKAGE = "github.com/prometheus/prometheus/cmd/promtool"
ENV_CACHE_DIR = "PAYMENTS_CACHE_DIR"
BUILD_TIMEOUT_S = 1800.0


class PromtoolInstallError(RuntimeError):
    """promtool could not be built (no Go, no module proxy, a failed build)."""


def prometheus_version() -> str:
    """The Prometheus module version pinned in `tools/prometheus/go.mod`."""
    found = re.search(
        r"^\s*github\.com/prometheus/prometheus (v\S+)",
        (MODULE_DIR / "go.mod").read_text(encoding="utf-8"),
        re.M,
    )
    if found is None:
        raise PromtoolInstallError("tools/prometheus/go.mod requires no Prometheus version")
    return found.group(1)


def cache_dir() -> Path:
    configured = os.environ.get(ENV_CACHE_DIR, "").strip()
    return Path(configured).resolve() if configured else REPO_ROOT / ".cache"


@contextlib.contextmanager
def _install_lock() -> Iterator[None]:
    # Two sessions on one machine must not run `go build` into one folder at once.
    lock_path = cache_dir() / ".prometheus.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def promtool_binary() -> Path:
    """The promtool executable, built with `go build` on first use."""
    binary = cache_dir() / "prometheus" / "bin" / f"promtool-{prometheus_version()}"
    if binary.is_file():
        return binary
    with _install_lock():
        if binary.is_file():
            return binary
        binary.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        # Go's module cache is read-only by default, which makes `rm -rf .cache` fail.
        env["GOFLAGS"] = f"{env.get('GOFLAGS', '')} -modcacherw".strip()
        env.setdefault("CGO_ENABLED", "0")
        partial = binary.with_name(binary.name + ".partial")
        command = ["go", "build", "-trimpath", "-o", str(partial), PACKAGE]
        try:
            done = subprocess.run(
                command,
                cwd=MODULE_DIR,
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=BUILD_TIMEOUT_S,
                check=False,
            )
        except FileNotFoundError as exc:
            raise PromtoolInstallError("building promtool needs Go (`go` not found)") from exc
        except subprocess.TimeoutExpired as exc:
            raise PromtoolInstallError(f"go build gave no result in {BUILD_TIMEOUT_S:g} s") from exc
        if done.returncode != 0:
            output = (done.stdout + done.stderr)[-4000:]
            raise PromtoolInstallError(f"go build {PACKAGE} failed ({done.returncode}):\n{output}")
        partial.replace(binary)  # a build cut short never passes for a finished one
        return binary


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("install", "version", "run"):
        print(__doc__, file=sys.stderr)
        return 2
    if argv[0] == "version":
        print(prometheus_version())
        return 0
    try:
        binary = promtool_binary()
    except PromtoolInstallError as exc:
        print(f"promtool: {exc}", file=sys.stderr)
        return 1
    if argv[0] == "install":
        print(binary)
        return 0
    return subprocess.run([str(binary), *argv[1:]], check=False).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
