"""Counting and capturing the MongoDB commands a process issues (pymongo monitoring).

`CommandCounter` is registered globally in the service subprocesses and in the
store replay, so both sides report the same numbers per `(command, collection)`:
`[commands, statements, bytes written]`: statements are the documents inserted and
the update/delete statements; bytes written are the BSON size of the write commands
(insert, update, delete, findAndModify) as the driver sent them.
"""

from __future__ import annotations

import contextvars
import copy
import threading
from collections.abc import Callable
from typing import Any

import bson
from pymongo import monitoring

#: Commands that are not part of handling an event (handshakes, sessions, indexes).
IGNORED_COMMANDS = frozenset(
    {
        "ismaster",
        "isMaster",
        "hello",
        "ping",
        "endSessions",
        "createIndexes",
        "listIndexes",
        "buildInfo",
        "getMore",
        "killCursors",
        "serverStatus",
        "dropDatabase",
        "listCollections",
        "count",
        "aggregate",
        "saslStart",
        "saslContinue",
    }
)

ARRAY_FIELDS = {"insert": "documents", "update": "updates", "delete": "deletes"}
WRITE_COMMANDS = frozenset({"insert", "update", "delete", "findAndModify"})


def command_key(name: str, command: Any) -> str:
    target = command.get(name)
    return f"{name} {target}" if isinstance(target, str) else name


def written_size(name: str, command: Any) -> int:
    """The BSON size of a write command (0 for a read): the bytes it sends to the server."""
    if name not in WRITE_COMMANDS:
        return 0
    return len(bson.encode(command))


def add_counts(total: dict[str, list[int]], counts: dict[str, list[int]]) -> None:
    """Adds `counts` into `total`, entry by entry (entries of older files have two
    numbers, no bytes)."""
    for key, values in counts.items():
        entry = total.setdefault(key, [0, 0, 0])
        for index, value in enumerate(values):
            entry[index] += value


def statements(name: str, command: Any) -> int:
    field = ARRAY_FIELDS.get(name)
    if field is None:
        return 1
    return len(command.get(field) or ()) or 1


class CommandCounter(monitoring.CommandListener):
    """Counts `(command, collection)` → [commands, statements, bytes written];
    optionally captures."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: dict[str, list[int]] = {}
        self.micros: dict[str, int] = {}
        self._pending: dict[tuple[int, int], str] = {}
        self.enabled = True
        self.capture: Callable[[str, Any], None] | None = None

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        name = event.command_name
        if not self.enabled or name in IGNORED_COMMANDS:
            return
        command = event.command
        key = command_key(name, command)
        size = written_size(name, command)
        with self.lock:
            entry = self.counts.setdefault(key, [0, 0, 0])
            entry[0] += 1
            entry[1] += statements(name, command)
            entry[2] += size
            self._pending[(event.request_id, event.operation_id or 0)] = key
        if self.capture is not None:
            self.capture(name, copy.deepcopy(dict(command)))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        self._finish(event)

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        self._finish(event)

    def _finish(self, event: Any) -> None:
        with self.lock:
            key = self._pending.pop((event.request_id, event.operation_id or 0), None)
            if key is not None:
                self.micros[key] = self.micros.get(key, 0) + event.duration_micros

    def mean_ms(self) -> dict[str, float]:
        """Mean round trip per command kind, as the client saw it (includes queueing)."""
        with self.lock:
            return {
                k: round(self.micros.get(k, 0) / 1000 / v[0], 3)
                for k, v in sorted(self.counts.items())
                if v[0]
            }

    def snapshot(self) -> dict[str, list[int]]:
        with self.lock:
            return {k: list(v) for k, v in self.counts.items()}

    def reset(self) -> None:
        with self.lock:
            self.counts.clear()
            self.micros.clear()


def per_checkout(counts: dict[str, list[int]], checkouts: int) -> dict[str, dict[str, float]]:
    """Commands, statements and bytes written per checkout, by `(command, collection)`."""
    checkouts = max(checkouts, 1)
    result = {}
    for key, values in sorted(counts.items()):
        c, s, size = (*values, 0)[:3]
        result[key] = {
            "commands": round(c / checkouts, 3),
            "statements": round(s / checkouts, 3),
            "bytes_written": round(size / checkouts, 1),
        }
    return result


def totals(counts: dict[str, list[int]]) -> tuple[int, int]:
    return sum(v[0] for v in counts.values()), sum(v[1] for v in counts.values())


def bytes_written(counts: dict[str, list[int]]) -> int:
    """The bytes of all write commands (0 from files written before they were counted)."""
    return sum(v[2] for v in counts.values() if len(v) > 2)


#: Which handler (cart id) issued a command, for attributing commands in calibration.
current_cart: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "bench_current_cart", default=None
)

#: Set while the store's group writer runs (commands written for many handlers).
in_group_write: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "bench_in_group_write", default=False
)
