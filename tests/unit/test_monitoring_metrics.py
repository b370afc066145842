"""The alert rules and the Grafana dashboard read metrics the service exports.

A rule over a metric that does not exist never fires, and nothing says so: a rename in
`service/metrics.py` would silently switch an alert off. So every `payments_*` name in
`deploy/monitoring/` must be a series of the service's `/metrics` (counters gain
`_total`, histograms `_bucket`, `_sum` and `_count`), every label a selector matches
on must be one of that metric's labels, and every alert must link a runbook page that
exists. What the rules do with those series is tested by promtool
(`tools/tests/test_promtool_rules.py`, `make test-monitoring`).
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.domain.outcomes import OutcomeKind
from service.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "deploy" / "monitoring"
RULES = MONITORING / "payments-alerts.yml"
DASHBOARD = MONITORING / "grafana-dashboard.json"

SELECTOR = re.compile(r"\b(payments_\w+)\s*(?:\{([^}]*)\})?")
MATCHER = re.compile(r"(\w+)\s*(=~|!~|!=|=)\s*\"([^\"]*)\"")
LABEL_VALUES = {"outcome": {kind.value for kind in OutcomeKind}}
"""Labels whose values the service fixes: a matcher on them must name real values."""
GRAFANA_LABELS = {"job"}
"""Labels Prometheus adds when it scrapes (the dashboard filters on `job`)."""


@cache
def exported() -> dict[str, frozenset[str]]:
    """Every series name the service's /metrics can show, with its label names."""
    series: dict[str, frozenset[str]] = {}
    for collector in vars(Metrics()).values():
        name = getattr(collector, "_name", None)
        kind = getattr(collector, "_type", None)
        if name is None or kind is None:
            continue
        labels = frozenset(collector._labelnames)
        if kind == "counter":
            series[f"{name}_total"] = labels
        elif kind == "histogram":
            for suffix in ("_bucket", "_sum", "_count"):
                series[name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
        else:
            series[name] = labels
    return series


def _rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in document["groups"] for rule in group["rules"]]


def _dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def _expressions() -> list[tuple[str, str]]:
    found = [(f"rule {rule['alert']}", str(rule["expr"])) for rule in _rules()]
    found += [(f"dashboard {i}", expr) for i, expr in enumerate(_dashboard_exprs())]
    return found


def test_the_files_name_metrics_at_all() -> None:
    names = {m[0] for _, expr in _expressions() for m in SELECTOR.findall(expr)}
    assert len(names) >= 10, names
    assert exported(), "found no metrics on Metrics()"


@pytest.mark.parametrize(("where", "expr"), _expressions(), ids=lambda v: str(v)[:60])
def test_every_metric_and_label_selected_exists(where: str, expr: str) -> None:
    problems = []
    for name, matchers in SELECTOR.findall(expr):
        if name not in exported():
            problems.append(f"{name} is not on /metrics")
            continue
        for label, _, value in MATCHER.findall(matchers):
            if label not in exported()[name] | GRAFANA_LABELS:
                problems.append(f"{name} has no label {label!r}")
            if label in LABEL_VALUES:
                unknown = set(value.split("|")) - LABEL_VALUES[label]
                if unknown:
                    problems.append(f"{name}{{{label}}} is never {sorted(unknown)}")
    assert not problems, f"{where}: {problems}"


def test_every_alert_is_labelled_summarised_and_links_an_existing_runbook() -> None:
    linked = set()
    for rule in _rules():
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"].startswith("payments: "), rule["alert"]
        runbook = ROOT / rule["annotations"]["runbook_url"]
        assert runbook.is_file(), f"{rule['alert']}: no runbook {runbook}"
        linked.add(runbook.name)
    pages = {p.name for p in (ROOT / "docs" / "operate" / "runbooks").glob("*.md")}
    assert pages - {"index.md"} == linked, "a runbook page no alert links, or the reverse"


def test_every_runbook_names_the_alerts_that_link_it() -> None:
    for rule in _rules():
        page = (ROOT / rule["annotations"]["runbook_url"]).read_text(encoding="utf-8")
        assert f"`{rule['alert']}`" in page, f"{rule['annotations']['runbook_url']}"


def test_dashboard_panels_have_unique_ids_and_use_the_datasource_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]


def test_every_docs_path_the_files_mention_exists() -> None:
    text = RULES.read_text(encoding="utf-8") + DASHBOARD.read_text(encoding="utf-8")
    paths = set(re.findall(r"docs/[\w/.-]+\.md", text))
    assert paths
    assert [p for p in sorted(paths) if not (ROOT / p).is_file()] == []
