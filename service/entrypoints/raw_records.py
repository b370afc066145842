"""FastStream's parsing of a batch, made total: records reach `BatchProcessor` as they came.

FastStream's default batch parser decodes every header value as UTF-8 text (a
header of bytes that are not UTF-8, or a null header value, raises before our
handler runs) and its decoder reads the body according to the `content-type`
header (a record that says JSON and is not raises). Either stops the whole batch,
again on every re-delivery: one record could stall every partition for good.

So the subscriber gets this parser and decoder: the framework sees only the
headers it can read (its own `content-type`, `correlation_id` and tracing
lookups work as before), keeps the untouched records as `raw_message`, and
decodes nothing. Everything about a record's content is the consumer's, inside
each record's boundary (see `service.consumer`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import ConsumerRecord


def _readable_headers(record: ConsumerRecord[Any, Any]) -> list[tuple[str, bytes]]:
    readable = []
    for name, value in record.headers or ():
        if value is None:
            continue
        try:
            value.decode("utf-8")
        except (UnicodeDecodeError, AttributeError):
            continue
        readable.append((name, value))
    return readable


async def parse_batch(
    records: tuple[ConsumerRecord[Any, Any], ...],
    original: Callable[[tuple[ConsumerRecord[Any, Any], ...]], Awaitable[Any]],
) -> Any:
    """FastStream's own batch parser over readable copies; the originals stay raw."""
    readable = tuple(dataclasses.replace(r, headers=_readable_headers(r)) for r in records)
    message = await original(readable)
    message.raw_message = records
    return message


async def decode_nothing(message: Any) -> Any:
    """The handler reads `raw_message`; there is nothing to decode."""
    return None
