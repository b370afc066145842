"""Apache Kafka (JVM) for development: resolve it, or run one broker until Ctrl-C.

    python tools/kafka/broker.py install   # resolve the pinned jars into .cache/kafka-jvm/
    python tools/kafka/broker.py version
    python tools/kafka/broker.py run       # prints the bootstrap address, stops on Ctrl-C

The broker logic lives in tests/support/real_servers.py (shared with the tests), the
command line in tools/server_cli.py (shared with tools/ferretdb/server.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.support.real_servers import JvmKafka, kafka_classpath, kafka_version
from tools.server_cli import ServerKind, serve

KAFKA = ServerKind(
    name="Apache Kafka",
    version=kafka_version,
    install=lambda: f"{len(kafka_classpath().split(':'))} jars",
    start=lambda port: JvmKafka(port=port),
    address=lambda broker: broker.bootstrap_servers,
)

if __name__ == "__main__":
    sys.exit(serve(KAFKA, __doc__.splitlines()[0]))
