"""`payments run` with bench-only hooks, started by bench/run.py as a subprocess.

Runs exactly what the `payments run` console command runs (same settings from the
PAYMENTS_* environment, same graceful SIGTERM shutdown), plus:

* BENCH_OPS_FILE: counts every MongoDB command the process issues (pymongo
  command monitoring, registered before any client exists) and writes the counts
  there as JSON at exit: this is the service's real operation mix, store adapter
  and sandbox ledger alike;
* BENCH_PROFILE: a pyinstrument profile of the whole process, written as text
  (and `.html` next to it) at exit.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pymongo import monitoring

from bench.mongo_ops import CommandCounter


def main() -> int:
    ops_file = os.environ.get("BENCH_OPS_FILE")
    profile_file = os.environ.get("BENCH_PROFILE")
    counter = CommandCounter()
    if ops_file:
        monitoring.register(counter)
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
            Path(ops_file).write_text(json.dumps(counter.snapshot()))
    return code


if __name__ == "__main__":
    sys.exit(main())
