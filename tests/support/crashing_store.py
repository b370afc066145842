"""A store wrapper that stops the service between storing an outcome and publishing it.

Contract promise 3 (a crash between the store write and the publish loses nothing)
needs the service to die at exactly that instruction. Production code has no hook
for it; the test wraps the store port instead: every save of a batch goes through,
and once a save has stored events to publish, `crash` runs before the save returns,
so the batch never reaches its publish. `crash` SIGKILLs the process (a real crash)
or never returns (a process that hangs there until it is stopped).

Only the consumer's batches are wrapped (`StoreBatch`, made by `batch()`); the relay
and the reconciler use the store as it is. Everything else is delegated.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from service.domain.model import PaymentCollection

Crash = Callable[[], Awaitable[None]]


class _CrashingBatch:
    def __init__(self, batch: Any, crash: Crash) -> None:
        self._batch = batch
        self._crash = crash

    def __getattr__(self, name: str) -> Any:
        return getattr(self._batch, name)

    async def save(
        self,
        collection: PaymentCollection,
        expected_version: int | None,
        snapshot: object | None = None,
    ) -> int:
        version: int = await self._batch.save(collection, expected_version, snapshot)
        if collection.unsent_events:
            await self._crash()
        return version


class CrashAfterStore:
    """`store`, whose batches run `crash` right after storing events to publish."""

    def __init__(self, store: Any, crash: Crash) -> None:
        self._store = store
        self._crash = crash

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def batch(self) -> _CrashingBatch:
        return _CrashingBatch(self._store.batch(), self._crash)


def crash_after_store(app: Any, crash: Crash) -> None:
    """Make the consumer of `app` (a `PaymentsApp`, not started) run `crash` after
    storing an outcome and before publishing it."""
    app.processor.store = CrashAfterStore(app.processor.store, crash)
