"""Replay: copy a range of an inbound topic back into the same topic.

Each record is written back unchanged (key, headers, value, hence event id) into
the partition it was read from, so the service sees the same events again in the
same per-cart order. What was applied is recognised from the aggregate's inbox
and changes nothing; what was missed (a bug fixed since, data restored from a
backup) is applied now. That makes replay the recovery tool after an incident.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

from pydantic_core import from_json

from schemas.topics import INBOUND_TOPICS
from service.tools.connection import Connection, ToolError
from service.tools.kafka_io import (
    OutgoingRecord,
    PartitionRange,
    ProgressCallback,
    StoredRecord,
    read_ranges,
    resolve_ranges,
    send_records,
    throwaway_consumer,
    tool_producer,
)
from service.tools.time_window import TimeWindow


@dataclass(frozen=True, slots=True)
class ReplaySelection:
    """What to replay: one inbound topic, bounded by offsets and/or time."""

    topic: str
    """A contract inbound topic name such as `checkout.completed` (no prefix)."""
    partition: int | None = None
    from_offset: int | None = None
    to_offset: int | None = None
    """Inclusive."""
    window: TimeWindow = field(default_factory=TimeWindow)
    """Compared with the record timestamps."""
    cart_id: str | None = None
    """Only records whose key or `data.cart_id` is this cart."""

    def validate(self) -> None:
        if self.topic not in INBOUND_TOPICS:
            raise ToolError(
                f"{self.topic!r} is not an inbound topic; replay one of: "
                + ", ".join(INBOUND_TOPICS)
            )
        if self.from_offset is not None and self.from_offset < 0:
            raise ToolError("--from-offset must be >= 0")
        if (
            self.from_offset is not None
            and self.to_offset is not None
            and self.to_offset < self.from_offset
        ):
            raise ToolError("--to-offset must not be before --from-offset")


@dataclass(frozen=True, slots=True)
class ReplayResult:
    topic: str
    ranges: list[PartitionRange]
    read: int
    matched: int
    sent: int
    dry_run: bool

    def summary(self) -> str:
        verb = "would replay" if self.dry_run else "replayed"
        line = f"{verb} {self.matched if self.dry_run else self.sent} record(s) into {self.topic}"
        if self.matched != self.read:
            line += f" ({self.read} read, {self.read - self.matched} not for the cart)"
        return line

    def to_json(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "dry_run": self.dry_run,
            "read": self.read,
            "matched": self.matched,
            "sent": self.sent,
            "ranges": [
                {"partition": r.partition, "start": r.start, "end": r.end} for r in self.ranges
            ],
            "summary": self.summary(),
        }


def record_is_for_cart(record: StoredRecord, cart_id: str) -> bool:
    """Whether a record belongs to `cart_id`: its key, else the cart id in its data."""
    if record.key is not None and record.key == cart_id.encode():
        return True
    if not record.value:
        return False
    try:
        document = from_json(record.value)
    except ValueError:
        return False
    data = document.get("data") if isinstance(document, dict) else None
    return isinstance(data, dict) and data.get("cart_id") == cart_id


async def replay(
    connection: Connection,
    selection: ReplaySelection,
    *,
    dry_run: bool = False,
    progress: ProgressCallback | None = None,
    batch_size: int = 500,
) -> ReplayResult:
    """Replay the selected records; return what was read, matched and written."""
    selection.validate()
    bootstrap = connection.require_kafka()
    topic = connection.topic(selection.topic)
    read = matched = sent = 0
    async with throwaway_consumer(bootstrap) as consumer:
        ranges = await resolve_ranges(
            consumer,
            topic,
            partition=selection.partition,
            from_offset=selection.from_offset,
            to_offset=selection.to_offset,
            since=selection.window.since,
            until=selection.window.until,
        )
        total = sum(r.size for r in ranges)
        if progress is not None:
            progress(0, total)
        async with AsyncExitStack() as stack:
            producer = (
                None if dry_run else await stack.enter_async_context(tool_producer(bootstrap))
            )
            batch: list[OutgoingRecord] = []
            async for record in read_ranges(consumer, topic, ranges):
                read += 1
                if selection.cart_id is not None and not record_is_for_cart(
                    record, selection.cart_id
                ):
                    continue
                matched += 1
                batch.append(
                    OutgoingRecord(
                        topic=topic,
                        key=record.key,
                        value=record.value,
                        headers=record.headers,
                        partition=record.partition,
                    )
                )
                if len(batch) >= batch_size:
                    if producer is not None:
                        sent += await send_records(producer, batch)
                    batch.clear()
                    if progress is not None:
                        progress(read, total)
            if batch and producer is not None:
                sent += await send_records(producer, batch)
        if progress is not None:
            progress(read, total)
    return ReplayResult(topic, ranges, read, matched, sent, dry_run)
