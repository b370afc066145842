"""The command line shared by the development launchers of the real servers
(`tools/kafka/broker.py`, `tools/ferretdb/server.py`): install, version, or run one
server until Ctrl-C. Each launcher says what its server is; this holds what they do.
"""

from __future__ import annotations

import argparse
import signal
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ServerKind:
    name: str
    """As printed: "Apache Kafka", "FerretDB"."""
    version: Callable[[], str]
    install: Callable[[], str]
    """Fetch or build it (idempotent); says what was installed."""
    start: Callable[[int | None], AbstractContextManager[Any]]
    """A running server on the port (None: a free one); stopped on exit."""
    address: Callable[[Any], str]
    """What a client connects to (bootstrap address, MongoDB URL)."""


def serve(kind: ServerKind, description: str) -> int:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("command", choices=("install", "version", "run"))
    parser.add_argument("--port", type=int, default=None, help="server port (default: free)")
    args = parser.parse_args()
    if args.command == "version":
        print(f"{kind.name} {kind.version()}")
        return 0
    started = time.monotonic()
    installed = kind.install()
    if args.command == "install":
        print(f"{kind.name} {kind.version()}: {installed} ({time.monotonic() - started:.1f} s)")
        return 0
    # SIGTERM as Ctrl-C, so `kill` stops the server through the same path.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with kind.start(args.port) as server:
        print(
            f"{kind.name} {kind.version()} at {kind.address(server)} "
            f"(pid {server.pid}, log {server.log_path}); Ctrl-C stops it",
            flush=True,
        )
        try:
            while server.running:
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
    return 0
