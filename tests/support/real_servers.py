"""Apache Kafka (the JVM broker) and FerretDB as test infrastructure, beside the embedded pair.

Only this repository's suites use them (they build from its ``tools/``), so they live
with the tests; :func:`offer_real_servers` makes them the ``kafka-jvm`` and
``ferretdb`` choices of ``PAYMENTS_TEST_INFRA`` (:mod:`service.testing.infrastructure`).

Tansu and nx-27017 (:mod:`service.embedded`) are substitutes; these two are what
production-like clusters run:

* :class:`JvmKafka` is a pinned Apache Kafka 4.x broker, resolved from Maven Central
  with ``tools/kafka/pom.xml`` into ``.cache/kafka-jvm/``, run as one combined
  KRaft broker+controller on two free loopback ports with its own storage directory.
* :class:`FerretDB` is FerretDB 1.24 on its SQLite backend, built from
  ``tools/ferretdb/`` with ``go build`` into ``.cache/ferretdb/``, on a free port with
  its own state directory.

Both reuse the embedded servers' process plumbing (spawned from one long-lived
thread with ``PR_SET_PDEATHSIG``, free ports with bind-race retries, a log per
server, stop on ``atexit``), so neither outlives the process that started it.
Installing is idempotent and guarded by a file lock: the first test session on a
fresh machine resolves (about 30 s for Kafka, 2-3 min to compile FerretDB), later
ones reuse the cache.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

from service.embedded import (
    DEFAULT_STARTUP_TIMEOUT,
    LOOPBACK,
    EmbeddedServerError,
    _EmbeddedServer,
    free_port,
    kafka_ping,
    mongodb_ping,
)
from service.testing.infrastructure import ServerChoice, offer_server

__all__ = [
    "FerretDB",
    "JvmKafka",
    "RealServerInstallError",
    "cache_dir",
    "ferretdb_binary",
    "ferretdb_version",
    "kafka_classpath",
    "kafka_version",
    "offer_real_servers",
]

ENV_CACHE_DIR = "PAYMENTS_CACHE_DIR"
REPO_ROOT = Path(__file__).resolve().parents[2]
TOOLS_DIR = REPO_ROOT / "tools"
KAFKA_POM = TOOLS_DIR / "kafka" / "pom.xml"
KAFKA_LOG4J = TOOLS_DIR / "kafka" / "log4j2.properties"
FERRETDB_MODULE = TOOLS_DIR / "ferretdb"

# A JVM broker needs a few seconds to start (JIT, KRaft election, metadata log); on a
# busy 2-core machine more.
JVM_STARTUP_TIMEOUT = 90.0
INSTALL_TIMEOUT_S = 900.0


class RealServerInstallError(EmbeddedServerError):
    """Maven or Go could not provide the server (the message carries their output)."""


def cache_dir() -> Path:
    """Where resolved jars and built binaries live (git-ignored)."""
    configured = os.environ.get(ENV_CACHE_DIR, "").strip()
    return Path(configured).resolve() if configured else REPO_ROOT / ".cache"


@contextlib.contextmanager
def _install_lock(name: str) -> Iterator[None]:
    # Two test sessions on one machine (a developer's and CI's) must not run Maven or
    # Go into the same folder at once.
    lock_path = cache_dir() / f".{name}.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _run_installer(command: list[str], *, cwd: Path, env: dict[str, str], what: str) -> None:
    try:
        done = subprocess.run(
            command,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT_S,
            check=False,
        )
    except FileNotFoundError as exc:
        raise RealServerInstallError(f"{what}: {command[0]!r} is not installed") from exc
    except subprocess.TimeoutExpired as exc:
        raise RealServerInstallError(f"{what}: no result after {INSTALL_TIMEOUT_S:g} s") from exc
    if done.returncode != 0:
        output = (done.stdout + done.stderr)[-4000:]
        raise RealServerInstallError(f"{what} failed ({done.returncode}):\n{output}")


# --------------------------------------------------------------------------------------
# Apache Kafka from Maven Central
# --------------------------------------------------------------------------------------


def kafka_version() -> str:
    """The Apache Kafka version pinned in ``tools/kafka/pom.xml``."""
    found = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", KAFKA_POM.read_text())
    if found is None:
        raise RealServerInstallError(f"{KAFKA_POM} pins no <kafka.version>")
    return found.group(1).strip()


def kafka_classpath() -> str:
    """The broker's runtime classpath, resolving it with Maven on first use."""
    root = cache_dir() / "kafka-jvm"
    listing = root / f"classpath-{kafka_version()}.txt"

    def cached() -> str | None:
        if not listing.is_file():
            return None
        classpath = listing.read_text().strip()
        jars = classpath.split(os.pathsep) if classpath else []
        return classpath if jars and all(Path(jar).is_file() for jar in jars) else None

    if (found := cached()) is not None:
        return found
    with _install_lock("kafka-jvm"):
        if (found := cached()) is not None:
            return found
        _run_installer(
            [
                "mvn",
                "--batch-mode",
                "--quiet",
                "--file",
                str(KAFKA_POM),
                f"-Dmaven.repo.local={root / 'repository'}",
                "dependency:build-classpath",
                "-Dmdep.includeScope=runtime",
                f"-Dmdep.outputFile={listing}",
            ],
            cwd=KAFKA_POM.parent,
            env=dict(os.environ),
            what=f"resolving Apache Kafka {kafka_version()} with Maven",
        )
        if (found := cached()) is None:
            raise RealServerInstallError(f"Maven wrote no usable classpath to {listing}")
        return found


def _kraft_cluster_id() -> str:
    # What `kafka-storage.sh random-uuid` prints: a UUID as 22 URL-safe base64 chars,
    # never starting with "-" (Kafka's Uuid.randomUuid() draws again too): the storage
    # tool would read such an id as an option and refuse to format (1 start in 64;
    # flake-check met it).
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


class JvmKafka(_EmbeddedServer):
    """A single Apache Kafka node (KRaft broker+controller) on free loopback ports.

    Unlike Tansu it has the idempotent and transactional producers, reports exact
    end offsets, and takes ~0.1 s instead of ~5 s to form a consumer group.
    ``advertised_port`` makes the broker name another port (a proxy's) in its
    metadata, as :class:`tests.support.faults.ProxiedKafka` does for Tansu.
    """

    _label = "Kafka (JVM)"

    def __init__(
        self,
        *,
        port: int | None = None,
        advertised_port: int | None = None,
        heap: str = "1g",
        startup_timeout: float = JVM_STARTUP_TIMEOUT,
    ) -> None:
        super().__init__(port=port, startup_timeout=startup_timeout)
        self.advertised_port = advertised_port
        self.heap = heap
        self.version = kafka_version()

    @property
    def bootstrap_servers(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def _command(self, port: int, workdir: Path) -> list[str]:
        classpath = kafka_classpath()
        controller_port = free_port()
        while controller_port == port:
            controller_port = free_port()
        advertised = self.advertised_port if self.advertised_port is not None else port
        config = workdir / "server.properties"
        config.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"listeners=PLAINTEXT://{LOOPBACK}:{port},CONTROLLER://{LOOPBACK}:{controller_port}",
                    f"advertised.listeners=PLAINTEXT://{LOOPBACK}:{advertised}",
                    "controller.listener.names=CONTROLLER",
                    "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                    "inter.broker.listener.name=PLAINTEXT",
                    f"controller.quorum.voters=1@{LOOPBACK}:{controller_port}",
                    f"log.dirs={workdir / 'data'}",
                    # One node: every internal topic has one replica.
                    "offsets.topic.replication.factor=1",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "share.coordinator.state.topic.replication.factor=1",
                    "share.coordinator.state.topic.min.isr=1",
                    # Fewer internal partitions than the default 50: the first group
                    # join and the first transactional producer load them all.
                    "offsets.topic.num.partitions=8",
                    "transaction.state.log.num.partitions=4",
                    # Tests form groups all the time; waiting 3 s for more members
                    # before the first rebalance is production's choice, not theirs.
                    "group.initial.rebalance.delay.ms=0",
                    # Kafka's default limit (1 MiB + 12 B) would refuse a >1 MiB value at
                    # the producer, so the service's own `too_large` dead-lettering
                    # could not be tested; Tansu has no limit. 4 MiB is what the ops
                    # tools and the harness allow themselves (kafka_io.MAX_REQUEST_BYTES).
                    "message.max.bytes=4194304",
                    # The fault suite shortens the service's session timeout to 3 s so a
                    # SIGKILLed instance leaves its group quickly; Kafka refuses sessions
                    # under group.min.session.timeout.ms (6 s by default) at join time.
                    "group.min.session.timeout.ms=1000",
                    "",
                ]
            )
        )
        java = [
            "java",
            f"-Xmx{self.heap}",
            "-Xms256m",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={KAFKA_LOG4J}",
            "-cp",
            classpath,
        ]
        format_log = workdir / "format.log"
        with format_log.open("wb") as log:
            # Short-lived and waited for here: no parent-death plumbing needed.
            formatted = subprocess.run(
                [
                    *java,
                    "kafka.tools.StorageTool",
                    "format",
                    "--cluster-id",
                    _kraft_cluster_id(),
                    "--config",
                    str(config),
                    "--ignore-formatted",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=workdir,
                timeout=120,
                check=False,
            )
        if formatted.returncode != 0:
            # Read before the workdir (which holds the log) is removed.
            said = format_log.read_text(errors="replace")[-3000:]
            shutil.rmtree(workdir, ignore_errors=True)
            raise EmbeddedServerError(
                f"formatting the KRaft storage failed ({formatted.returncode}): {said}"
            )
        return [*java, "kafka.Kafka", str(config)]

    def _probe(self, port: int) -> None:
        kafka_ping(f"{LOOPBACK}:{port}", timeout=2.0)


# --------------------------------------------------------------------------------------
# FerretDB from the Go module proxy
# --------------------------------------------------------------------------------------


def ferretdb_version() -> str:
    """The FerretDB module version pinned in ``tools/ferretdb/go.mod``."""
    found = re.search(
        r"^require github\.com/FerretDB/FerretDB (v\S+)",
        (FERRETDB_MODULE / "go.mod").read_text(),
        re.M,
    )
    if found is None:
        raise RealServerInstallError("tools/ferretdb/go.mod requires no FerretDB version")
    return found.group(1)


def ferretdb_binary() -> Path:
    """The FerretDB executable, building it with ``go build`` on first use."""
    binary = cache_dir() / "ferretdb" / "bin" / f"ferretdb-sqlite-{ferretdb_version()}"
    if binary.is_file():
        return binary
    with _install_lock("ferretdb"):
        if binary.is_file():
            return binary
        binary.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        # Go's module cache is read-only by default, which makes `rm -rf .cache` fail.
        env["GOFLAGS"] = f"{env.get('GOFLAGS', '')} -modcacherw".strip()
        env.setdefault("CGO_ENABLED", "0")  # FerretDB's SQLite is pure Go
        _run_installer(
            ["go", "build", "-trimpath", "-o", str(binary), "."],
            cwd=FERRETDB_MODULE,
            env=env,
            what=f"building FerretDB {ferretdb_version()} with Go",
        )
        return binary


class FerretDB(_EmbeddedServer):
    """FerretDB (MongoDB wire protocol) on its SQLite backend on a free loopback port.

    Its data lives in the server's own temporary directory and goes with it.
    """

    _label = "FerretDB"

    def __init__(
        self, *, port: int | None = None, startup_timeout: float = DEFAULT_STARTUP_TIMEOUT
    ) -> None:
        super().__init__(port=port, startup_timeout=startup_timeout)
        self.version = ferretdb_version()

    @property
    def url(self) -> str:
        return f"mongodb://{LOOPBACK}:{self.port}"

    def _command(self, port: int, workdir: Path) -> list[str]:
        binary = ferretdb_binary()
        data = workdir / "data"
        data.mkdir(parents=True, exist_ok=True)
        return [
            str(binary),
            f"--listen-addr={LOOPBACK}:{port}",
            # The SQLite backend wants a directory URL ending in a slash.
            f"--sqlite-url=file:{data}/",
        ]

    def _probe(self, port: int) -> None:
        mongodb_ping(f"mongodb://{LOOPBACK}:{port}", timeout=1.0)


def offer_real_servers() -> None:
    """Make ``kafka-jvm`` and ``ferretdb`` selectable with ``PAYMENTS_TEST_INFRA``."""
    offer_server(
        "kafka-jvm",
        ServerChoice(
            JvmKafka, lambda: f"Apache Kafka {kafka_version()} (JVM, KRaft, from Maven Central)"
        ),
    )
    offer_server(
        "ferretdb",
        ServerChoice(FerretDB, lambda: f"FerretDB {ferretdb_version()} (SQLite backend)"),
    )
