"""FerretDB (SQLite backend) for development: build it, or run one server until Ctrl-C.

    python tools/ferretdb/server.py install   # go build into .cache/ferretdb/bin/
    python tools/ferretdb/server.py version
    python tools/ferretdb/server.py run       # prints the MongoDB URL, stops on Ctrl-C

The server logic lives in tests/support/real_servers.py (shared with the tests), the
command line in tools/server_cli.py (shared with tools/kafka/broker.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.support.real_servers import FerretDB, ferretdb_binary, ferretdb_version
from tools.server_cli import ServerKind, serve

FERRETDB = ServerKind(
    name="FerretDB",
    version=lambda: f"{ferretdb_version()} (SQLite backend)",
    install=lambda: str(ferretdb_binary()),
    start=lambda port: FerretDB(port=port),
    address=lambda server: server.url,
)

if __name__ == "__main__":
    sys.exit(serve(FERRETDB, __doc__.splitlines()[0]))
