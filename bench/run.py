"""`make bench`: the service's throughput against its own broker's and store's limits.

One run measures, on the same broker and MongoDB server:

1. the service: 1 or 2 `payments run` subprocesses (one consumer group) fed N carts,
   each a `cart.updated` then a `checkout.completed` (sandbox, `pm_card_visa`),
   over topics with many partitions; checkouts/s from the first produce to the last
   `payment.authorized` consumed (by a separate consumer), latency p50/p95/p99 from
   each checkout's produce to its `payment.authorized`, peak RSS of the service
   processes, and the MongoDB commands they issued (pymongo command monitoring);
2. the broker limit: the same messages through a bare aiokafka consume → decode →
   produce loop (as many loop processes as service processes), measured the same way;
3. the store limit: the MongoDB commands the service's code issues per checkout
   (captured by a calibration run of its own batch processor), replayed for N new
   carts with the same driver and concurrency, without Kafka;

then the ratio of (1) to the lower of (2) and (3), and checks the sandbox ledger
holds exactly one `authorize` entry, `authorized`, per cart. Prints a table and
writes `bench/results/<timestamp>.json`.

With `--flow full` (issue 15) each cart goes the whole way a shop takes it: after
its `payment.authorized` is read, a signed `admin.payment.capture` of the whole
amount; after its `payment.captured` is read, a signed `admin.payment.refund` of a
third (manual provider unless `--provider sandbox`). The limits (2) and (3) model
the checkout flow and are skipped. Both flows report, over a measured window that
opens after the warm-up and closes when the last cart's last event is read: CPU ms
per cart of the service, broker and store processes (/proc/<pid>/stat), MongoDB
commands per cart (counted in the service processes, bench/service_proc.py),
carts/s, p50/p95/p99 per outbound event type from the produce of its cause to its
read, and `ledger_ok` (what was asked happened once per cart: the sandbox's ledger,
and the service's own books in the full flow or with the manual provider).

    make bench                        # N = 20,000, one service process
    make bench ARGS="--flow full --n 5000"                          # service CPU per cart
    make bench ARGS="--flow full --provider sandbox --rate 50"      # latency, paced
    make bench ARGS=--quick           # N = 2,000, under a minute
    make bench ARGS="--processes 2"
    make bench ARGS="--profile"       # + pyinstrument profile of each service process
    make bench ARGS="--kafka-jvm"     # on Apache Kafka (JVM, started here) instead of Tansu
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402
from pymongo import AsyncMongoClient  # noqa: E402

from bench.mongo_ops import add_counts, bytes_written, per_checkout, totals  # noqa: E402
from bench.stats import (  # noqa: E402
    counts_delta,
    cpu_ms_per_cart,
    group_cpu,
    histogram_totals,
    latency_breakdown,
    latency_summary,
    percentile,
    read_cpu_seconds,
    shape_problems,
)
from bench.workload import (  # noqa: E402
    ADMIN_KEY,
    CAPTURED,
    REFUNDED,
    Cart,
    FollowUps,
    Observer,
    build_carts,
    new_producer,
    produce,
    warmup_carts,
)
from schemas.topics import ALL_TOPICS, DLQ_TOPIC, topic_for  # noqa: E402
from service.adapters.stored_document import log_entries, read_document  # noqa: E402
from service.embedded import EmbeddedKafka, EmbeddedMongo, ensure_topics, free_port  # noqa: E402
from tests.support.real_servers import JvmKafka, kafka_version  # noqa: E402

RESULTS = ROOT / "bench" / "results"
AUTHORIZED = "payment.authorized"
SERVICE_DEFAULTS = {"PAYMENTS_BATCH_MAX_RECORDS": "500", "PAYMENTS_MAX_CONCURRENCY": "256"}


# -- helpers ---------------------------------------------------------------------------


def cpu_model() -> str:
    """The CPU model as /proc/cpuinfo names it (the platform's name elsewhere)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or "unknown"


def log_tail(path: Path, limit: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-limit:]
    except OSError:
        return "<no log>"


class BenchError(RuntimeError):
    pass


@dataclass
class Sampler:
    """Samples RSS of the measured processes and CPU of ours and of the whole machine."""

    measured: list[psutil.Process]
    infra: dict[str, psutil.Process]
    interval: float = 0.2
    peak_total: int = 0
    peak_each: list[int] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None
    _cpu0: dict[str, float | None] = field(default_factory=dict)
    _sys0: Any = None
    _t0: float = 0.0
    _load0: tuple[float, float, float] = (0.0, 0.0, 0.0)

    cpu_before: dict[str, float | None] = field(default_factory=dict)
    cpu_after: dict[str, float | None] = field(default_factory=dict)

    def _ours(self) -> dict[str, float | None]:
        """utime + stime of each process, from /proc/<pid>/stat (None: gone)."""
        cpu = {f"service_{i}": read_cpu_seconds(p.pid) for i, p in enumerate(self.measured)}
        cpu.update({name: read_cpu_seconds(p.pid) for name, p in self.infra.items()})
        cpu["bench_driver"] = read_cpu_seconds(os.getpid())
        return cpu

    def start(self) -> None:
        """The measured window opens (after the warm-up)."""
        self.peak_each = [0] * len(self.measured)
        self._cpu0 = self.cpu_before = self._ours()
        self._sys0 = psutil.cpu_times()
        self._t0 = time.perf_counter()
        self._load0 = os.getloadavg()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            total = 0
            for i, proc in enumerate(self.measured):
                with contextlib.suppress(psutil.Error):
                    rss = proc.memory_info().rss
                    self.peak_each[i] = max(self.peak_each[i], rss)
                    total += rss
            self.peak_total = max(self.peak_total, total)
            await asyncio.sleep(self.interval)

    async def stop(self) -> dict[str, Any]:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        elapsed = time.perf_counter() - self._t0
        cpu1 = self.cpu_after = self._ours()
        sys1 = psutil.cpu_times()
        busy = sum(
            getattr(sys1, f) - getattr(self._sys0, f)
            for f in ("user", "system", "nice", "irq", "softirq", "steal")
            if hasattr(sys1, f)
        )
        ours: dict[str, float | None] = {}
        for k, after in cpu1.items():
            before = self._cpu0.get(k)
            ours[k] = None if after is None or before is None else round(after - before, 2)
        cores = psutil.cpu_count() or 1
        other = max(0.0, busy - sum(v for v in ours.values() if v))
        return {
            "elapsed_s": round(elapsed, 2),
            "cpu_s": ours,
            "machine_busy_pct": round(100 * busy / (elapsed * cores), 1),
            "other_processes_cpu_pct": round(100 * other / (elapsed * cores), 1),
            "loadavg_before": [round(x, 2) for x in self._load0],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        }


# -- subprocesses ----------------------------------------------------------------------


def _die_with_parent() -> None:
    """In the child: SIGKILL when the benchmark process dies (its servers die too)."""
    import ctypes
    import ctypes.util

    libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG


def spawn(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """A child in its own session (Ctrl-C reaches only the benchmark, which stops it
    gracefully) that is stopped anyway if the benchmark is killed."""
    handle = log.open("wb")
    try:
        return subprocess.Popen(
            cmd,
            env=env,
            cwd=ROOT,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
    finally:
        handle.close()


def terminate(procs: list[subprocess.Popen[bytes]], grace: float = 30.0) -> None:
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()


async def wait_ready(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    url = f"http://127.0.0.1:{port}/readyz"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"service exited with {proc.returncode}:\n{log_tail(log)}")

        def probe() -> int:
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    return int(response.status)
            except Exception:
                return 0

        if await asyncio.to_thread(probe) == 200:
            return
        await asyncio.sleep(0.2)
    raise BenchError(f"service not ready after {timeout}s:\n{log_tail(log)}")


async def wait_group_stable(bootstrap: str, group: str, members: int, timeout: float = 30) -> bool:
    """Wait until the consumer group has `members` members and is Stable (if the
    broker answers DescribeGroups; else False and the caller relies on the warm-up)."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="bench-admin")
    await admin.start()
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                described = await admin.describe_consumer_groups([group])
            except Exception:
                return False
            for response in described:
                for entry in response.groups:
                    state, group_members = entry[2], entry[5]
                    if state == "Stable" and len(group_members) == members:
                        return True
            await asyncio.sleep(0.3)
        return False
    finally:
        await admin.close()


# -- the three measurements ------------------------------------------------------------


@dataclass
class Flow:
    """One measured flow: throughput and latency of N carts through consumers."""

    checkouts_per_s: float
    elapsed_s: float
    latencies_ms: list[float]
    produce_s: float
    #: Carts whose last event (`payment.authorized`, or `payment.refunded` in the
    #: full flow) was read, per second from the first produce.
    carts_per_s: float = 0.0
    #: Outbound event type → latencies (ms) from the produce of its cause to the read.
    latency_by_type: dict[str, list[float]] = field(default_factory=dict)

    def summary(self) -> dict[str, float]:
        lat = self.latencies_ms
        return {
            "checkouts_per_s": round(self.checkouts_per_s, 1),
            "carts_per_s": round(self.carts_per_s, 1),
            "elapsed_s": round(self.elapsed_s, 2),
            "produce_s": round(self.produce_s, 2),
            "p50_ms": round(percentile(lat, 50), 1),
            "p95_ms": round(percentile(lat, 95), 1),
            "p99_ms": round(percentile(lat, 99), 1),
            "max_ms": round(lat[-1], 1) if lat else float("nan"),
        }


@dataclass
class Window:
    """The measured window: opened once the warm-up carts are through, closed when the
    last measured cart's last event is read. CPU time and MongoDB commands are counted
    over it only (the warm-up, drain and shutdown are left out)."""

    sampler: Sampler
    procs: list[subprocess.Popen[bytes]]
    ops_files: list[Path]
    machine: dict[str, Any] | None = None
    ops_before: list[dict[str, list[int]]] | None = None
    ops_after: list[dict[str, list[int]]] | None = None
    #: Each service process's `/metrics`, read at both ends for the latency breakdown.
    metrics_urls: list[str] = field(default_factory=list)
    stages_before: dict[str, list[float]] | None = None
    stages_after: dict[str, list[float]] | None = None

    async def open(self) -> None:
        self.ops_before = await mark_ops(self.procs, self.ops_files, 1)
        self.stages_before = await scrape_stages(self.metrics_urls)
        self.sampler.start()

    async def close(self) -> None:
        self.machine = await self.sampler.stop()
        self.stages_after = await scrape_stages(self.metrics_urls)
        self.ops_after = await mark_ops(self.procs, self.ops_files, 2)

    def breakdown(self) -> dict[str, dict[str, float | int]] | None:
        """Where a record's time went in the window (see `bench.stats.latency_breakdown`)."""
        if self.stages_before is None or self.stages_after is None:
            return None
        return latency_breakdown(self.stages_before, self.stages_after)

    def ops(self) -> dict[str, list[int]] | None:
        """The MongoDB commands the service processes issued in the window."""
        if self.ops_before is None or self.ops_after is None:
            return None
        total: dict[str, list[int]] = {}
        for before, after in zip(self.ops_before, self.ops_after, strict=True):
            add_counts(total, counts_delta(before, after))
        return total


async def scrape_stages(urls: list[str]) -> dict[str, list[float]] | None:
    """The breakdown histograms' totals over all service processes; None if one of
    them does not answer."""

    def read(url: str) -> str:
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read().decode())

    totals: dict[str, list[float]] = {}
    for url in urls:
        try:
            text = await asyncio.to_thread(read, url)
        except OSError:
            return None
        for key, (count, seconds) in histogram_totals(text).items():
            entry = totals.setdefault(key, [0.0, 0.0])
            entry[0] += count
            entry[1] += seconds
    return totals


async def mark_ops(
    procs: list[subprocess.Popen[bytes]], ops_files: list[Path], n: int, timeout: float = 10
) -> list[dict[str, list[int]]] | None:
    """Ask every service process for its command counts so far (SIGUSR1, see
    bench/service_proc.py); None if one does not answer in time."""
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGUSR1)
    snapshots = []
    deadline = time.monotonic() + timeout
    for path in ops_files:
        marked = path.with_name(f"{path.name}.{n}")
        while not marked.exists():
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(0.02)
        snapshots.append(json.loads(marked.read_text()))
    return snapshots


async def drive(
    bootstrap: str,
    prefix: str,
    observer: Observer,
    warm: list[Cart],
    carts: list[Cart],
    args: argparse.Namespace,
    label: str,
    *,
    full: bool = False,
    window: Window | None = None,
) -> Flow:
    """Warm up, then produce the N carts and wait for the last event of each.

    In the full flow a `FollowUps` answers each `payment.authorized` with a capture
    and each `payment.captured` with a refund (warm-up carts too), and a cart is
    done when its `payment.refunded` is read.
    """
    last = REFUNDED if full else AUTHORIZED
    producer = await new_producer(bootstrap)
    followups: FollowUps | None = None
    if full:
        followups = FollowUps(producer, prefix, {c.cart_id: c for c in (*warm, *carts)})
        observer.on_record = followups.on_record
        followups.start()
    try:
        await produce(producer, prefix, warm)
        if not await observer.wait_for(
            prefix + last, [c.cart_id for c in warm], 120, stall_timeout=60
        ):
            raise BenchError(f"{label}: warm-up carts did not all reach {last}")
        if window is not None:
            await window.open()
        sent_at: dict[str, float] = {}
        print(f"{label}: producing {len(carts)} carts …", flush=True)
        start, produced = await produce(producer, prefix, carts, rate=args.rate, sent_at=sent_at)
        ok = await observer.wait_for(
            prefix + last,
            [c.cart_id for c in carts],
            args.timeout,
            stall_timeout=60,
            progress=True,
        )
        if window is not None:
            await window.close()
        arrivals = observer.arrivals.get(prefix + last, {})
        if not ok:
            got = sum(1 for c in carts if c.cart_id in arrivals)
            raise BenchError(f"{label}: only {got}/{len(carts)} carts reached {last}")
    finally:
        try:
            if followups is not None:
                await followups.stop()
        finally:
            await producer.stop()
    causes = {AUTHORIZED: sent_at}
    if followups is not None:
        causes.update(followups.sent_at)
    by_type = {
        event_type: sorted(
            (observer.arrivals[prefix + event_type][c.cart_id] - caused[c.cart_id]) * 1000
            for c in carts
        )
        for event_type, caused in causes.items()
    }
    authorized_end = max(observer.arrivals[prefix + AUTHORIZED][c.cart_id] for c in carts)
    end = max(arrivals[c.cart_id] for c in carts)
    return Flow(
        len(carts) / (authorized_end - start),
        end - start,
        by_type[AUTHORIZED],
        produced - start,
        carts_per_s=len(carts) / (end - start),
        latency_by_type=by_type,
    )


async def measure_service(
    args: argparse.Namespace,
    bootstrap: str,
    mongodb_url: str,
    run: str,
    carts: list[Cart],
    warm: list[Cart],
    infra_procs: dict[str, psutil.Process],
    workdir: Path,
) -> dict[str, Any]:
    prefix, database, group = f"bench{run}.", f"bench_{run}", f"bench-{run}"
    await ensure_topics(bootstrap, [topic_for(t, prefix) for t in ALL_TOPICS], args.partitions)
    full = args.flow == "full"
    outbound = [AUTHORIZED, "payment.failed", DLQ_TOPIC] + ([CAPTURED, REFUNDED] if full else [])
    observer = Observer(bootstrap, [prefix + t for t in outbound], f"bench-observer-{run}")
    await observer.start()
    procs: list[subprocess.Popen[bytes]] = []
    ops_files: list[Path] = []
    metrics_urls: list[str] = []
    logs, profiles = [], []
    window: Window | None = None
    try:
        for i in range(args.processes):
            port = free_port()
            env = {
                **os.environ,
                **service_env(args),
                "PAYMENTS_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                "PAYMENTS_MONGODB_URL": mongodb_url,
                "PAYMENTS_MONGODB_DATABASE": database,
                "PAYMENTS_TOPIC_PREFIX": prefix,
                "PAYMENTS_TOPIC_PARTITIONS": str(args.partitions),
                "PAYMENTS_CONSUMER_GROUP": group,
                # The full flow's commands are signed and checked, as in production.
                "PAYMENTS_ADMIN_SIGNATURE_REQUIRED": "true" if full else "false",
                "PAYMENTS_ADMIN_KEYS": json.dumps({ADMIN_KEY[0]: ADMIN_KEY[1]}),
                "PAYMENTS_HTTP_HOST": "127.0.0.1",
                "PAYMENTS_HTTP_PORT": str(port),
                "BENCH_OPS_FILE": str(workdir / f"ops-{i}.json"),
            }
            if args.profile:
                profile = RESULTS / f"{run}.profile-{i}.txt"
                env["BENCH_PROFILE"] = str(profile)
                profiles.append(str(profile))
            log = workdir / f"service-{i}.log"
            procs.append(spawn([sys.executable, "bench/service_proc.py"], env, log))
            metrics_urls.append(f"http://127.0.0.1:{port}/metrics")
            ops_files.append(Path(env["BENCH_OPS_FILE"]))
            logs.append(log)
            await wait_ready(port, procs[-1], log, 60)
        stable = await wait_group_stable(bootstrap, group, args.processes)
        sampler = Sampler([psutil.Process(p.pid) for p in procs], infra_procs)
        window = Window(sampler, procs, ops_files, metrics_urls=metrics_urls)
        try:
            flow = await drive(
                bootstrap, prefix, observer, warm, carts, args, "service", full=full, window=window
            )
        finally:
            if window.machine is None and sampler._task is not None:
                await sampler.stop()
        machine = window.machine or {}
        if args.processes > 1 and not stable:
            stable = await wait_group_stable(bootstrap, group, args.processes, timeout=1)
        failed = observer.count(prefix + "payment.failed")
        dead = observer.count(prefix + DLQ_TOPIC)
        duplicates = observer.duplicates
        out_size = observer.mean_size(prefix + AUTHORIZED)
    except BenchError:
        for log in logs:
            print(f"--- {log.name}:\n{log_tail(log)}", file=sys.stderr)
        raise
    finally:
        await observer.stop()
        await asyncio.to_thread(terminate, procs)
    counts: dict[str, list[int]] = {}
    for path in ops_files:
        with contextlib.suppress(OSError, ValueError):
            add_counts(counts, json.loads(path.read_text()))
    ledger_ok, ledger_detail = await check_ledger(
        mongodb_url, database, [*warm, *carts], full=full, provider=args.provider
    )
    checkout_first = await checkout_first_share(mongodb_url, database, carts)
    handled = len(carts) + len(warm)
    commands, statements = totals(counts)
    window_ops = window.ops() if window is not None else None
    cpu = group_cpu(
        cpu_ms_per_cart(sampler.cpu_before, sampler.cpu_after, len(carts))
        if sampler.cpu_after
        else {}
    )
    return {
        "flow": flow,
        "machine": machine,
        "cpu_ms_per_cart": {k: None if v is None else round(v, 3) for k, v in cpu.items()},
        "mongo_commands_per_cart": round(totals(window_ops)[0] / len(carts), 2)
        if window_ops is not None
        else None,
        "mongo_statements_per_cart": round(totals(window_ops)[1] / len(carts), 2)
        if window_ops is not None
        else None,
        # The BSON size of the write commands (documents, updates, their filters).
        "mongo_bytes_written_per_cart": round(bytes_written(window_ops) / len(carts))
        if window_ops is not None
        else None,
        "mongo_ops_per_cart": per_checkout(window_ops, len(carts)) if window_ops else None,
        "latency_breakdown_ms": window.breakdown() if window is not None else None,
        "peak_rss_mb": round(sampler.peak_total / 2**20, 1),
        "peak_rss_mb_per_process": [round(x / 2**20, 1) for x in sampler.peak_each],
        "group_stable_before_timing": stable,
        "payment_failed": failed,
        "dead_letters": dead,
        "duplicate_outbound": duplicates,
        "authorized_value_bytes": out_size,
        "ledger_ok": ledger_ok,
        "ledger": ledger_detail,
        "mongo_commands_per_checkout": round(commands / handled, 2),
        "mongo_statements_per_checkout": round(statements / handled, 2),
        "mongo_ops": per_checkout(counts, handled),
        "checkout_first_share": checkout_first,
        "profiles": profiles,
        "database": database,
    }


async def check_ledger(
    url: str, database: str, carts: list[Cart], *, full: bool, provider: str
) -> tuple[bool, dict[str, Any]]:
    """Whether what was asked happened exactly once per cart.

    The sandbox keeps a ledger of what it did (one `authorize` entry, `authorized`,
    per cart; in the full flow captures summing to the amount and refunds to the
    part refunded). The manual provider keeps none (nobody to ask), so there, and
    in the full flow with either provider, the service's own books are read too:
    one payment per cart, of the cart's amount, with the captured and refunded
    totals asked for.
    """
    wanted = {c.cart_id: c for c in carts}
    expected = {
        c.cart_id: (c.amount, c.amount if full else 0, c.refund_amount if full else 0)
        for c in carts
    }
    detail: dict[str, Any] = {"carts": len(wanted)}
    ok = True
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url)
    try:
        db = client[database]
        if provider == "sandbox":
            per_cart: dict[str, dict[str, list[tuple[str, int]]]] = {}
            async for doc in db["sandbox_ledger"].find(
                {}, {"cart_id": 1, "operation": 1, "outcome": 1, "amount": 1}
            ):
                ops = per_cart.setdefault(str(doc.get("cart_id")), {})
                ops.setdefault(str(doc.get("operation")), []).append(
                    (str(doc.get("outcome")), int(doc.get("amount") or 0))
                )
            authorized = sum(
                1
                for c in wanted
                if [o for o, _ in per_cart.get(c, {}).get("authorize", [])] == ["authorized"]
            )
            sums_ok = sum(
                1
                for c, (_, captured, refunded) in expected.items()
                if sum(a for _, a in per_cart.get(c, {}).get("capture", [])) == captured
                and sum(a for _, a in per_cart.get(c, {}).get("refund", [])) == refunded
            )
            detail["sandbox_ledger"] = {
                "exactly_one_authorized": authorized,
                "captured_and_refunded_as_asked": sums_ok,
                "missing": sum(1 for c in wanted if c not in per_cart),
                "unexpected_carts": sum(1 for c in per_cart if c not in wanted),
            }
            ok = (
                authorized == sums_ok == len(wanted)
                and detail["sandbox_ledger"]["unexpected_carts"] == 0
            )
        if full or provider != "sandbox":
            books = await check_books(db, expected)
            detail["service_books"] = books
            ok = ok and books["as_asked"] == len(wanted)
    finally:
        await client.close()
    return ok, detail


async def check_books(db: Any, expected: dict[str, tuple[int, int, int]]) -> dict[str, int]:
    """The service's payment per cart against (amount, captured, refunded) asked."""
    as_asked = no_payment = wrong = 0
    seen: set[str] = set()
    # The run's database holds only its carts: read all rather than a 20,000-id `$in`.
    async for doc in db["payment_collections"].find({}):
        cart_id = str(doc.get("cart_id"))
        if cart_id not in expected:
            continue
        seen.add(cart_id)
        payment = read_document(doc)[0].payment
        if payment is None:
            no_payment += 1
        elif (payment.amount, payment.captured_total, payment.refunded_total) == expected[cart_id]:
            as_asked += 1
        else:
            wrong += 1
    return {
        "as_asked": as_asked,
        "no_payment": no_payment,
        "other_amounts": wrong,
        "no_collection": len(expected) - len(seen),
    }


async def checkout_first_share(url: str, database: str, carts: list[Cart]) -> float:
    """The share of carts whose checkout the service handled before their update.

    The two topics are not ordered against each other; a checkout handled first
    creates the collection, and the later cart update (authorized already) changes
    nothing. The store replay follows the same mix.
    """
    wanted = {c.cart_id for c in carts}
    first = total = 0
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url)
    try:
        async for doc in client[database]["payment_collections"].find(
            {}, {"cart_id": 1, "state.processed": 1}
        ):
            if doc.get("cart_id") not in wanted:
                continue
            # nx-27017 answers a dotted projection with a dotted key; MongoDB nests it.
            processed = doc.get("state.processed") or (doc.get("state") or {}).get("processed")
            processed = log_entries(processed)  # a map in order (schema 2), or a list
            total += 1
            first += bool(processed) and processed[0].get("type") == "checkout.completed"
    finally:
        await client.close()
    return round(first / total, 4) if total else 0.0


async def measure_broker(
    args: argparse.Namespace,
    bootstrap: str,
    run: str,
    carts: list[Cart],
    warm: list[Cart],
    out_size: int,
    workdir: Path,
) -> dict[str, Any]:
    prefix, group = f"bench{run}b.", f"bench-loop-{run}"
    topics = [prefix + t for t in ("cart.updated", "checkout.completed", AUTHORIZED)]
    await ensure_topics(bootstrap, topics, args.partitions)
    observer = Observer(bootstrap, [prefix + AUTHORIZED], f"bench-loop-observer-{run}")
    await observer.start()
    procs: list[subprocess.Popen[bytes]] = []
    logs = []
    try:
        for i in range(args.processes):
            log = workdir / f"loop-{i}.log"
            logs.append(log)
            procs.append(
                spawn(
                    [
                        sys.executable,
                        "bench/broker_loop.py",
                        "--bootstrap",
                        bootstrap,
                        "--prefix",
                        prefix,
                        "--group",
                        group,
                        "--out-size",
                        str(out_size or 900),
                        "--max-records",
                        service_env(args)["PAYMENTS_BATCH_MAX_RECORDS"],
                    ],
                    dict(os.environ),
                    log,
                )
            )
        await wait_group_stable(bootstrap, group, args.processes)
        flow = await drive(bootstrap, prefix, observer, warm, carts, args, "broker limit")
    except BenchError:
        for log in logs:
            print(f"--- {log.name}:\n{log_tail(log)}", file=sys.stderr)
        raise
    finally:
        await observer.stop()
        await asyncio.to_thread(terminate, procs)
    return {"flow": flow, "loop_processes": args.processes}


async def measure_store(
    args: argparse.Namespace, mongodb_url: str, run: str, workdir: Path, checkout_first: float
) -> dict[str, Any]:
    env = {**os.environ, **service_env(args)}
    templates = workdir / "templates.bson"
    calibration_db = f"bench_{run}_cal"
    result = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "bench/store_replay.py",
            "calibrate",
            "--mongodb-url",
            mongodb_url,
            "--database",
            calibration_db,
            "--run-id",
            f"{run}k",
            "--out",
            str(templates),
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise BenchError(f"store calibration failed:\n{result.stderr[-3000:]}")
    calibration = json.loads(result.stdout.strip().splitlines()[-1])
    batch_carts = max(1, int(service_env(args)["PAYMENTS_BATCH_MAX_RECORDS"]) // 2)
    concurrency = int(service_env(args)["PAYMENTS_MAX_CONCURRENCY"])
    shares = [
        args.n // args.processes + (1 if i < args.n % args.processes else 0)
        for i in range(args.processes)
    ]
    procs = []
    start = 0
    for i, share in enumerate(shares):
        procs.append(
            await asyncio.create_subprocess_exec(
                sys.executable,
                "bench/store_replay.py",
                "replay",
                "--mongodb-url",
                mongodb_url,
                "--database",
                f"bench_{run}_replay",
                "--indexes-from",
                calibration_db,
                "--templates",
                str(templates),
                "--n",
                str(share),
                "--start",
                str(start),
                "--tag",
                f"p{i}-",
                "--batch-carts",
                str(batch_carts),
                "--concurrency",
                str(concurrency),
                "--checkout-first",
                str(checkout_first),
                env=env,
                cwd=ROOT,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        )
        start += share
    outputs = await asyncio.gather(*(p.communicate() for p in procs))
    reports = []
    for proc, (out, err) in zip(procs, outputs, strict=True):
        if proc.returncode != 0:
            raise BenchError(f"store replay failed:\n{err.decode()[-3000:]}")
        reports.append(json.loads(out.decode().strip().splitlines()[-1]))
    elapsed = max(r["t_end"] for r in reports) - min(r["t_start"] for r in reports)
    counts: dict[str, list[int]] = {}
    for report in reports:
        add_counts(counts, report["counts"])
    commands, statements = totals(counts)
    return {
        "checkouts_per_s": round(args.n / elapsed, 1),
        "elapsed_s": round(elapsed, 2),
        "replay_processes": args.processes,
        "batch_carts": batch_carts,
        "concurrency": concurrency,
        "checkout_first_share": checkout_first,
        "mongo_commands_per_checkout": round(commands / args.n, 2),
        "mongo_statements_per_checkout": round(statements / args.n, 2),
        "mongo_ops": per_checkout(counts, args.n),
        "calibration": calibration,
    }


async def drop_data(
    args: argparse.Namespace, run: str, external_kafka: str | None, mongodb_url: str | None
) -> None:
    """Given servers are left as found: the run's databases and topics go (best effort)."""
    if mongodb_url is not None:
        with contextlib.suppress(Exception):
            client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
                mongodb_url, serverSelectionTimeoutMS=5000
            )
            try:
                for name in (f"bench_{run}", f"bench_{run}_cal", f"bench_{run}_replay"):
                    await client.drop_database(name)
            finally:
                await client.close()
    if external_kafka is not None:
        from aiokafka.admin import AIOKafkaAdminClient

        with contextlib.suppress(Exception):
            admin = AIOKafkaAdminClient(bootstrap_servers=external_kafka)
            await admin.start()
            try:
                topics = [topic_for(t, f"bench{run}.") for t in ALL_TOPICS]
                topics += [f"bench{run}b.{t}" for t in ("cart.updated", "checkout.completed")]
                topics.append(f"bench{run}b.{AUTHORIZED}")
                existing = set(await admin.list_topics())
                await admin.delete_topics([t for t in topics if t in existing])
            finally:
                await admin.close()


def service_env(args: argparse.Namespace) -> dict[str, str]:
    env = dict(SERVICE_DEFAULTS)
    if getattr(args, "kafka_jvm", False):
        # Apache Kafka has the idempotent producer (Tansu has not): measure with it on.
        env["PAYMENTS_KAFKA_IDEMPOTENCE"] = "true"
    env.update({k: v for k, v in os.environ.items() if k in SERVICE_DEFAULTS})
    for item in args.env:
        key, _, value = item.partition("=")
        env[key if key.startswith("PAYMENTS_") else f"PAYMENTS_{key}"] = value
    return env


# -- main ------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=None, help="carts (default 20,000)")
    parser.add_argument("--quick", action="store_true", help="N = 2,000: under a minute")
    parser.add_argument("--processes", type=int, choices=(1, 2), default=1)
    parser.add_argument(
        "--flow",
        choices=("checkout", "full"),
        default="checkout",
        help="checkout: cart.updated + checkout.completed per cart (with the broker and "
        "store limits); full: also a signed capture of the whole amount once "
        "payment.authorized is read and a signed refund of a third once payment.captured "
        "is read (the limits, which model the checkout flow, are skipped)",
    )
    parser.add_argument(
        "--provider",
        choices=("manual", "sandbox"),
        default=None,
        help="the provider the carts pay with (default: manual for the full flow, sandbox "
        "for the checkout flow, whose store-limit replay is calibrated on the sandbox)",
    )
    parser.add_argument("--partitions", type=int, default=16)
    broker_choice = parser.add_mutually_exclusive_group()
    broker_choice.add_argument("--kafka", help="bootstrap servers (default: embedded Tansu)")
    broker_choice.add_argument(
        "--kafka-jvm",
        action="store_true",
        help="start an Apache Kafka broker (JVM, from Maven Central) instead of Tansu; "
        "the service then runs with the idempotent producer",
    )
    parser.add_argument("--mongodb-url", help="MongoDB URL (default: embedded nx-27017)")
    parser.add_argument(
        "--rate", type=float, default=0.0, help="carts/s to produce (default: as fast as possible)"
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra service setting, e.g. BATCH_MAX_RECORDS=1000 (PAYMENTS_ prefix optional)",
    )
    parser.add_argument("--profile", action="store_true", help="pyinstrument each service process")
    parser.add_argument(
        "--keep-data", action="store_true", help="keep the run's databases and topics"
    )
    parser.add_argument("--skip-broker", action="store_true")
    parser.add_argument("--skip-store", action="store_true")
    parser.add_argument("--timeout", type=float, default=None, help="seconds for the N carts")
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.n is None:
        args.n = 2000 if args.quick else 20_000
    if args.timeout is None:
        args.timeout = max(120.0, args.n / 20)
    if args.provider is None:
        args.provider = "manual" if args.flow == "full" else "sandbox"
    if args.flow == "full":
        args.skip_broker = args.skip_store = True
    return args


def table(results: dict[str, Any]) -> str:
    def fmt(value: Any, unit: str = "") -> str:
        if value is None:
            return "—"
        if isinstance(value, float):
            return f"{value:,.1f}{unit}"
        return f"{value}{unit}"

    machine = results["machine"]
    rows = [
        ("flow / provider", f"{results['flow']} / {results['provider']}"),
        ("carts (N)", fmt(results["n"])),
        ("paced at carts/s", fmt(results["rate"])),
        ("service processes", fmt(results["processes"])),
        ("service carts/s (whole flow)", fmt(results["carts_per_s"])),
        ("service checkouts/s", fmt(results["service_checkouts_per_s"])),
        *(
            (
                f"  {event_type} p50 / p95 / p99",
                f"{fmt(q['p50'])} / {fmt(q['p95'])} / {fmt(q['p99'])} ms",
            )
            for event_type, q in results["latency_ms"].items()
        ),
        *(
            (f"  {stage} (mean, n)", f"{fmt(float(b['mean_ms']))} ms, {b['n']}")
            for stage, b in (results["latency_breakdown_ms"] or {}).items()
        ),
        *(
            (f"CPU ms per cart: {name}", fmt(value) if value is None else f"{value:.2f}")
            for name, value in results["cpu_ms_per_cart"].items()
        ),
        (
            "MongoDB commands / statements per cart",
            f"{fmt(results['mongo_commands_per_cart'])} / "
            f"{fmt(results['mongo_statements_per_cart'])}",
        ),
        ("MongoDB bytes written per cart", fmt(results.get("mongo_bytes_written_per_cart"))),
        ("broker limit checkouts/s", fmt(results["broker_limit_per_s"])),
        ("store limit checkouts/s", fmt(results["store_limit_per_s"])),
        (
            "ratio service / lower limit",
            fmt(results["ratio"]) if results["ratio"] is None else f"{results['ratio']:.2f}",
        ),
        ("peak RSS (service)", fmt(results["peak_rss_mb"], " MB")),
        (
            "MongoDB commands/checkout (service)",
            fmt(results["service"]["mongo_commands_per_checkout"]),
        ),
        (
            "MongoDB commands/checkout (replay)",
            fmt((results.get("store") or {}).get("mongo_commands_per_checkout")),
        ),
        ("ledger: as asked, once per cart", "ok" if results["ledger_ok"] else "FAILED"),
        (
            "machine busy / others' CPU",
            f"{machine['machine_busy_pct']}% / {machine['other_processes_cpu_pct']}%",
        ),
    ]
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def results_document(
    args: argparse.Namespace,
    run: str,
    flow: Flow,
    service: dict[str, Any],
    broker: dict[str, Any] | None,
    store: dict[str, Any] | None,
    wall_s: float,
) -> dict[str, Any]:
    """The results file's content (`service` is consumed: its top-level figures move up)."""
    broker_limit = broker["flow"].checkouts_per_s if broker else None
    store_limit = store["checkouts_per_s"] if store else None
    limits = [x for x in (broker_limit, store_limit) if x]
    summary = flow.summary()
    return {
        "run": run,
        "n": args.n,
        "processes": args.processes,
        "partitions": args.partitions,
        "broker_kind": "apache-kafka-" + kafka_version()
        if args.kafka_jvm
        else ("external" if args.kafka else "tansu"),
        "flow": args.flow,
        "provider": args.provider,
        "carts_per_s": summary["carts_per_s"],
        "cpu_ms_per_cart": service.pop("cpu_ms_per_cart"),
        "mongo_commands_per_cart": service.pop("mongo_commands_per_cart"),
        # Batched writes carry many statements (documents, updates) in one command.
        "mongo_statements_per_cart": service.pop("mongo_statements_per_cart"),
        "mongo_bytes_written_per_cart": service.pop("mongo_bytes_written_per_cart", None),
        "latency_ms": {t: latency_summary(v) for t, v in flow.latency_by_type.items()},
        "latency_breakdown_ms": service.pop("latency_breakdown_ms"),
        "service_checkouts_per_s": summary["checkouts_per_s"],
        "broker_limit_per_s": round(broker_limit, 1) if broker_limit else None,
        "store_limit_per_s": store_limit,
        "lower_limit": "broker"
        if limits and min(limits) == broker_limit
        else "store"
        if limits
        else None,
        "ratio": round(summary["checkouts_per_s"] / min(limits), 3) if limits else None,
        "p50_ms": summary["p50_ms"],
        "p95_ms": summary["p95_ms"],
        "p99_ms": summary["p99_ms"],
        "peak_rss_mb": service["peak_rss_mb"],
        "ledger_ok": service["ledger_ok"],
        "rate": args.rate or None,
        "profiled": args.profile,
        "service_settings": service_env(args),
        "service_flow": summary,
        "machine": {
            "cpus": psutil.cpu_count(),
            "nproc": os.cpu_count(),
            "cpu_model": cpu_model(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            **service.pop("machine"),
        },
        "service": service,
        "broker": {**broker, "flow": broker["flow"].summary()} if broker else None,
        "store": store,
        "wall_s": wall_s,
    }


async def main(args: argparse.Namespace) -> int:
    run = time.strftime("%Y%m%d%H%M%S")
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-{run}-"))
    kafka: EmbeddedKafka | JvmKafka | None = None
    mongo = None
    bootstrap = mongodb_url = None
    began = time.perf_counter()
    try:
        infra_procs: dict[str, psutil.Process] = {}
        if args.kafka:
            bootstrap = args.kafka
        else:
            kafka = JvmKafka() if args.kafka_jvm else EmbeddedKafka()
            await asyncio.to_thread(kafka.start)
            bootstrap = kafka.bootstrap_servers
            if kafka.pid:
                infra_procs["broker"] = psutil.Process(kafka.pid)
        if args.mongodb_url:
            mongodb_url = args.mongodb_url
        else:
            mongo = EmbeddedMongo()
            await asyncio.to_thread(mongo.start)
            mongodb_url = mongo.url
            if mongo.pid:
                infra_procs["mongodb"] = psutil.Process(mongo.pid)
        carts = build_carts(run, args.n, provider=args.provider)
        warm = warmup_carts(run, args.partitions, provider=args.provider)
        print(
            f"bench {run}: {args.flow} flow, {args.provider} provider"
            + (f", {args.rate:g} carts/s" if args.rate else "")
            + f", N={args.n}, {args.processes} service process(es), "
            f"{args.partitions} partitions, broker {bootstrap}"
            + (f" (Apache Kafka {kafka_version()})" if args.kafka_jvm else ""),
            flush=True,
        )
        service = await measure_service(
            args, bootstrap, mongodb_url, run, carts, warm, infra_procs, workdir
        )
        flow: Flow = service.pop("flow")
        print(
            f"service: {flow.checkouts_per_s:,.1f} checkouts/s, {flow.carts_per_s:,.1f} carts/s",
            flush=True,
        )
        broker = None
        if not args.skip_broker:
            broker = await measure_broker(
                args, bootstrap, run, carts, warm, service["authorized_value_bytes"], workdir
            )
            print(f"broker limit: {broker['flow'].checkouts_per_s:,.1f} checkouts/s", flush=True)
        store = None
        if not args.skip_store:
            store = await measure_store(
                args, mongodb_url, run, workdir, service["checkout_first_share"]
            )
            print(f"store limit: {store['checkouts_per_s']:,.1f} checkouts/s", flush=True)
    finally:
        if not args.keep_data:
            await drop_data(args, run, bootstrap if kafka is None else None, mongodb_url)
        if mongo is not None:
            await asyncio.to_thread(mongo.stop)
        if kafka is not None:
            await asyncio.to_thread(kafka.stop)
        shutil.rmtree(workdir, ignore_errors=True)

    results = results_document(
        args, run, flow, service, broker, store, round(time.perf_counter() - began, 1)
    )
    for problem in shape_problems(results):
        print(f"warning: results: {problem}", file=sys.stderr)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    out = args.results_dir / f"{run}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print()
    print(table(results))
    print(f"\nwritten to {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 0 if results["ledger_ok"] else 1


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main(parse_args())))
    except BenchError as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        sys.exit(2)
