"""The embedded servers work with the real drivers and never outlive their owner."""

from __future__ import annotations

import asyncio
import os
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from pymongo import AsyncMongoClient, MongoClient

from service.embedded import (
    EmbeddedInfrastructure,
    EmbeddedKafka,
    EmbeddedMongo,
    ensure_topics,
    kafka_ping,
    mongodb_ping,
)
from service.testing.infrastructure import (
    ENV_INFRA,
    ENV_KAFKA,
    ENV_MONGODB_URL,
    InfrastructureUnavailableError,
    TestInfrastructure,
    contract_topics,
    provide_test_infrastructure,
)

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


def _pid_alive(pid: int) -> bool:
    # A killed server whose new parent has not reaped it yet is a zombie: gone for our
    # purposes (no port, no CPU), yet os.kill(pid, 0) would still succeed.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X")


def _survivors(pids: Iterable[int], within: float = 5.0) -> list[int]:
    deadline = time.monotonic() + within
    alive = [pid for pid in pids if _pid_alive(pid)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [pid for pid in alive if _pid_alive(pid)]
    return alive


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return "<gone>"


def _subprocess_env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PAYMENTS_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def _sync_client(url: str) -> MongoClient[dict[str, Any]]:
    return MongoClient(url)


@pytest.fixture(scope="module")
def kafka() -> Iterator[EmbeddedKafka]:
    with EmbeddedKafka() as server:
        yield server


@pytest.fixture(scope="module")
def mongo() -> Iterator[EmbeddedMongo]:
    with EmbeddedMongo() as server:
        yield server


# --------------------------------------------------------------------------------------
# Real clients against the embedded servers
# --------------------------------------------------------------------------------------


async def test_kafka_round_trip(kafka: EmbeddedKafka) -> None:
    topic = f"embedded-{uuid.uuid4().hex[:8]}"
    await ensure_topics(kafka.bootstrap_servers, [topic])
    await ensure_topics(kafka.bootstrap_servers, [topic, topic])  # exists already: fine

    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers)
    await producer.start()
    try:
        assert len(await producer.partitions_for(topic)) == 8
        sent = await producer.send_and_wait(topic, b"hello", key=b"k1")
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=kafka.bootstrap_servers, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        record = await asyncio.wait_for(consumer.getone(), timeout=15)
    finally:
        await consumer.stop()
    assert (record.key, record.value) == (b"k1", b"hello")
    assert (record.partition, record.offset) == (sent.partition, sent.offset)


async def test_mongo_round_trip(mongo: EmbeddedMongo) -> None:
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(mongo.url)
    try:
        collection = client["embedded_test"]["docs"]
        await collection.insert_one({"_id": "a", "amount": 1250})
        assert await collection.find_one({"_id": "a"}) == {"_id": "a", "amount": 1250}
    finally:
        await client.close()


def test_two_mongo_instances_run_side_by_side() -> None:
    with EmbeddedMongo() as first, EmbeddedMongo() as second:
        assert first.url != second.url
        assert first.pid != second.pid
        for server, marker in ((first, "first"), (second, "second")):
            with _sync_client(server.url) as client:
                client["side_by_side"]["docs"].insert_one({"_id": 1, "server": marker})
        for server, marker in ((first, "first"), (second, "second")):
            with _sync_client(server.url) as client:
                docs = list(client["side_by_side"]["docs"].find())
                assert docs == [{"_id": 1, "server": marker}]


@pytest.mark.parametrize("layout", ["directory", "single-file.db"])
def test_file_backed_mongo_keeps_data_across_restarts(tmp_path: Path, layout: str) -> None:
    data_path = tmp_path / "mongo" / layout
    server = EmbeddedMongo(data_path)
    with server, _sync_client(server.url) as client:
        client["payments"]["sessions"].insert_one({"_id": "ps_1", "status": "authorized"})

    with server, _sync_client(server.url) as client:
        assert client["payments"]["sessions"].find_one({"_id": "ps_1"}) == {
            "_id": "ps_1",
            "status": "authorized",
        }
    expected_file = data_path / "payments.db" if layout == "directory" else data_path
    assert expected_file.is_file()


def test_server_outlives_the_thread_that_started_it(kafka: EmbeddedKafka) -> None:
    # PR_SET_PDEATHSIG fires when the *thread* that forked the child exits; `payments
    # run` starts servers from asyncio.to_thread workers.
    server = EmbeddedKafka()
    starter = threading.Thread(target=server.start)
    starter.start()
    starter.join()
    try:
        time.sleep(0.3)
        assert server.running
        kafka_ping(server.bootstrap_servers)
    finally:
        server.stop()


# --------------------------------------------------------------------------------------
# No process survives
# --------------------------------------------------------------------------------------


def test_stop_ends_the_servers_and_is_idempotent() -> None:
    infra = EmbeddedInfrastructure()
    infra.start()
    pids = infra.pids
    assert len(pids) == 2 and all(_pid_alive(pid) for pid in pids)

    infra.stop()
    assert [pid for pid in pids if _pid_alive(pid)] == []
    infra.stop()
    assert infra.pids == ()


def test_sigkilled_parent_takes_its_servers_along(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import time
        from service.embedded import EmbeddedInfrastructure

        infra = EmbeddedInfrastructure()
        infra.start()
        print(*infra.pids, flush=True)
        time.sleep(120)
        """
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=REPO_ROOT,
        env=_subprocess_env(TMPDIR=str(tmp_path)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert parent.stdout is not None
        ready, _, _ = select.select([parent.stdout], [], [], 30)
        line = parent.stdout.readline().decode() if ready else ""
        assert line.strip(), f"child reported no pids; stderr: {parent.stderr!r}"
        pids = [int(pid) for pid in line.split()]
        assert len(pids) == 2 and all(_pid_alive(pid) for pid in pids)
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        if parent.stdout is not None:
            parent.stdout.close()
        if parent.stderr is not None:
            parent.stderr.close()

    survivors = _survivors(pids)
    assert survivors == [], [_cmdline(pid) for pid in survivors]


NESTED_TEST = """
import os
from pathlib import Path

import pytest

from service.embedded import kafka_ping, mongodb_ping
from service.testing.infrastructure import provide_test_infrastructure


@pytest.fixture(scope="session")
def infra():
    with provide_test_infrastructure() as provided:
        yield provided


def test_embedded(infra):
    assert infra.source == "embedded"
    Path(os.environ["NESTED_PID_REPORT"]).write_text(" ".join(map(str, infra.server_pids)))
    kafka_ping(infra.kafka_bootstrap)
    mongodb_ping(infra.mongodb_url)
    if os.environ.get("NESTED_HARD_EXIT"):
        os._exit(3)  # no teardown, no atexit: only the parent-death signal is left
"""


@pytest.mark.parametrize("hard_exit", [False, True], ids=["teardown", "os_exit"])
def test_nested_pytest_session_leaves_no_server_behind(tmp_path: Path, hard_exit: bool) -> None:
    (tmp_path / "test_nested.py").write_text(NESTED_TEST)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    pid_report = tmp_path / "pids.txt"
    # The killed run cannot remove its servers' temp dirs; keep them under tmp_path.
    extra = {"NESTED_PID_REPORT": str(pid_report), "TMPDIR": str(tmp_path)}
    if hard_exit:
        extra["NESTED_HARD_EXIT"] = "1"

    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_nested.py"],
        cwd=tmp_path,
        env=_subprocess_env(**extra),
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == (3 if hard_exit else 0), result.stdout + result.stderr
    pids = [int(pid) for pid in pid_report.read_text().split()]
    assert len(pids) == 2
    survivors = _survivors(pids)
    assert survivors == [], [_cmdline(pid) for pid in survivors]


# --------------------------------------------------------------------------------------
# Provider selection and failures
# --------------------------------------------------------------------------------------


def test_unreachable_kafka_from_env_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_KAFKA, "127.0.0.1:1")
    monkeypatch.delenv(ENV_MONGODB_URL, raising=False)
    monkeypatch.delenv(ENV_INFRA, raising=False)
    with (
        pytest.raises(InfrastructureUnavailableError, match=ENV_KAFKA),
        provide_test_infrastructure(connect_timeout=1),
    ):
        pytest.fail("provider yielded despite unreachable Kafka")


def test_unreachable_mongodb_from_env_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_KAFKA, raising=False)
    monkeypatch.setenv(ENV_MONGODB_URL, "mongodb://user:secret@127.0.0.1:1")
    monkeypatch.delenv(ENV_INFRA, raising=False)
    with (
        pytest.raises(InfrastructureUnavailableError, match=ENV_MONGODB_URL) as excinfo,
        provide_test_infrastructure(connect_timeout=1),
    ):
        pytest.fail("provider yielded despite unreachable MongoDB")
    assert "secret" not in str(excinfo.value)


def test_docker_mode_without_testcontainers_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for module in ("testcontainers", "testcontainers.kafka", "testcontainers.mongodb"):
        monkeypatch.setitem(sys.modules, module, None)
    monkeypatch.delenv(ENV_KAFKA, raising=False)
    monkeypatch.delenv(ENV_MONGODB_URL, raising=False)
    monkeypatch.setenv(ENV_INFRA, "docker")
    with (
        pytest.raises(InfrastructureUnavailableError, match=r"\.\[docker\]"),
        provide_test_infrastructure(),
    ):
        pytest.fail("provider yielded without testcontainers")


def test_env_addresses_are_used_as_given(kafka: EmbeddedKafka, mongo: EmbeddedMongo) -> None:
    environ = {ENV_KAFKA: kafka.bootstrap_servers, ENV_MONGODB_URL: mongo.url}
    with provide_test_infrastructure(environ) as infra:
        assert infra == TestInfrastructure(
            kafka.bootstrap_servers, mongo.url, "env", kafka_kind="env", mongodb_kind="env"
        )

    with provide_test_infrastructure({ENV_KAFKA: kafka.bootstrap_servers}) as infra:
        assert infra.source == "kafka=env,mongodb=embedded"
        assert infra.kafka_bootstrap == kafka.bootstrap_servers
        (mongo_pid,) = infra.server_pids
        mongodb_ping(infra.mongodb_url)
    assert not _pid_alive(mongo_pid)


async def test_session_fixtures_provide_contract_topics(
    infrastructure: TestInfrastructure, prefixed_topics: str, database_name: str
) -> None:
    assert prefixed_topics.startswith("t") and prefixed_topics.endswith(".")
    producer = AIOKafkaProducer(bootstrap_servers=infrastructure.kafka_bootstrap)
    await producer.start()
    try:
        for topic in (*contract_topics(), *contract_topics(prefixed_topics)):
            assert len(await producer.partitions_for(topic)) == 8, topic
    finally:
        await producer.stop()
    assert database_name.startswith("test_")
