"""Send: put hand-written events on the service's inbound topics.

Input is one JSON object, a JSON array of objects, or JSON lines. Every event is
checked with the service's own parser (`schemas.parse.parse_event`) on the exact
bytes that would be sent, and nothing is sent unless every event passes: a file
half-sent because line 7 had a typo is worse than one not sent at all.

The Kafka key follows the contract (cart id for cart and checkout events, payment
id for admin commands, provider id for webhooks). Admin commands are signed over
the exact value bytes when a key id and secret are given.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from schemas.parse import Rejection, parse_event
from schemas.topics import (
    ADMIN_COMMAND_TYPES,
    CART_UPDATED,
    CHECKOUT_COMPLETED,
    INBOUND_DATA_MODELS,
    PAYMENT_PROVIDER_WEBHOOK,
)
from service.admin_auth import SIGNATURE_HEADER, signature_header
from service.tools.connection import Connection, ToolError
from service.tools.kafka_io import OutgoingRecord, ProgressCallback, send_records, tool_producer

KEY_FIELD: dict[str, str] = {
    CART_UPDATED: "cart_id",
    CHECKOUT_COMPLETED: "cart_id",
    PAYMENT_PROVIDER_WEBHOOK: "provider_id",
    **dict.fromkeys(ADMIN_COMMAND_TYPES, "payment_id"),
}
"""The `data` field whose value is the Kafka key, per inbound event type (contract §1)."""


@dataclass(frozen=True, slots=True)
class Signer:
    key_id: str
    secret: str


@dataclass(frozen=True, slots=True)
class PreparedEvent:
    """A validated event and the record that carries it."""

    position: str
    """Where it was in the input (`event 2`, `line 7`), for messages."""
    event_id: str
    event_type: str
    key: str
    value: bytes
    signed: bool

    def record(self, connection: Connection) -> OutgoingRecord:
        return OutgoingRecord(
            topic=connection.topic(self.event_type),
            key=self.key.encode(),
            value=self.value,
            headers=self.headers(),
        )

    def headers(self) -> tuple[tuple[str, bytes], ...]:
        return ()


@dataclass(frozen=True, slots=True)
class SignedEvent(PreparedEvent):
    signature: str = ""

    def headers(self) -> tuple[tuple[str, bytes], ...]:
        return ((SIGNATURE_HEADER, self.signature.encode()),)


@dataclass(frozen=True, slots=True)
class InvalidEvent:
    position: str
    detail: str


@dataclass(frozen=True, slots=True)
class Preparation:
    events: list[PreparedEvent]
    invalid: list[InvalidEvent]
    unsigned_commands: list[str]
    """Positions of admin commands sent without a signature (the service will
    dead-letter them unless its signature check is off)."""


def load_items(text: str) -> list[tuple[str, Any]]:
    """Split input into `(position, parsed JSON or error text)` items.

    A document that parses as a whole is one event (an object) or many (an
    array); otherwise every non-blank line must be one JSON value.
    """
    if not text.strip():
        raise ToolError("the input is empty")
    try:
        document = json.loads(text)
    except json.JSONDecodeError:
        document = None
    else:
        if isinstance(document, list):
            return [(f"event {i}", item) for i, item in enumerate(document, start=1)]
        return [("event 1", document)]
    items: list[tuple[str, Any]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        # Events are counted as everywhere else; the line says where to look.
        position = f"event {len(items) + 1} (line {number})"
        try:
            items.append((position, json.loads(line)))
        except json.JSONDecodeError as exc:
            items.append((position, _NotJson(str(exc))))
    return items


@dataclass(frozen=True, slots=True)
class _NotJson:
    error: str


def prepare(items: list[tuple[str, Any]], signer: Signer | None = None) -> Preparation:
    """Validate and encode every item; sign admin commands when `signer` is given."""
    events: list[PreparedEvent] = []
    invalid: list[InvalidEvent] = []
    unsigned: list[str] = []
    for position, item in items:
        if isinstance(item, _NotJson):
            invalid.append(InvalidEvent(position, f"not JSON: {item.error}"))
            continue
        if not isinstance(item, dict):
            invalid.append(InvalidEvent(position, "an event must be a JSON object"))
            continue
        event_type = item.get("type")
        if event_type not in INBOUND_DATA_MODELS:
            invalid.append(
                InvalidEvent(
                    position,
                    f"type {event_type!r} is not an inbound event type; use one of "
                    + ", ".join(INBOUND_DATA_MODELS),
                )
            )
            continue
        # Compact, key order kept, integers exact: these bytes are validated, signed
        # and sent as they are.
        value = json.dumps(item, ensure_ascii=False, separators=(",", ":")).encode()
        parsed = parse_event(value, event_type)
        if isinstance(parsed, Rejection):
            invalid.append(InvalidEvent(position, f"{parsed.kind.value}: {parsed.detail}"))
            continue
        key = str(item["data"][KEY_FIELD[event_type]])
        common = {
            "position": position,
            "event_id": parsed.id,
            "event_type": event_type,
            "key": key,
            "value": value,
        }
        if event_type in ADMIN_COMMAND_TYPES and signer is not None:
            signature = signature_header(value, signer.key_id, signer.secret)
            events.append(SignedEvent(**common, signed=True, signature=signature))
        else:
            if event_type in ADMIN_COMMAND_TYPES:
                unsigned.append(position)
            events.append(PreparedEvent(**common, signed=False))
    return Preparation(events, invalid, unsigned)


async def send_prepared(
    connection: Connection,
    events: list[PreparedEvent],
    *,
    progress: ProgressCallback | None = None,
) -> int:
    if not events:
        return 0
    async with tool_producer(connection.require_kafka()) as producer:
        return await send_records(
            producer,
            (e.record(connection) for e in events),
            progress=progress,
            total=len(events),
        )
