"""FerretDB (SQLite backend) for development: build it, or run one server until Ctrl-C.

    python tools/ferretdb/server.py install   # go build into .cache/ferretdb/bin/
    python tools/ferretdb/server.py version
    python tools/ferretdb/server.py run       # prints the MongoDB URL, stops on Ctrl-C

The server logic lives in tests/support/real_servers.py (shared with the tests).
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.support.real_servers import FerretDB, ferretdb_binary, ferretdb_version


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("install", "version", "run"))
    parser.add_argument("--port", type=int, default=None, help="server port (default: free)")
    args = parser.parse_args()
    if args.command == "version":
        print(f"FerretDB {ferretdb_version()} (SQLite backend)")
        return 0
    started = time.monotonic()
    binary = ferretdb_binary()
    if args.command == "install":
        print(f"FerretDB {ferretdb_version()}: {binary} ({time.monotonic() - started:.1f} s)")
        return 0
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with FerretDB(port=args.port) as server:
        print(
            f"FerretDB {ferretdb_version()} at {server.url} "
            f"(pid {server.pid}, log {server.log_path}); Ctrl-C stops it",
            flush=True,
        )
        try:
            while server.running:
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
