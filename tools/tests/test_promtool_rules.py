"""The alert rules under Prometheus's own promtool, built from the pinned Go module.

`promtool check rules` parses every rule; `promtool test rules` runs the synthetic
series of `deploy/monitoring/tests/` through them and compares the alerts that fire,
with their labels and annotations, to what each test expects. The dashboard's queries
are checked for syntax the same way, as recording rules. Needs Go for the first build
(`make test-monitoring` builds it into `.cache/` first); a machine without Go fails
here, it does not skip.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "deploy" / "monitoring"

sys.path.insert(0, str(ROOT / "tools" / "prometheus"))
from promtool import promtool_binary  # noqa: E402


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(promtool_binary()), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_the_rules_file_is_valid() -> None:
    done = _promtool("check", "rules", str(MONITORING / "payments-alerts.yml"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_the_alerts_fire_on_their_series_and_only_there() -> None:
    tests = sorted((MONITORING / "tests").glob("*.test.yml"))
    assert tests
    done = _promtool("test", "rules", *map(str, tests))
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_has_a_promtool_test() -> None:
    rules = yaml.safe_load((MONITORING / "payments-alerts.yml").read_text(encoding="utf-8"))
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    tested = set()
    for path in (MONITORING / "tests").glob("*.test.yml"):
        for test in yaml.safe_load(path.read_text(encoding="utf-8"))["tests"]:
            for case in test.get("alert_rule_test", []):
                if case["exp_alerts"]:
                    tested.add(case["alertname"])
    assert alerts == tested, f"alerts never seen firing in a test: {sorted(alerts - tested)}"


def test_the_dashboard_queries_parse(tmp_path: Path) -> None:
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text(encoding="utf-8"))
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    # Grafana's variables are not PromQL: give them the values Grafana would.
    rules = [
        {
            "record": f"dashboard:query_{i}",
            "expr": e.replace("$__rate_interval", "5m").replace("$job", ".*"),
        }
        for i, e in enumerate(exprs)
    ]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = _promtool("check", "rules", str(path))
    assert done.returncode == 0, done.stdout + done.stderr
