"""`StallMonitor`: the same batch failing again and again is a stall; anything else is not."""

from __future__ import annotations

import logging

import pytest

from service.consumer import Record, StallMonitor
from service.metrics import Metrics


def _batch(*positions: tuple[str, int, int]) -> list[Record]:
    return [Record(t, p, o, None, b"x", ()) for t, p, o in positions]


def _value(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def test_the_same_batch_failing_threshold_times_is_a_stall(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = Metrics()
    monitor = StallMonitor(3, metrics)
    batch = _batch(("cart.updated", 2, 17), ("cart.updated", 2, 18), ("checkout.completed", 0, 5))
    caplog.set_level(logging.ERROR)
    assert monitor.failed(batch) == 1
    assert monitor.failed(batch) == 2
    assert not monitor.stalled
    assert monitor.failed(batch) == 3
    assert monitor.stalled
    assert "cart.updated[2]@17" in caplog.text and "checkout.completed[0]@5" in caplog.text
    assert _value(metrics, "payments_consumer_stalled") == 1
    labels = {"topic": "cart.updated", "partition": "2"}
    assert _value(metrics, "payments_consumer_stalled_batches_total", **labels) == 1
    monitor.failed(batch)  # still stalled: counted once per stall, logged every time
    assert _value(metrics, "payments_consumer_stalled_batches_total", **labels) == 1
    monitor.succeeded()
    assert not monitor.stalled
    assert _value(metrics, "payments_consumer_stalled") == 0


def test_failures_of_different_batches_are_not_a_stall() -> None:
    monitor = StallMonitor(2, Metrics())
    monitor.failed(_batch(("cart.updated", 0, 1)))
    monitor.failed(_batch(("cart.updated", 0, 2)))  # it moved on
    monitor.failed(_batch(("cart.updated", 1, 1)))
    assert not monitor.stalled


def test_a_success_resets_the_count() -> None:
    monitor = StallMonitor(2, Metrics())
    batch = _batch(("cart.updated", 0, 1))
    monitor.failed(batch)
    monitor.succeeded()
    monitor.failed(batch)
    assert not monitor.stalled
