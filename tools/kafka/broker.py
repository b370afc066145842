"""Apache Kafka (JVM) for development: resolve it, or run one broker until Ctrl-C.

    python tools/kafka/broker.py install   # resolve the pinned jars into .cache/kafka-jvm/
    python tools/kafka/broker.py version
    python tools/kafka/broker.py run       # prints the bootstrap address, stops on Ctrl-C

The broker logic lives in tests/support/real_servers.py (shared with the tests).
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.support.real_servers import JvmKafka, kafka_classpath, kafka_version


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("install", "version", "run"))
    parser.add_argument("--port", type=int, default=None, help="broker port (default: free)")
    args = parser.parse_args()
    if args.command == "version":
        print(f"Apache Kafka {kafka_version()}")
        return 0
    started = time.monotonic()
    jars = kafka_classpath().split(":")
    if args.command == "install":
        print(
            f"Apache Kafka {kafka_version()}: {len(jars)} jars ({time.monotonic() - started:.1f} s)"
        )
        return 0
    # SIGTERM as Ctrl-C, so `kill` stops the broker through the same path.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with JvmKafka(port=args.port) as broker:
        print(
            f"Apache Kafka {kafka_version()} at {broker.bootstrap_servers} "
            f"(pid {broker.pid}, log {broker.log_path}); Ctrl-C stops it",
            flush=True,
        )
        try:
            while broker.running:
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
