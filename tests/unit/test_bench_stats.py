"""The arithmetic behind `make bench`'s figures (bench/stats.py) and its JSON's shape.

No timing here: the speed goals are figures in `make bench`'s JSON, never assertions.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time

import bson
import pytest
from pymongo import monitoring

from bench.mongo_ops import CommandCounter, add_counts, bytes_written, per_checkout
from bench.report import breakdown_markdown, figures, markdown
from bench.run import Flow, parse_args, results_document
from bench.stats import (
    CPU_PROCESSES,
    counts_delta,
    cpu_ms_per_cart,
    group_cpu,
    histogram_totals,
    latency_breakdown,
    latency_summary,
    percentile,
    read_cpu_seconds,
    shape_problems,
    stat_cpu_ticks,
)


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert [percentile(values, q) for q in (50, 95, 99, 100)] == [50.0, 95.0, 99.0, 100.0]
    assert percentile([7.0, 9.0], 50) == 7.0
    assert percentile([7.0, 9.0], 51) == 9.0
    assert percentile([3.0], 99) == 3.0
    assert math.isnan(percentile([], 50))


def test_latency_summary_sorts_and_rounds() -> None:
    summary = latency_summary([30.04, 10.0, 20.0, 40.0])
    assert summary == {"n": 4, "p50": 20.0, "p95": 40.0, "p99": 40.0, "max": 40.0}
    # JSON has no NaN: an event type without a sample reads null.
    assert latency_summary([]) == {"n": 0, "p50": None, "p95": None, "p99": None, "max": None}


def stat_line(comm: str, utime: int, stime: int) -> str:
    # proc(5): pid (comm) state ppid pgrp session tty_nr tpgid flags minflt cminflt
    # majflt cmajflt utime stime cutime cstime priority nice ...
    after = ["S", "1", "2", "3", "0", "-1", "4194560", "11", "0", "0", "0"]
    after += [str(utime), str(stime), "999", "888", "20", "0", "5"]
    return f"4242 ({comm}) " + " ".join(after) + "\n"


@pytest.mark.parametrize("comm", ["python", "tansu (broker) x", "a) S 1 2", ")"])
def test_cpu_ticks_are_utime_plus_stime_whatever_the_command_name(comm: str) -> None:
    # Children's times (cutime, cstime) are not the process's own and stay out.
    assert stat_cpu_ticks(stat_line(comm, 1234, 56)) == 1290


def test_read_cpu_seconds_agrees_with_the_process_own_accounting() -> None:
    before = os.times()
    seconds = read_cpu_seconds(os.getpid())
    after = os.times()
    assert seconds is not None
    tick = 1 / os.sysconf("SC_CLK_TCK")
    assert before.user + before.system - 2 * tick <= seconds <= after.user + after.system + tick


def test_read_cpu_seconds_of_a_process_that_is_gone_is_none() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert read_cpu_seconds(child.pid) is None


def test_cpu_ms_per_cart_is_the_window_difference_over_the_carts() -> None:
    before = {"service_0": 10.0, "service_1": 4.0, "broker": 2.0, "mongodb": None}
    after = {"service_0": 13.0, "service_1": 5.0, "broker": 2.5, "mongodb": 9.0}
    per_cart = cpu_ms_per_cart(before, after, 1000)
    assert per_cart == {"broker": 0.5, "mongodb": None, "service_0": 3.0, "service_1": 1.0}
    # The service's processes add up; the store is nx-27017's process (`mongodb`).
    assert group_cpu(per_cart) == {"service": 4.0, "broker": 0.5, "store": None}
    assert set(group_cpu({})) == set(CPU_PROCESSES)
    assert group_cpu({}) == {"service": None, "broker": None, "store": None}


def test_command_counts_of_the_window_are_the_difference_of_two_snapshots() -> None:
    before = {"find a": [3, 3], "insert b": [1, 10]}
    after = {"find a": [5, 5], "insert b": [1, 10], "update c": [2, 40]}
    assert counts_delta(before, after) == {"find a": [2, 2, 0], "update c": [2, 40, 0]}
    # With the bytes written (a third number; older snapshots have none).
    before = {"find a": [3, 3, 0], "update c": [1, 1]}
    after = {"find a": [4, 4, 0], "update c": [3, 5, 900]}
    assert counts_delta(before, after) == {"find a": [1, 1, 0], "update c": [2, 4, 900]}


def test_bytes_written_are_the_bson_size_of_the_write_commands() -> None:
    counter = CommandCounter()
    update = {
        "update": "payment_collections",
        "ordered": True,
        "updates": [{"q": {"_id": "a", "version": 1}, "u": {"$set": {"state.x": "y" * 100}}}],
    }
    find = {"find": "payment_collections", "filter": {"cart_id": "c"}}
    for request_id, command in enumerate((update, find, update)):
        counter.started(
            monitoring.CommandStartedEvent(command, "db", request_id, ("localhost", 1), request_id)
        )
    counts = counter.snapshot()
    size = len(bson.encode(update))
    assert counts["update payment_collections"] == [2, 2, 2 * size]
    assert counts["find payment_collections"] == [1, 1, 0]
    assert bytes_written(counts) == 2 * size
    per_cart = per_checkout(counts, 2)
    assert per_cart["update payment_collections"]["bytes_written"] == size
    # Files written before bytes were counted add up too.
    total: dict[str, list[int]] = {}
    add_counts(total, {"find a": [1, 1]})
    add_counts(total, counts)
    assert total["find a"] == [1, 1, 0] and bytes_written(total) == 2 * size


def full_flow_document() -> dict[str, object]:
    args = parse_args(["--flow", "full", "--n", "4", "--rate", "50"])
    flow = Flow(
        checkouts_per_s=40.0,
        elapsed_s=0.2,
        latencies_ms=[5.0, 6.0, 7.0, 8.0],
        produce_s=0.08,
        carts_per_s=20.0,
        latency_by_type={
            "payment.authorized": [5.0, 6.0, 7.0, 8.0],
            "payment.captured": [3.0, 3.0, 4.0, 4.0],
            "payment.refunded": [2.0, 2.0, 2.0, 9.0],
        },
    )
    service = {
        "machine": {"elapsed_s": 0.2, "cpu_s": {"service_0": 0.01}},
        "cpu_ms_per_cart": {"service": 1.5, "broker": 0.5, "store": None},
        "mongo_commands_per_cart": 2.25,
        "mongo_statements_per_cart": 6.0,
        "mongo_bytes_written_per_cart": 7373,
        "peak_rss_mb": 90.0,
        "ledger_ok": True,
        "ledger": {"carts": 4},
        "latency_breakdown_ms": {"handle": {"n": 2, "mean_ms": 3.5}},
    }
    return results_document(args, "20261203120000", flow, service, None, None, 1.0)


def test_a_full_flow_run_writes_every_key_issue_15_names() -> None:
    document = full_flow_document()
    assert shape_problems(document) == []
    assert document["flow"] == "full"
    assert document["provider"] == "manual"  # the full flow's default
    assert document["rate"] == 50.0
    assert document["carts_per_s"] == 20.0
    assert document["cpu_ms_per_cart"] == {"service": 1.5, "broker": 0.5, "store": None}
    assert document["latency_ms"]["payment.refunded"] == {  # type: ignore[index]
        "n": 4,
        "p50": 2.0,
        "p95": 9.0,
        "p99": 9.0,
        "max": 9.0,
    }
    # The checkout's latency stays where earlier results files had it.
    assert (document["p50_ms"], document["p99_ms"]) == (6.0, 8.0)
    # The broker and store limits model the checkout flow: not measured here.
    assert document["ratio"] is None
    assert document["latency_breakdown_ms"] == {"handle": {"n": 2, "mean_ms": 3.5}}


def test_shape_problems_names_what_is_missing_or_wrong() -> None:
    document = full_flow_document()
    del document["carts_per_s"]
    document["cpu_ms_per_cart"] = {"service": 1.0}
    document["latency_ms"] = {"payment.authorized": {"p50": 1.0}}
    document["flow"] = "half"
    problems = shape_problems(document)
    assert "missing key 'carts_per_s'" in problems
    assert any(p.startswith("cpu_ms_per_cart must be") for p in problems)
    assert any(p.startswith("latency_ms['payment.authorized'] lacks") for p in problems)
    assert any(p.startswith("flow must be") for p in problems)


def test_the_report_reads_new_and_pre_issue_15_results() -> None:
    new = figures(full_flow_document())
    old = figures(
        {"run": "20261203100812", "n": 2000, "service_checkouts_per_s": 159.0, "p50_ms": 7245.9}
        | {"p95_ms": 11756.7, "p99_ms": 12521.1, "ratio": 0.647, "ledger_ok": True}
    )
    assert (new["flow"], new["carts_per_s"]) == ("full", 20.0)
    assert (old["flow"], old["carts_per_s"]) == ("checkout", 159.0)
    assert old["latency_ms"]["payment.authorized"]["p99"] == 12521.1
    assert old["cpu_ms_per_cart"] == {"service": None, "broker": None, "store": None}
    table = markdown([old, new]).splitlines()
    assert table[2].startswith("| 20261203100812 | checkout / sandbox | Tansu | 2,000 |")
    assert "| 1.50 / 0.50 / — |" in table[3]
    # MongoDB: commands / statements, then the kilobytes written, per cart.
    assert "| 2.25 / 6.0 | 7.2 |" in table[3]
    assert "| — / — | — |" in table[2]


def test_the_latency_breakdown_reads_the_services_own_metrics_page() -> None:
    """The names the bench parses are the ones the service serves on /metrics."""
    from service.metrics import Metrics

    metrics = Metrics()
    before = histogram_totals(metrics.render().decode())
    now_ms = time.time() * 1000
    metrics.observe_record_waits([now_ms - 40, now_ms - 20, None])
    metrics.batch_stage.labels("handle").observe(0.003)
    metrics.batch_stage.labels("handle").observe(0.005)
    metrics.batch_stage.labels("commit").observe(0.002)
    after = histogram_totals(metrics.render().decode())
    breakdown = latency_breakdown(before, after)
    assert set(breakdown) == {"record_wait", "handle", "commit"}
    assert breakdown["handle"] == {"n": 2, "mean_ms": 4.0}
    assert breakdown["commit"] == {"n": 1, "mean_ms": 2.0}
    # Two records had a producer's timestamp; the one without is not counted.
    assert breakdown["record_wait"]["n"] == 2
    assert 25 <= breakdown["record_wait"]["mean_ms"] < 1000


def test_a_stage_clock_times_laps_and_steps_awaited_together() -> None:
    import asyncio

    from service.metrics import Metrics

    metrics = Metrics()
    clock = metrics.batch_clock()
    clock.lap("prefetch")

    async def finish() -> None:
        await asyncio.gather(
            clock.timed("mark_sent", asyncio.sleep(0)), clock.timed("commit", asyncio.sleep(0))
        )

    asyncio.run(finish())
    totals = histogram_totals(metrics.render().decode())
    counted = {k: v[0] for k, v in totals.items() if v[0]}
    assert counted == {"prefetch": 1, "mark_sent": 1, "commit": 1}


def test_the_report_tables_the_breakdown_of_runs_that_have_one() -> None:
    document = full_flow_document()
    document["latency_breakdown_ms"] = {
        "record_wait": {"n": 8, "mean_ms": 30.0},
        "handle": {"n": 2, "mean_ms": 3.5},
        "commit": {"n": 2, "mean_ms": 1.25},
    }
    table = breakdown_markdown([figures(document)]).splitlines()
    assert table[0].startswith("| run | paced | records per batch | record_wait ms |")
    # 8 records in 2 batches; stages not measured are shown as such.
    assert table[2] == (
        "| 20261203120000 (full / manual) | 50 | 4.0 | 30.0 | — | 3.5 | — | — | 1.2 | — |"
    )
    old = {"run": "20261203100812", "n": 2000, "service_checkouts_per_s": 159.0}
    assert breakdown_markdown([figures(old)]) == ""


def test_record_waits_from_hostile_timestamps_stay_finite_and_never_negative() -> None:
    """A producer's CreateTime is input: far future (a skewed clock), the largest
    long, Kafka's -1 for none, the epoch. None of them may break the histogram."""
    from service.metrics import Metrics

    metrics = Metrics()
    now_ms = int(time.time() * 1000)
    metrics.observe_record_waits([now_ms + 3_600_000, 2**63 - 1, -1, None, 0])
    count, total = histogram_totals(metrics.render().decode())["record_wait"]
    # The future ones count as no wait, -1 and None are not counted, the epoch is old.
    assert count == 3
    assert math.isfinite(total) and total >= now_ms / 1000 - 5
