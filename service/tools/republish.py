"""Republish: send stored outbound events again, with their original ids.

A `payment.*` event the service decided on is kept in its payment collection's
document until it is sent (`outbox`), then in the archive of sent events
(`sent_events`) for `PAYMENTS_EVENT_ARCHIVE_TTL_S` (a week by default; 0 keeps
none); answers to commands about no known payment are kept in `orphan_outcomes`.
A consumer that lost events (a topic wiped, a downstream bug) gets them back from
here exactly as first published: same id, key, value and `content-type` header, so
consumers that de-duplicate by id stay correct. Events sent longer ago than the
archive keeps them are gone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import orjson
from pymongo import AsyncMongoClient

from schemas.envelope import CLOUDEVENTS_CONTENT_TYPE
from schemas.wire_time import wire_time
from service.adapters.mongo_store import ARCHIVE, COLLECTIONS, ORPHANS
from service.adapters.stored_document import archived_event, stored_events
from service.domain.model import OutboxEvent
from service.tools.connection import Connection, ToolError
from service.tools.kafka_io import OutgoingRecord, ProgressCallback, send_records, tool_producer
from service.tools.time_window import TimeWindow


@dataclass(frozen=True, slots=True)
class RepublishSelection:
    """Which stored events: one cart's, and/or those created in a time window."""

    cart_id: str | None = None
    window: TimeWindow = field(default_factory=TimeWindow)
    """Compared with the event's `created_at`."""

    def validate(self) -> None:
        if self.cart_id is None and self.window.is_open:
            raise ToolError("say which events: --cart-id and/or --since/--until")

    def matches(self, event: OutboxEvent) -> bool:
        if self.cart_id is not None and event.key != self.cart_id:
            return False
        return self.window.contains(event.created_at)


@dataclass(frozen=True, slots=True)
class RepublishResult:
    events: list[OutboxEvent]
    dry_run: bool

    def summary(self) -> str:
        verb = "would republish" if self.dry_run else "republished"
        carts = {e.key for e in self.events}
        return f"{verb} {len(self.events)} event(s) of {len(carts)} cart(s) with their ids"

    def to_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "count": len(self.events),
            "events": [
                {
                    "id": e.id,
                    "type": e.type,
                    "key": e.key,
                    "created_at": wire_time(e.created_at),
                }
                for e in self.events
            ],
            "summary": self.summary(),
        }


async def find_stored_events(
    connection: Connection, selection: RepublishSelection
) -> list[OutboxEvent]:
    """The stored outbound events the selection names, oldest first."""
    selection.validate()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        connection.require_mongodb(), tz_aware=True, serverSelectionTimeoutMS=10_000
    )
    try:
        database = client[connection.database]
        query: dict[str, Any] = {}
        if selection.cart_id is not None:
            query["cart_id"] = selection.cart_id
        if selection.window.since is not None:
            # A collection is updated whenever it gains an event, so an event created
            # after `since` lives in a collection updated after `since`.
            query["updated_at"] = {"$gte": selection.window.since}
        events: list[OutboxEvent] = []
        async for document in database[COLLECTIONS].find(query):
            events.extend(e for e in stored_events(document) if selection.matches(e))
        # Sent events: their key is the cart's, `created_at` the event's own.
        archived: dict[str, Any] = {}
        if selection.cart_id is not None:
            archived["key"] = selection.cart_id
        # (BSON keeps milliseconds: the query is a millisecond wider, the match exact.)
        window: dict[str, Any] = {}
        if selection.window.since is not None:
            window["$gte"] = selection.window.since - timedelta(milliseconds=1)
        if selection.window.until is not None:
            window["$lt"] = selection.window.until + timedelta(milliseconds=1)
        if window:
            archived["created_at"] = window
        async for entry in database[ARCHIVE].find(archived):
            event = archived_event(entry)
            if selection.matches(event):
                events.append(event)
        # Orphan answers are few and keyed by the command; nested events cannot be
        # queried on every MongoDB-protocol server, so they are filtered here.
        async for document in database[ORPHANS].find({}):
            for raw in document.get("events", []):
                event = OutboxEvent.model_validate(raw)
                if selection.matches(event):
                    events.append(event)
    finally:
        await client.close()
    unique = {e.id: e for e in events}
    return sorted(unique.values(), key=lambda e: (e.created_at, e.id))


def outgoing(connection: Connection, event: OutboxEvent) -> OutgoingRecord:
    """The record the service itself wrote for `event` (see KafkaEventPublisher)."""
    return OutgoingRecord(
        topic=connection.topic(event.type),
        key=event.key.encode(),
        value=orjson.dumps(event.payload),
        headers=(("content-type", CLOUDEVENTS_CONTENT_TYPE.encode()),),
    )


async def republish(
    connection: Connection,
    selection: RepublishSelection,
    *,
    dry_run: bool = False,
    progress: ProgressCallback | None = None,
) -> RepublishResult:
    events = await find_stored_events(connection, selection)
    if not dry_run and events:
        async with tool_producer(connection.require_kafka()) as producer:
            await send_records(
                producer,
                (outgoing(connection, e) for e in events),
                progress=progress,
                total=len(events),
            )
    return RepublishResult(events, dry_run)
