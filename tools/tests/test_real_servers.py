"""The JVM Kafka broker and FerretDB work with the real drivers and never outlive their owner.

Run by `make test-real` before the suites that depend on them (not by `make test`:
a machine without Java or Go still runs the default suite on the embedded servers).
"""

from __future__ import annotations

import asyncio
import os
import select
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pymongo import AsyncMongoClient
from pymongo.errors import DuplicateKeyError

from service.embedded import EmbeddedKafka, ensure_topics, kafka_ping, mongodb_ping
from service.testing import builders
from service.testing.harness import ServiceHarness
from service.testing.infrastructure import (
    ENV_INFRA,
    ENV_KAFKA,
    ENV_MONGODB_URL,
    InfrastructureUnavailableError,
    infrastructure_report,
    provide_test_infrastructure,
    selected_infrastructure,
)
from service.tools.kafka_io import (
    broker_is_tansu,
    read_ranges,
    resolve_ranges,
    throwaway_consumer,
    topic_partitions,
)
from tests.support.real_servers import (
    FerretDB,
    JvmKafka,
    ferretdb_version,
    kafka_version,
    offer_real_servers,
)

offer_real_servers()  # PAYMENTS_TEST_INFRA=kafka-jvm,ferretdb below

REPO_ROOT = Path(__file__).resolve().parents[2]


def _pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _survivors(pids: Iterable[int], within: float = 10.0) -> list[int]:
    deadline = time.monotonic() + within
    alive = [pid for pid in pids if _pid_alive(pid)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [pid for pid in alive if _pid_alive(pid)]
    return alive


@pytest.fixture(scope="module")
def kafka() -> Iterator[JvmKafka]:
    with JvmKafka() as server:
        yield server


@pytest.fixture(scope="module")
def ferretdb() -> Iterator[FerretDB]:
    with FerretDB() as server:
        yield server


# --------------------------------------------------------------------------------------
# Real clients against the real servers
# --------------------------------------------------------------------------------------


async def test_kafka_idempotent_produce_group_consume_and_exact_end_offsets(
    kafka: JvmKafka,
) -> None:
    topic = f"jvm-{uuid.uuid4().hex[:8]}"
    await ensure_topics(kafka.bootstrap_servers, [topic], partitions=1)
    # The idempotent producer is what Tansu lacks; Apache Kafka must accept it.
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers, enable_idempotence=True)
    await producer.start()
    try:
        batch = [producer.send(topic, f"v{i}".encode(), key=b"k") for i in range(25)]
        sent = await asyncio.gather(*[await future for future in batch])
    finally:
        await producer.stop()
    assert [meta.offset for meta in sent] == list(range(25))

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka.bootstrap_servers,
        group_id=f"g-{topic}",
        auto_offset_reset="earliest",
    )
    started = time.monotonic()
    await consumer.start()
    try:
        values: list[bytes] = []
        while len(values) < 25 and time.monotonic() - started < 30:
            batches = await consumer.getmany(timeout_ms=500)
            values += [record.value or b"" for records in batches.values() for record in records]
        tp = TopicPartition(topic, 0)
        # A multi-record batch counts fully in the end offset (Tansu lags here).
        assert (await consumer.end_offsets([tp]))[tp] == 25
    finally:
        await consumer.stop()
    assert values == [f"v{i}".encode() for i in range(25)]


async def test_regression_ops_tools_find_topics_and_exact_ranges_on_apache_kafka(
    kafka: JvmKafka,
) -> None:
    # Found by the first run on Apache Kafka: the tools read partitions from the
    # consumer's metadata cache, which only Tansu's answers filled ("topic does not
    # exist"); and ranges kept Tansu's lagging-end-offset workaround everywhere.
    topic = f"tools-{uuid.uuid4().hex[:8]}"
    await ensure_topics(kafka.bootstrap_servers, [topic], partitions=3)
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers, linger_ms=50)
    await producer.start()
    try:
        futures = [await producer.send(topic, f"r{i}".encode(), partition=0) for i in range(10)]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    async with throwaway_consumer(kafka.bootstrap_servers) as consumer:
        assert await topic_partitions(consumer, topic) == [0, 1, 2]
        ranges = await resolve_ranges(consumer, topic)
        assert [(r.partition, r.start, r.end, r.open_end) for r in ranges] == [
            (0, 0, 10, False),
            (1, 0, 0, False),
            (2, 0, 0, False),
        ]
        values = [record.value async for record in read_ranges(consumer, topic, ranges)]
    assert values == [f"r{i}".encode() for i in range(10)]


async def test_broker_kind_is_told_apart(kafka: JvmKafka) -> None:
    # What decides the Tansu workarounds: off on Apache Kafka, on for Tansu.
    assert await broker_is_tansu(kafka.bootstrap_servers) is False
    tansu = EmbeddedKafka()
    await asyncio.to_thread(tansu.start)
    try:
        assert await broker_is_tansu(tansu.bootstrap_servers) is True
    finally:
        await asyncio.to_thread(tansu.stop)


async def test_service_uses_the_idempotent_producer_on_apache_kafka(
    kafka: JvmKafka, ferretdb: FerretDB
) -> None:
    # The harness turns `kafka_idempotence` on where the broker is not Tansu; the
    # service then starts its producer with it (Tansu would fail InitProducerId).
    async with ServiceHarness(kafka.bootstrap_servers, ferretdb.url) as harness:
        assert harness.settings_overrides["kafka_idempotence"] is True
        assert harness.settings().kafka_idempotence is True
        cart = f"cart_{uuid.uuid4().hex[:12]}"
        await harness.publish("checkout.completed", builders.checkout_completed(cart, 1500))
        authorized = await harness.await_event("payment.authorized", cart_id=cart, timeout=30)
        assert authorized.data["amount"] == 1500


async def test_ferretdb_document_round_trip(ferretdb: FerretDB) -> None:
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(ferretdb.url)
    try:
        collection = client[f"rt_{uuid.uuid4().hex[:8]}"]["sessions"]
        await collection.create_index("idempotency_key", unique=True)
        await collection.insert_one({"_id": "ps_1", "idempotency_key": "k1", "amount": 1250})
        with pytest.raises(DuplicateKeyError):
            await collection.insert_one({"_id": "ps_2", "idempotency_key": "k1", "amount": 1})
        updated = await collection.find_one_and_update(
            {"_id": "ps_1", "amount": 1250},
            {"$inc": {"amount": -250}, "$set": {"status": "captured"}},
            return_document=True,
        )
        assert updated == {
            "_id": "ps_1",
            "idempotency_key": "k1",
            "amount": 1000,
            "status": "captured",
        }
    finally:
        await client.close()


# --------------------------------------------------------------------------------------
# Selection and lifetime
# --------------------------------------------------------------------------------------


def test_selection_parses_choices() -> None:
    assert selected_infrastructure({}) == ("embedded", "embedded")
    assert selected_infrastructure({ENV_INFRA: "kafka-jvm"}) == ("kafka-jvm", "embedded")
    assert selected_infrastructure({ENV_INFRA: "ferretdb"}) == ("embedded", "ferretdb")
    assert selected_infrastructure({ENV_INFRA: " Kafka-JVM , ferretdb"}) == (
        "kafka-jvm",
        "ferretdb",
    )
    assert selected_infrastructure({ENV_INFRA: "docker"}) == ("docker", "docker")
    with pytest.raises(InfrastructureUnavailableError, match="not a choice"):
        selected_infrastructure({ENV_INFRA: "kafka"})
    with pytest.raises(InfrastructureUnavailableError, match="combines with nothing"):
        selected_infrastructure({ENV_INFRA: "docker,ferretdb"})
    (report,) = infrastructure_report({ENV_INFRA: "kafka-jvm,ferretdb"})
    assert f"Apache Kafka {kafka_version()}" in report
    assert f"FerretDB {ferretdb_version()}" in report


def test_provider_starts_both_real_servers_and_stops_them() -> None:
    env = {ENV_INFRA: "kafka-jvm,ferretdb"}
    with provide_test_infrastructure(env) as infra:
        assert (infra.kafka_kind, infra.mongodb_kind) == ("kafka-jvm", "ferretdb")
        assert len(infra.server_pids) == 2
        kafka_ping(infra.kafka_bootstrap)
        mongodb_ping(infra.mongodb_url)
        pids = infra.server_pids
    assert _survivors(pids) == []


def test_sigkilled_parent_takes_the_real_servers_along(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import time
        from tests.support.real_servers import FerretDB, JvmKafka

        kafka, ferret = JvmKafka(), FerretDB()
        kafka.start()
        ferret.start()
        print(kafka.pid, ferret.pid, flush=True)
        time.sleep(300)
        """
    )
    env = {key: value for key, value in os.environ.items() if not key.startswith("PAYMENTS_")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    env["TMPDIR"] = str(tmp_path)
    parent = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    pids: list[int] = []
    try:
        assert parent.stdout is not None
        ready, _, _ = select.select([parent.stdout], [], [], 120)
        line = parent.stdout.readline().decode() if ready else ""
        if not line.strip():
            parent.kill()
            _, stderr = parent.communicate(timeout=10)
            pytest.fail(f"the child reported no pids: {stderr.decode(errors='replace')[-3000:]}")
        pids = [int(pid) for pid in line.split()]
        assert len(pids) == 2 and all(_pid_alive(pid) for pid in pids)
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        for stream in (parent.stdout, parent.stderr):
            if stream is not None:
                stream.close()
    assert _survivors(pids) == []


def test_env_addresses_still_win_over_the_choice(kafka: JvmKafka, ferretdb: FerretDB) -> None:
    env = {
        ENV_INFRA: "kafka-jvm,ferretdb",
        ENV_KAFKA: kafka.bootstrap_servers,
        ENV_MONGODB_URL: ferretdb.url,
    }
    with provide_test_infrastructure(env) as infra:
        assert (infra.kafka_bootstrap, infra.mongodb_url) == (kafka.bootstrap_servers, ferretdb.url)
        assert infra.server_pids == ()


def test_a_failed_storage_format_says_what_kafka_said(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Found in a loaded run: when formatting the KRaft storage failed, the work
    directory (and the log in it) was removed before the log was read, and a
    FileNotFoundError hid what Kafka said."""
    from tests.support import real_servers

    def failing_format(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[bytes]:
        log = kwargs["stdout"]
        log.write(b"Exception in thread main: could not reserve enough space\n")  # type: ignore[attr-defined]
        return subprocess.CompletedProcess(command, 1)

    monkeypatch.setattr(real_servers.subprocess, "run", failing_format)
    workdir = tmp_path / "kafka"
    workdir.mkdir()
    with pytest.raises(real_servers.EmbeddedServerError) as failed:
        real_servers.JvmKafka()._command(9092, workdir)
    assert "formatting the KRaft storage failed (1)" in str(failed.value)
    assert "could not reserve enough space" in str(failed.value)
    assert not workdir.exists()
