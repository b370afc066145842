"""Every metric the service exports is in `docs/operate/metrics.md`, with its type and labels."""

from __future__ import annotations

import re
from pathlib import Path

from service.metrics import Metrics

PAGE = Path(__file__).resolve().parents[2] / "docs" / "operate" / "metrics.md"
ROW = re.compile(r"^\| `(payments_\w+)` \| (counter|gauge|histogram) \|([^|]*)\|", re.M)


def _documented() -> dict[str, tuple[str, frozenset[str]]]:
    return {
        name: (kind, frozenset(re.findall(r"`(\w+)`", labels)))
        for name, kind, labels in ROW.findall(PAGE.read_text(encoding="utf-8"))
    }


def _exported() -> dict[str, tuple[str, frozenset[str]]]:
    metrics = Metrics()
    exported = {}
    for collector in vars(metrics).values():
        name = getattr(collector, "_name", None)
        if name is None or not hasattr(collector, "_labelnames"):
            continue
        exported[name] = (collector._type, frozenset(collector._labelnames))
    return exported


def test_the_page_documents_every_metric_with_its_type_and_labels() -> None:
    exported = _exported()
    assert exported, "found no metrics on Metrics()"
    assert _documented() == exported
