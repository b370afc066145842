"""The pure arithmetic of `make bench`: percentiles, CPU time from /proc, the JSON's shape.

Kept apart from bench/run.py (which starts servers) so the unit tests can check
what every figure is made of without any process or clock.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from typing import Any

#: The keys every results file has (issue 15 added the second line's).
RESULT_KEYS: tuple[str, ...] = (
    "run",
    "n",
    "processes",
    "partitions",
    "broker_kind",
    "service_checkouts_per_s",
    "broker_limit_per_s",
    "store_limit_per_s",
    "lower_limit",
    "ratio",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "peak_rss_mb",
    "ledger_ok",
    "rate",
    "machine",
    "flow",
    "provider",
    "carts_per_s",
    "cpu_ms_per_cart",
    "mongo_commands_per_cart",
    "latency_ms",
    "latency_breakdown_ms",
)
FLOWS: tuple[str, ...] = ("checkout", "full")
CPU_PROCESSES: tuple[str, ...] = ("service", "broker", "store")
LATENCY_QUANTILES: tuple[str, ...] = ("p50", "p95", "p99")


def percentile(sorted_values: list[float], q: float) -> float:
    """The nearest-rank percentile of already sorted values (NaN when empty)."""
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, math.ceil(q / 100 * len(sorted_values)) - 1))
    return sorted_values[index]


def latency_summary(values_ms: Iterable[float]) -> dict[str, float | int | None]:
    """p50/p95/p99/max and the count of latencies in ms (None for no sample: JSON has no NaN)."""
    values = sorted(values_ms)
    if not values:
        return {"n": 0, "p50": None, "p95": None, "p99": None, "max": None}
    return {
        "n": len(values),
        "p50": round(percentile(values, 50), 1),
        "p95": round(percentile(values, 95), 1),
        "p99": round(percentile(values, 99), 1),
        "max": round(values[-1], 1),
    }


def stat_cpu_ticks(stat_line: str) -> int:
    """utime + stime (clock ticks) from one /proc/<pid>/stat line.

    The second field is the command name in parentheses and may itself hold spaces
    and parentheses, so fields are counted from the last ')': utime and stime are
    fields 14 and 15 of proc(5), i.e. the 12th and 13th after the name.
    """
    rest = stat_line[stat_line.rindex(")") + 2 :].split()
    return int(rest[11]) + int(rest[12])


def read_cpu_seconds(pid: int, clk_tck: int | None = None) -> float | None:
    """The CPU seconds (user + system) a live process has used; None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            line = handle.read()
    except OSError:
        return None
    ticks = clk_tck or os.sysconf("SC_CLK_TCK")
    return stat_cpu_ticks(line) / ticks


def cpu_ms_per_cart(
    before: Mapping[str, float | None],
    after: Mapping[str, float | None],
    carts: int,
) -> dict[str, float | None]:
    """CPU ms per cart of each process over a window: (after − before) / carts.

    A process read before and after; None where either reading is missing
    (an external broker or store whose process is not ours to read).
    """
    result: dict[str, float | None] = {}
    for name in before.keys() | after.keys():
        start, end = before.get(name), after.get(name)
        if start is None or end is None or carts <= 0:
            result[name] = None
        else:
            result[name] = round((end - start) * 1000 / carts, 3)
    return dict(sorted(result.items()))


def group_cpu(readings: Mapping[str, float | None]) -> dict[str, float | None]:
    """Sums `service_0`, `service_1`… into `service`; `broker` and `mongodb` (the
    store) keep one reading each. Missing readings stay None."""
    service = [v for k, v in readings.items() if k.startswith("service_")]
    return {
        "service": None if not service or None in service else sum(v for v in service if v),
        "broker": readings.get("broker"),
        "store": readings.get("mongodb"),
    }


def counts_delta(
    before: Mapping[str, list[int]], after: Mapping[str, list[int]]
) -> dict[str, list[int]]:
    """`[commands, statements, bytes written]` per command kind issued between two
    snapshots (a snapshot's entry without bytes counts none)."""
    delta: dict[str, list[int]] = {}
    for key, values in after.items():
        now = [*values, 0, 0, 0][:3]
        then = [*before.get(key, []), 0, 0, 0][:3]
        change = [n - t for n, t in zip(now, then, strict=True)]
        if any(change):
            delta[key] = change
    return delta


def shape_problems(results: Mapping[str, Any]) -> list[str]:
    """What a results file lacks or has wrong (empty: the shape issue 15 asks for)."""
    problems = [f"missing key {key!r}" for key in RESULT_KEYS if key not in results]
    if results.get("flow") not in FLOWS:
        problems.append(f"flow must be one of {FLOWS}, not {results.get('flow')!r}")
    cpu = results.get("cpu_ms_per_cart")
    if not isinstance(cpu, dict) or set(cpu) != set(CPU_PROCESSES):
        problems.append(f"cpu_ms_per_cart must be an object with keys {CPU_PROCESSES}")
    else:
        problems += [
            f"cpu_ms_per_cart.{k} is not a number or null"
            for k, v in cpu.items()
            if v is not None and not isinstance(v, int | float)
        ]
    latency = results.get("latency_ms")
    if not isinstance(latency, dict) or not latency:
        problems.append("latency_ms must be a non-empty object by event type")
    else:
        for event_type, summary in latency.items():
            if not isinstance(summary, dict) or any(q not in summary for q in LATENCY_QUANTILES):
                problems.append(f"latency_ms[{event_type!r}] lacks {LATENCY_QUANTILES}")
    for key in ("carts_per_s", "mongo_commands_per_cart", "mongo_bytes_written_per_cart"):
        value = results.get(key)
        if value is not None and not isinstance(value, int | float):
            problems.append(f"{key} must be a number or null")
    if not isinstance(results.get("ledger_ok"), bool):
        problems.append("ledger_ok must be a boolean")
    return problems


#: The service's histograms that make up the latency breakdown, as (name, label) →
#: the breakdown's key. Batch stages are wall time per batch; the record wait and a
#: provider call are per record and per call.
BREAKDOWN_SERIES: dict[tuple[str, str], str] = {
    ("payments_record_wait_seconds", ""): "record_wait",
    ("payments_batch_stage_seconds", "prefetch"): "prefetch",
    ("payments_batch_stage_seconds", "handle"): "handle",
    ("payments_batch_stage_seconds", "publish"): "publish",
    ("payments_batch_stage_seconds", "mark_sent"): "mark_sent",
    ("payments_batch_stage_seconds", "commit"): "commit",
    ("payments_provider_call_seconds", ""): "provider_call",
}


def histogram_totals(metrics_text: str) -> dict[str, list[float]]:
    """`[count, sum]` of each breakdown series in a Prometheus text page (summed over
    processes' pages by the caller, over other labels here)."""
    from prometheus_client.parser import text_string_to_metric_families

    totals: dict[str, list[float]] = {}
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            for suffix, slot in (("_count", 0), ("_sum", 1)):
                if sample.name == family.name + suffix:
                    key = BREAKDOWN_SERIES.get((family.name, sample.labels.get("stage", "")))
                    if key is not None:
                        entry = totals.setdefault(key, [0.0, 0.0])
                        entry[slot] += sample.value
    return totals


def latency_breakdown(
    before: Mapping[str, list[float]], after: Mapping[str, list[float]]
) -> dict[str, dict[str, float | int]]:
    """Per breakdown series between two scrapes: how many, and the mean in ms.

    `batches` of the `handle` stage is the number of batches; `record_wait` is per
    record: the time from the producer to the start of its batch's handling (broker,
    fetch, and waiting behind the batch before it).
    """
    out: dict[str, dict[str, float | int]] = {}
    for key, (count, total) in after.items():
        c0, s0 = before.get(key, [0.0, 0.0])
        n = round(count - c0)
        if n > 0:
            out[key] = {"n": n, "mean_ms": round((total - s0) * 1000 / n, 2)}
    return out
