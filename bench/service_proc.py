"""`payments run` with bench-only hooks, started by bench/run.py as a subprocess.

Runs exactly what the `payments run` console command runs (same settings from the
PAYMENTS_* environment, same graceful SIGTERM shutdown), plus:

* BENCH_OPS_FILE: counts every MongoDB command the process issues (pymongo
  command monitoring, registered before any client exists) and writes the counts
  there as JSON at exit: this is the service's real operation mix, store adapter
  and sandbox ledger alike; on each SIGUSR1 the counts so far go to
  `BENCH_OPS_FILE.<n>` (n = 1, 2, …), so the benchmark can count the commands of
  its measured window only (after the warm-up, before the drain and shutdown);
* BENCH_PROFILE: a pyinstrument profile of the whole process, written as text
  (and `.html` next to it) at exit.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pymongo import monitoring

from bench.mongo_ops import CommandCounter


def main() -> int:
    ops_file = os.environ.get("BENCH_OPS_FILE")
    profile_file = os.environ.get("BENCH_PROFILE")
    counter = CommandCounter()
    if ops_file:
        monitoring.register(counter)
        marks = iter(range(1, 1_000_000))

        def mark(signum: int, frame: Any) -> None:
            # From a thread: the handler runs on the main thread, which may hold the
            # counter's lock at that very moment.
            path = Path(f"{ops_file}.{next(marks)}")
            threading.Thread(target=write_json, args=(path, counter.snapshot)).start()

        signal.signal(signal.SIGUSR1, mark)
    profiler = None
    if profile_file:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.002, async_mode="disabled")
        profiler.start()
    code = 0
    try:
        from service.entrypoints.cli import app

        app(["run", "--no-embedded"], standalone_mode=False)
    except SystemExit as exc:
        code = int(exc.code or 0) if isinstance(exc.code, int | None) else 1
    finally:
        if profiler is not None:
            profiler.stop()
            assert profile_file is not None
            Path(profile_file).write_text(
                profiler.output_text(unicode=True, color=False, show_all=False)
            )
            Path(profile_file).with_suffix(".html").write_text(profiler.output_html())
            from pyinstrument.renderers import ConsoleRenderer

            flat = ConsoleRenderer(unicode=True, flat=True, show_all=True)
            Path(profile_file).with_suffix(".flat.txt").write_text(profiler.output(flat))
        if ops_file:
            write_json(Path(ops_file), counter.snapshot)
    return code


def write_json(path: Path, snapshot: Any) -> None:
    """Written whole then renamed: the benchmark polls for the file to appear."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(snapshot()))
    partial.rename(path)


if __name__ == "__main__":
    sys.exit(main())
