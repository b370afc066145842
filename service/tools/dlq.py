"""Dead letters: list, show and re-drive what landed on `payments.dlq`.

A dead letter carries the original record byte for byte (contract section 5), so
re-driving it means writing that key, value and those headers back to the source
topic, into the partition it came from. Re-driving is safe to repeat: the service
de-duplicates by the event id inside the value, so a letter re-driven twice takes
effect at most once.

Letters are identified by their CloudEvent `id`, which the service derives from
the source record (topic, partition, offset): the same failure written twice (a
re-delivered batch) has the same id and is listed once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from pydantic_core import from_json

from schemas.dead_letter import DeadLetter, DeadLetterKind
from schemas.topics import DLQ_TOPIC, EVENT_MODELS, PAYMENTS_DEAD_LETTER
from schemas.wire_time import wire_time
from service.tools.connection import Connection, ToolError
from service.tools.kafka_io import (
    OutgoingRecord,
    ProgressCallback,
    read_ranges,
    resolve_ranges,
    send_records,
    throwaway_consumer,
    tool_producer,
    topic_partitions,
)
from service.tools.time_window import TimeWindow

NOT_REDRIVABLE: dict[DeadLetterKind, str] = {
    DeadLetterKind.TOO_LARGE: (
        "the letter keeps only the start of a value over the size limit; the original "
        "cannot be rebuilt from it and would be rejected again"
    ),
}
"""Kinds whose letter cannot reproduce the original record, and why."""


@dataclass(frozen=True, slots=True)
class DeadLetterEntry:
    """One dead letter as read from the DLQ topic."""

    id: str
    dlq_partition: int
    dlq_offset: int
    subject: str | None
    letter: DeadLetter
    event: dict[str, Any]
    """The whole dead-letter CloudEvent as JSON, for `show` and `--json`."""

    @property
    def kind(self) -> DeadLetterKind:
        return self.letter.error.kind

    @property
    def key_text(self) -> str | None:
        if self.letter.key is not None:
            return self.letter.key
        return None if self.letter.key_base64 is None else f"base64:{self.letter.key_base64}"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "dlq_partition": self.dlq_partition,
            "dlq_offset": self.dlq_offset,
            "source_topic": self.letter.source_topic,
            "partition": self.letter.partition,
            "offset": self.letter.offset,
            "key": self.key_text,
            "subject": self.subject,
            "kind": self.kind.value,
            "detail": self.letter.error.detail,
            "truncated": bool(self.letter.truncated),
            "failed_at": wire_time(self.letter.failed_at),
            "event": self.event,
        }


@dataclass(frozen=True, slots=True)
class DeadLetterScan:
    """Everything readable on the DLQ, oldest first, and what could not be read."""

    entries: list[DeadLetterEntry]
    unreadable: list[str] = field(default_factory=list)
    """`partition@offset: why` of records on the DLQ that are not dead letters."""


@dataclass(frozen=True, slots=True)
class DeadLetterFilter:
    """Which letters an operator means; every given criterion must match."""

    source_topic: str | None = None
    """A contract topic name (`checkout.completed`) or a full, prefixed topic name."""
    kind: DeadLetterKind | None = None
    window: TimeWindow = field(default_factory=TimeWindow)
    """Compared with the letter's `failed_at`."""
    cart_id: str | None = None
    """Matches the letter's original key or its subject."""

    def matches(self, entry: DeadLetterEntry, prefix: str) -> bool:
        letter = entry.letter
        if self.source_topic is not None and letter.source_topic not in (
            self.source_topic,
            prefix + self.source_topic,
        ):
            return False
        if self.kind is not None and letter.error.kind != self.kind:
            return False
        if not self.window.contains(letter.failed_at):
            return False
        return self.cart_id is None or self.cart_id in (letter.key, entry.subject)


def parse_dead_letter(partition: int, offset: int, value: bytes | None) -> DeadLetterEntry:
    """Read one DLQ record; `ValueError` if it is not a `payments.dead_letter` event."""
    if value is None:
        raise ValueError("no value")
    try:
        document = from_json(value)
    except ValueError as exc:
        raise ValueError(f"not JSON: {exc}") from exc
    try:
        event = EVENT_MODELS[PAYMENTS_DEAD_LETTER].model_validate(document)
    except ValidationError as exc:
        raise ValueError(f"not a dead letter: {exc.error_count()} validation errors") from exc
    if event.type != PAYMENTS_DEAD_LETTER or not isinstance(event.data, DeadLetter):
        raise ValueError(f"event type {event.type!r} is not {PAYMENTS_DEAD_LETTER!r}")
    return DeadLetterEntry(
        id=event.id,
        dlq_partition=partition,
        dlq_offset=offset,
        subject=event.subject,
        letter=event.data,
        event=document,
    )


async def read_dead_letters(
    connection: Connection, *, progress: ProgressCallback | None = None
) -> DeadLetterScan:
    """Read the whole DLQ topic, from the beginning to the end offsets taken now."""
    bootstrap = connection.require_kafka()
    topic = connection.topic(DLQ_TOPIC)
    entries: dict[str, DeadLetterEntry] = {}
    unreadable: list[str] = []
    async with throwaway_consumer(bootstrap) as consumer:
        ranges = await resolve_ranges(consumer, topic)
        total = sum(r.size for r in ranges)
        done = 0
        async for record in read_ranges(consumer, topic, ranges):
            done += 1
            try:
                entry = parse_dead_letter(record.partition, record.offset, record.value)
            except ValueError as exc:
                unreadable.append(f"{record.partition}@{record.offset}: {exc}")
            else:
                entries.setdefault(entry.id, entry)
            if progress is not None and (done % 100 == 0 or done == total):
                progress(done, total)
    ordered = sorted(entries.values(), key=lambda e: (e.letter.failed_at, e.id))
    return DeadLetterScan(ordered, unreadable)


async def list_dead_letters(
    connection: Connection,
    selection: DeadLetterFilter | None = None,
    *,
    progress: ProgressCallback | None = None,
) -> DeadLetterScan:
    selection = selection or DeadLetterFilter()
    scan = await read_dead_letters(connection, progress=progress)
    chosen = [e for e in scan.entries if selection.matches(e, connection.topic_prefix)]
    return DeadLetterScan(chosen, scan.unreadable)


def find_entries(scan: DeadLetterScan, ids: Sequence[str]) -> list[DeadLetterEntry]:
    """The letters with the given ids, in the order given; `ToolError` naming any unknown."""
    by_id = {e.id: e for e in scan.entries}
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise ToolError(f"no dead letter with id {', '.join(missing)} on the DLQ")
    return [by_id[i] for i in dict.fromkeys(ids)]


@dataclass(frozen=True, slots=True)
class RedriveItem:
    entry: DeadLetterEntry
    target_topic: str
    target_partition: int | None
    skipped: str | None = None
    """Why the letter is not re-driven, if it is not."""

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.entry.id,
            "topic": self.target_topic,
            "partition": self.target_partition,
            "key": self.entry.key_text,
            "kind": self.entry.kind.value,
            "skipped": self.skipped,
        }


@dataclass(frozen=True, slots=True)
class RedriveResult:
    items: list[RedriveItem]
    dry_run: bool

    @property
    def sent(self) -> list[RedriveItem]:
        return [] if self.dry_run else [i for i in self.items if i.skipped is None]

    @property
    def would_send(self) -> list[RedriveItem]:
        return [i for i in self.items if i.skipped is None]

    @property
    def skipped(self) -> list[RedriveItem]:
        return [i for i in self.items if i.skipped is not None]

    def summary(self) -> str:
        topics = {i.target_topic for i in self.would_send}
        verb = "would re-drive" if self.dry_run else "re-drove"
        line = f"{verb} {len(self.would_send)} dead letter(s) to {len(topics)} topic(s)"
        if self.skipped:
            line += f", skipped {len(self.skipped)}"
        return line

    def to_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "sent": len(self.sent),
            "skipped": len(self.skipped),
            "items": [i.to_json() for i in self.items],
            "summary": self.summary(),
        }


async def redrive(
    connection: Connection,
    entries: Iterable[DeadLetterEntry],
    *,
    dry_run: bool = False,
    progress: ProgressCallback | None = None,
) -> RedriveResult:
    """Write each letter's original record back to its source topic and partition.

    The partition is the one the record came from (per-cart order follows the
    partition), unless the topic no longer has it; then the key decides.
    """
    bootstrap = connection.require_kafka()
    chosen = list(entries)
    items: list[RedriveItem] = []
    async with throwaway_consumer(bootstrap) as consumer:
        partitions: dict[str, list[int]] = {}
        for entry in chosen:
            topic = entry.letter.source_topic
            if topic not in partitions:
                try:
                    partitions[topic] = await topic_partitions(consumer, topic)
                except ToolError:
                    partitions[topic] = []
            reason = NOT_REDRIVABLE.get(entry.kind)
            if entry.letter.truncated and reason is None:
                # Only a prefix of the original was kept: sending it back would be a
                # different message (the full original is in the producer's hands).
                reason = (
                    f"the letter holds a cut copy ({entry.letter.original_size} bytes "
                    "originally); send the original again from its producer"
                )
            if not partitions[topic]:
                reason = f"source topic {topic!r} does not exist"
            partition = entry.letter.partition
            items.append(
                RedriveItem(
                    entry=entry,
                    target_topic=topic,
                    target_partition=partition if partition in partitions[topic] else None,
                    skipped=reason,
                )
            )
    result = RedriveResult(items, dry_run)
    if dry_run or not result.would_send:
        return result
    records = [
        OutgoingRecord(
            topic=item.target_topic,
            key=item.entry.letter.original_key(),
            value=item.entry.letter.original_value(),
            headers=tuple(item.entry.letter.original_headers()),
            partition=item.target_partition,
        )
        for item in result.would_send
    ]
    async with tool_producer(bootstrap) as producer:
        await send_records(producer, records, progress=progress, total=len(records))
    return result
