"""Audit every locked dependency (uv.lock) for known vulnerabilities (`make audit`, CI).

Exports the lock as pinned requirements (all extras: what production installs and
what developers and CI run) and asks PyPI's vulnerability records about each
pinned version with `pip-audit -s pypi` (the OSV API is not reachable from here).

Where PyPI cannot answer for one version (a mirror that serves only the project
documents, `/pypi/<name>/json`, answers pip-audit's per-version question with
404), the project document is read instead: its ``vulnerabilities`` are those of
the latest release, so they stand for the locked version only when it is the
latest. A locked version that is neither audited by pip-audit nor the latest is
"unaudited", and that fails too: an audit that silently skips proves nothing.

Fails on any known vulnerability or unaudited dependency unless
`tools/audit/ignore.txt` lists it (a vulnerability id, or ``name==version`` for
an unaudited pin) with a reason.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
IGNORE_FILE = HERE / "ignore.txt"
BIN = Path(sys.executable).parent
PYPI_PROJECT = "https://pypi.org/pypi/{name}/json"


def ignore_list(path: Path = IGNORE_FILE) -> dict[str, str]:
    """Entry (vulnerability id or ``name==version``) → reason, from the ignore file."""
    entries: dict[str, str] = {}
    for line in path.read_text("utf-8").splitlines():
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        entry, _, reason = text.partition(" ")
        if not reason.strip():
            raise SystemExit(f"{path}: {entry} is listed without a reason")
        entries[entry.lower()] = reason.strip()
    return entries


def locked_requirements(target: Path) -> list[tuple[str, str]]:
    subprocess.run(
        [
            str(BIN / "uv"),
            "export",
            "--locked",
            "--all-extras",
            "--no-emit-project",
            "--no-header",
            "--format",
            "requirements-txt",
            "--output-file",
            str(target),
        ],
        cwd=REPO,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    pins = []
    for line in target.read_text().splitlines():
        if "==" in line and not line.startswith((" ", "#")):
            name, _, rest = line.partition("==")
            pins.append((name.strip().lower(), rest.split(";")[0].split()[0].strip()))
    return pins


def pip_audit(requirements: Path) -> list[dict[str, Any]]:
    done = subprocess.run(
        [
            str(BIN / "pip-audit"),
            "--requirement",
            str(requirements),
            "--vulnerability-service",
            "pypi",
            "--disable-pip",
            "--progress-spinner",
            "off",
            "--desc",
            "on",
            "--format",
            "json",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        return list(json.loads(done.stdout)["dependencies"])
    except (ValueError, KeyError):
        raise SystemExit(f"pip-audit gave no report ({done.returncode}):\n{done.stderr}") from None


def latest_release_vulns(name: str) -> tuple[str, list[dict[str, Any]]]:
    with urllib.request.urlopen(PYPI_PROJECT.format(name=name), timeout=30) as response:
        document = json.load(response)
    return str(document["info"]["version"]), list(document.get("vulnerabilities") or [])


def main() -> int:
    ignored = ignore_list()
    with tempfile.TemporaryDirectory() as tmp:
        requirements = Path(tmp) / "requirements.txt"
        pins = locked_requirements(requirements)
        report = pip_audit(requirements)

    found: list[tuple[str, str, str, str]] = []  # name, version, id, summary
    skipped = [d for d in report if "skip_reason" in d]
    for dependency in report:
        for vuln in dependency.get("vulns", []):
            found.append(
                (dependency["name"], dependency["version"], vuln["id"], vuln.get("description", ""))
            )
    # A name may be locked at two versions (one per Python version): each is judged.
    skipped_names = {str(d["name"]).lower() for d in skipped}
    unaudited: list[str] = []
    with ThreadPoolExecutor(max_workers=8) as pool:
        names = sorted(skipped_names)
        latest = dict(zip(names, pool.map(latest_release_vulns, names), strict=True))
    for name, version in pins:
        if name not in skipped_names:
            continue
        newest, vulns = latest[name]
        if version != newest:
            unaudited.append(f"{name}=={version}")
            continue
        for vuln in vulns:
            found.append((name, version, vuln["id"], vuln.get("summary") or ""))

    audited = len(pins) - len(unaudited)
    failures = []
    for name, version, vuln_id, summary in found:
        if vuln_id.lower() in ignored:
            print(f"ignored: {name} {version} {vuln_id} ({ignored[vuln_id.lower()]})")
        else:
            failures.append(f"{name} {version}: {vuln_id} {summary[:200]}")
    for pin in unaudited:
        if pin in ignored:
            print(f"unaudited, accepted: {pin} ({ignored[pin]})")
        else:
            failures.append(
                f"{pin}: PyPI has no vulnerability record for this version here and it is "
                "not the latest release; raise it (`make lock`) or list it in "
                f"{IGNORE_FILE.relative_to(REPO)} with a reason"
            )
    print(
        f"audit: {len(pins)} locked dependencies, {audited} audited "
        f"({len(report) - len(skipped)} by pip-audit per version, "
        f"{audited - (len(report) - len(skipped))} as their latest release), "
        f"{len(found)} known vulnerabilities"
    )
    for failure in failures:
        print(f"FAIL {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
