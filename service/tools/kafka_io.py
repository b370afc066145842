"""Reading a bounded range of a topic and writing records back, for the ops tools.

The tools read with a throwaway consumer: no consumer group, so nothing is
committed and the service's group is never disturbed; partitions are assigned
by hand and read from a start offset up to an end offset taken *before* reading.
The end is a snapshot on purpose: a replay writes into the very topic it reads,
and reading "to the end" would otherwise chase its own copies forever.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from service.tools.connection import ToolError

ProgressCallback = Callable[[int, int | None], None]
"""Called with (records done, records in total if known) as a tool advances."""

MAX_REQUEST_BYTES = 4 * 1024 * 1024
"""Large enough for any value the service accepts (1 MiB) plus envelope and headers."""

STALL_TIMEOUT_S = 30.0
"""Reading gives up when a partition delivers nothing for this long before its end."""

TANSU_CLUSTER_ID = "tansu_cluster"
"""The cluster id Tansu reports unless configured otherwise (the embedded broker's)."""

_lagging_end_offsets: weakref.WeakKeyDictionary[AIOKafkaConsumer, bool] = (
    weakref.WeakKeyDictionary()
)
"""Per throwaway consumer: whether its broker's end offsets may lag (Tansu)."""


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """One record as it sits in a topic."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]


@dataclass(frozen=True, slots=True)
class PartitionRange:
    """Offsets `[start, end)` of one partition."""

    partition: int
    start: int
    end: int
    open_end: bool = False
    """`end` is a broker's end offset that may lag (Tansu's), taken at the start, not
    a bound the operator gave: records written before the read began still belong
    to the range even past `end`. The embedded Tansu reports an end offset that
    lags behind a multi-record batch; Apache Kafka's is exact, so ranges on it
    are never open."""

    @property
    def size(self) -> int:
        return max(0, self.end - self.start)


@dataclass(frozen=True, slots=True)
class OutgoingRecord:
    """A record to write; `partition=None` lets the key choose the partition."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()
    partition: int | None = None


async def stop_consumer(consumer: AIOKafkaConsumer) -> None:
    """Stop a consumer, absorbing aiokafka's stray CancelledError on close.

    Without a group, aiokafka's `NoGroupCoordinator.close()` cancels its own
    background task and then awaits it; when that task had not started yet the
    await raises CancelledError although nobody cancelled *us*. Re-raise only a
    real cancellation of the current task.
    """
    try:
        await consumer.stop()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise


async def _start(client: AIOKafkaConsumer | AIOKafkaProducer, bootstrap: str) -> None:
    """Start a tool's client; a broker that does not answer is the operator's to fix."""
    try:
        await client.start()
    except KafkaError as exc:
        raise ToolError(f"cannot reach Kafka at {bootstrap!r}: {exc}") from exc


@asynccontextmanager
async def throwaway_consumer(bootstrap: str) -> AsyncIterator[AIOKafkaConsumer]:
    """A consumer without a group: it commits nothing and joins no rebalance."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        client_id="payments-cli",
        max_partition_fetch_bytes=MAX_REQUEST_BYTES,
    )
    await _start(consumer, bootstrap)
    try:
        _lagging_end_offsets[consumer] = await broker_is_tansu(bootstrap)
        yield consumer
    finally:
        await stop_consumer(consumer)


async def broker_is_tansu(bootstrap: str) -> bool:
    """Whether the broker at `bootstrap` is Tansu, whose end offsets lag (see `read_ranges`).

    Told by the cluster id Tansu reports. When the broker cannot say, the answer is
    yes: the Tansu workaround is correct on every broker, only a little slower.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="payments-cli")
    try:
        await admin.start()
        cluster = await admin.describe_cluster()
    except Exception:
        return True
    finally:
        await admin.close()
    return str(cluster.get("cluster_id") or "") == TANSU_CLUSTER_ID


@asynccontextmanager
async def tool_producer(bootstrap: str) -> AsyncIterator[AIOKafkaProducer]:
    # No idempotent producer: not every broker (the embedded Tansu) supports it, and
    # the records carry event ids, so a duplicate from a retry is de-duplicated anyway.
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        client_id="payments-cli",
        acks="all",
        enable_idempotence=False,
        linger_ms=5,
        max_request_size=MAX_REQUEST_BYTES,
    )
    await _start(producer, bootstrap)
    try:
        yield producer
    finally:
        await producer.stop()


async def topic_partitions(consumer: AIOKafkaConsumer, topic: str) -> list[int]:
    """The partitions of `topic`; `ToolError` if the broker does not know the topic."""
    # Read them from a fresh all-topics answer (what `consumer.topics()` asks for and
    # drops): `consumer.partitions_for_topic()` only reads the client's cache, which
    # Apache Kafka leaves without the topics for a consumer that subscribes to none
    # (Tansu's answers happened to fill it).
    cluster = await consumer._client.fetch_all_metadata()
    partitions = cluster.partitions_for_topic(topic) if topic in cluster.topics() else None
    if not partitions:
        raise ToolError(f"topic {topic!r} does not exist on the broker")
    return sorted(partitions)


async def resolve_ranges(
    consumer: AIOKafkaConsumer,
    topic: str,
    *,
    partition: int | None = None,
    from_offset: int | None = None,
    to_offset: int | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[PartitionRange]:
    """Turn offset and time bounds into per-partition ranges.

    `to_offset` is inclusive (what an operator reads off a dead letter or a log
    line); `until` is exclusive. Time bounds use the record timestamps through
    `offsets_for_times`. Both kinds of bound may be combined: the narrower wins.
    """
    all_partitions = await topic_partitions(consumer, topic)
    if partition is not None and partition not in all_partitions:
        raise ToolError(
            f"topic {topic!r} has no partition {partition} (it has {len(all_partitions)})"
        )
    chosen = [partition] if partition is not None else all_partitions
    tps = [TopicPartition(topic, p) for p in chosen]
    beginnings = await consumer.beginning_offsets(tps)
    ends = await consumer.end_offsets(tps)
    # Unknown consumers (not from throwaway_consumer) get the workaround: it is safe.
    lagging = _lagging_end_offsets.get(consumer, True)
    starts = {tp: beginnings[tp] for tp in tps}
    stops = {tp: ends[tp] for tp in tps}
    if since is not None:
        for tp, offset in (await _offsets_at(consumer, tps, since, ends)).items():
            starts[tp] = max(starts[tp], offset)
    if until is not None:
        for tp, offset in (await _offsets_at(consumer, tps, until, ends)).items():
            stops[tp] = min(stops[tp], offset)
    if from_offset is not None:
        starts = {tp: max(start, from_offset) for tp, start in starts.items()}
    if to_offset is not None:
        stops = {tp: min(stop, to_offset + 1) for tp, stop in stops.items()}
    return [
        PartitionRange(
            tp.partition,
            starts[tp],
            max(starts[tp], stops[tp]),
            open_end=lagging and stops[tp] == ends[tp],
        )
        for tp in tps
    ]


async def _offsets_at(
    consumer: AIOKafkaConsumer,
    tps: Sequence[TopicPartition],
    instant: datetime,
    ends: dict[TopicPartition, int],
) -> dict[TopicPartition, int]:
    """The first offset at or after `instant` per partition (the end when none is)."""
    timestamp_ms = int(instant.timestamp() * 1000)
    found = await consumer.offsets_for_times({tp: timestamp_ms for tp in tps})
    result = {}
    for tp in tps:
        entry = found.get(tp)
        # Kafka answers "no such record" with no entry; some brokers (Tansu) with a
        # negative timestamp instead.
        result[tp] = ends[tp] if entry is None or entry.timestamp < 0 else entry.offset
    return result


async def read_ranges(
    consumer: AIOKafkaConsumer,
    topic: str,
    ranges: Iterable[PartitionRange],
    *,
    stall_timeout_s: float = STALL_TIMEOUT_S,
) -> AsyncIterator[StoredRecord]:
    """Yield the records of `ranges`, partition by partition in offset order."""
    remaining = {TopicPartition(topic, r.partition): r for r in ranges if r.size > 0}
    if not remaining:
        return
    consumer.assign(list(remaining))
    for tp, r in remaining.items():
        consumer.seek(tp, r.start)
    started_ms = int(time.time() * 1000)
    finished: set[TopicPartition] = set()
    quiet_rounds: dict[TopicPartition, int] = dict.fromkeys(remaining, 0)
    last_progress = time.monotonic()
    while remaining:
        batches = await consumer.getmany(*remaining, timeout_ms=500, max_records=500)
        if any(batches.values()):
            last_progress = time.monotonic()
        for tp in remaining:
            quiet_rounds[tp] = 0 if batches.get(tp) else quiet_rounds[tp] + 1
        for tp, records in batches.items():
            wanted = remaining.get(tp)
            if wanted is None:
                continue
            for record in records:
                if record.offset >= wanted.end and not (
                    wanted.open_end and record.timestamp <= started_ms
                ):
                    finished.add(tp)
                    break
                yield StoredRecord(
                    topic=record.topic,
                    partition=record.partition,
                    offset=record.offset,
                    timestamp_ms=record.timestamp,
                    key=record.key,
                    value=record.value,
                    headers=tuple((k, v or b"") for k, v in record.headers),
                )
        for tp, bounds in list(remaining.items()):
            caught_up = await consumer.position(tp) >= bounds.end
            # An open end (Tansu only, see PartitionRange.open_end) is done once two
            # fetches in a row brought nothing more.
            if tp in finished or (caught_up and (not bounds.open_end or quiet_rounds[tp] >= 2)):
                del remaining[tp]
        if remaining and time.monotonic() - last_progress > stall_timeout_s:
            positions = [f"{tp.partition}@{await consumer.position(tp)}" for tp in remaining]
            stuck = ", ".join(positions)
            raise ToolError(f"reading {topic!r} stalled before the end (partitions {stuck})")


async def send_records(
    producer: AIOKafkaProducer,
    records: Iterable[OutgoingRecord],
    *,
    progress: ProgressCallback | None = None,
    total: int | None = None,
    window: int = 500,
) -> int:
    """Write `records` in order and wait until the broker acknowledged every one.

    Up to `window` sends are in flight at once; aiokafka keeps one batch per
    partition in flight, so the order within a partition is kept.
    """
    pending: list[asyncio.Future[object]] = []
    sent = 0
    try:
        for record in records:
            pending.append(
                await producer.send(
                    record.topic,
                    record.value,
                    key=record.key,
                    headers=list(record.headers),
                    partition=record.partition,
                )
            )
            if len(pending) >= window:
                await asyncio.gather(*pending)
                sent += len(pending)
                pending.clear()
                if progress is not None:
                    progress(sent, total)
        await asyncio.gather(*pending)
    except KafkaError as exc:
        raise ToolError(f"writing to Kafka failed after {sent} records: {exc}") from exc
    sent += len(pending)
    if progress is not None:
        progress(sent, total)
    return sent
