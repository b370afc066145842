"""`make bench-report`: the latest `make bench` results drawn as one PNG, plus a table.

Reads the newest results files (bench/results/<run>.json, `--last` of them) and draws,
per run: throughput (carts/s through the whole flow), latency p50 with p99 above it
per outbound event type, and CPU milliseconds per cart per process (service, broker,
store) stacked. Writes the chart to bench/report.png (`--out`) and prints a Markdown
table of the same figures with the machine they were measured on, for the README.

Files written before issue 15 (no `flow` key) are read as checkout-flow runs: their
throughput and `payment.authorized` latency are drawn, their CPU (counted then over
the warm-up too) is not.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PROCESSES = ("service", "broker", "store")
COLOURS = {"service": "#1f77b4", "broker": "#ff7f0e", "store": "#2ca02c"}


def figures(result: dict[str, Any]) -> dict[str, Any]:
    """The figures a chart row needs, from a results file of any version."""
    flow = result.get("flow", "checkout")
    latency = result.get("latency_ms") or {
        "payment.authorized": {
            "p50": result.get("p50_ms"),
            "p95": result.get("p95_ms"),
            "p99": result.get("p99_ms"),
        }
    }
    rate = result.get("rate")
    provider = result.get("provider", "sandbox")
    label = f"{result['run'][4:8]}-{result['run'][8:12]}\n{flow}/{provider}\nN={result['n']:,}"
    if rate:
        label += f" @{rate:g}/s"
    return {
        "run": result["run"],
        "label": label,
        "flow": flow,
        "provider": provider,
        "broker": _broker(result.get("broker_kind")),
        "n": result["n"],
        "rate": rate,
        "carts_per_s": result.get("carts_per_s") or result.get("service_checkouts_per_s"),
        "latency_ms": latency,
        "cpu_ms_per_cart": result.get("cpu_ms_per_cart") or dict.fromkeys(PROCESSES),
        "mongo_commands_per_cart": result.get("mongo_commands_per_cart"),
        "mongo_statements_per_cart": result.get("mongo_statements_per_cart"),
        "mongo_bytes_written_per_cart": result.get("mongo_bytes_written_per_cart"),
        "ratio": result.get("ratio"),
        "ledger_ok": result.get("ledger_ok"),
        "machine": result.get("machine") or {},
        "breakdown": result.get("latency_breakdown_ms") or {},
    }


def latest(results_dir: Path, last: int) -> list[dict[str, Any]]:
    files = sorted(results_dir.glob("[0-9]*.json"))[-last:]
    return [figures(json.loads(path.read_text())) for path in files]


def _num(value: Any, digits: int = 1) -> str:
    if value is None:
        return "—"
    return f"{value:,.{digits}f}"


def _kb(size: Any) -> str:
    return "—" if size is None else f"{size / 1024:,.1f}"


def _broker(kind: str | None) -> str:
    """The broker a run was measured on, as the table names it (runs from before the
    field was written were on Tansu)."""
    if not kind or kind.startswith("tansu"):
        return "Tansu"
    if kind.startswith("apache-kafka"):
        return "Apache Kafka " + kind.removeprefix("apache-kafka-")
    return kind


def markdown(rows: list[dict[str, Any]]) -> str:
    """The README's table: one line per run, then the machine of the newest run."""
    lines = [
        "| run | flow / provider | broker | N | paced | carts/s | payment.authorized p50 / p99 ms "
        "| captured / refunded p50 ms | CPU ms/cart service / broker / store "
        "| MongoDB commands / statements per cart | MongoDB KB written per cart "
        "| ratio | ledger |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lat = row["latency_ms"]
        auth = lat.get("payment.authorized") or {}
        later = " / ".join(
            _num((lat.get(t) or {}).get("p50"), 0) for t in ("payment.captured", "payment.refunded")
        )
        cpu = " / ".join(_num(row["cpu_ms_per_cart"].get(p), 2) for p in PROCESSES)
        lines.append(
            f"| {row['run']} | {row['flow']} / {row['provider']} | {row['broker']} | {row['n']:,} "
            f"| {_num(row['rate'], 0) if row['rate'] else '—'} | {_num(row['carts_per_s'])} "
            f"| {_num(auth.get('p50'), 0)} / {_num(auth.get('p99'), 0)} "
            f"| {later if row['flow'] == 'full' else '—'} | {cpu} "
            f"| {_num(row['mongo_commands_per_cart'], 2)} / "
            f"{_num(row['mongo_statements_per_cart'], 1)} "
            f"| {_kb(row['mongo_bytes_written_per_cart'])} | {_num(row['ratio'], 2)} "
            f"| {'ok' if row['ledger_ok'] else 'FAILED'} |"
        )
    if rows:
        machine = rows[-1]["machine"]
        lines.append("")
        lines.append(
            f"Machine: {machine.get('nproc') or machine.get('cpus')} CPUs (`nproc`), "
            f"{machine.get('cpu_model', 'CPU model not recorded')}, "
            f"{machine.get('platform', '')}, Python {machine.get('python', '')}; "
            f"other processes used {machine.get('other_processes_cpu_pct', '?')} % "
            "of it during the newest run."
        )
    return "\n".join(lines)


#: The breakdown's columns: a record's wait, then a batch's stages in their order.
BREAKDOWN_COLUMNS = ("record_wait", "prefetch", "handle", "publish", "mark_sent", "commit")


def breakdown_markdown(rows: list[dict[str, Any]]) -> str:
    """Where the time goes, per run that has a breakdown: mean ms of a record's wait
    (produce → its batch starts) and of each batch stage; records per batch."""
    measured = [r for r in rows if r["breakdown"].get("handle")]
    if not measured:
        return ""
    lines = [
        "| run | paced | records per batch | "
        + " | ".join(f"{c} ms" for c in BREAKDOWN_COLUMNS)
        + " | provider call ms |",
        "|---|---|---|" + "---|" * (len(BREAKDOWN_COLUMNS) + 1),
    ]
    for row in measured:
        b = row["breakdown"]
        wait, handle = b.get("record_wait") or {}, b["handle"]
        per_batch = wait.get("n", 0) / handle["n"] if handle.get("n") else None
        cells = [_num((b.get(c) or {}).get("mean_ms")) for c in BREAKDOWN_COLUMNS]
        lines.append(
            f"| {row['run']} ({row['flow']} / {row['provider']}) "
            f"| {_num(row['rate'], 0) if row['rate'] else '—'} | {_num(per_batch)} | "
            + " | ".join(cells)
            + f" | {_num((b.get('provider_call') or {}).get('mean_ms'))} |"
        )
    return "\n".join(lines)


def draw(rows: list[dict[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    labels = [r["label"] for r in rows]
    xs = list(range(len(rows)))
    fig, (ax_t, ax_l, ax_c) = plt.subplots(1, 3, figsize=(min(24, max(13, 3.2 * len(rows))), 5))

    ax_t.bar(xs, [r["carts_per_s"] or 0 for r in rows], color="#4c72b0")
    ax_t.set_title("throughput (carts/s, whole flow)")

    event_types = sorted({t for r in rows for t in r["latency_ms"]})
    width = 0.8 / max(1, len(event_types))
    for k, event_type in enumerate(event_types):
        offsets = [x - 0.4 + width * (k + 0.5) for x in xs]
        p50 = [(r["latency_ms"].get(event_type) or {}).get("p50") or 0 for r in rows]
        p99 = [(r["latency_ms"].get(event_type) or {}).get("p99") or 0 for r in rows]
        ax_l.bar(offsets, p50, width, label=f"{event_type} p50")
        ax_l.scatter(offsets, p99, marker="_", s=200, color="black")
    ax_l.set_yscale("log")
    ax_l.set_title("latency, cause produced → read (ms)\np50 bars, p99 ticks")
    ax_l.legend(fontsize=7)

    bottom = [0.0] * len(rows)
    for process in PROCESSES:
        values = [r["cpu_ms_per_cart"].get(process) or 0.0 for r in rows]
        ax_c.bar(xs, values, bottom=bottom, label=process, color=COLOURS[process])
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax_c.set_title("CPU ms per cart, measured window")
    ax_c.legend(fontsize=8)

    for ax in (ax_t, ax_l, ax_c):
        ax.set_xticks(xs)
        ax.set_xticklabels(labels, fontsize=7)
    machine = rows[-1]["machine"] if rows else {}
    fig.suptitle(
        f"make bench — {machine.get('nproc') or machine.get('cpus', '?')} CPUs, "
        f"{machine.get('cpu_model', '')} (shared machine: figures are noisy)",
        fontsize=10,
    )
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    parser.add_argument("--last", type=int, default=6, help="how many of the newest runs")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "report.png")
    args = parser.parse_args(argv)
    rows = latest(args.results_dir, args.last)
    if not rows:
        print(f"no results in {args.results_dir}: run `make bench` first", file=sys.stderr)
        return 1
    draw(rows, args.out)
    print(markdown(rows))
    breakdown = breakdown_markdown(rows)
    if breakdown:
        print("\nWhere the time goes (means, ms):\n")
        print(breakdown)
    print(f"\nchart written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
