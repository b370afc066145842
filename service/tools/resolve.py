"""Resolve: a person's word on an operation that needs attention (contract promise 9).

An operation is marked `needs_attention` when its provider cannot tell what became of
it and the window in which repeating it is safe has passed; the service never guesses.
Once a person has looked at the provider (its dashboard) they say what happened:

    payments resolve <payment id> <command id> --happened      # the money moved
    payments resolve <payment id> <command id> --did-not-happen

The payment's books follow, through the same domain rule as a provider's answer
(`PaymentCollection.resolve`): booked and announced (`payment.captured`,
`payment.refunded`, `payment.canceled`), or released and answered `payment.failed`.
The write is version-checked like any other; the events it records are published by
the running service's outbox relay, with their ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pymongo import AsyncMongoClient

from service.adapters.mongo_store import MongoCollectionStore
from service.domain.calls import Ask
from service.domain.outcomes import ProviderOutcome
from service.domain.results import Decision
from service.tools.connection import Connection, ToolError
from service.unit_of_work import HandleResult, UnitOfWork, Work


@dataclass(frozen=True, slots=True)
class Resolution:
    payment_id: str
    command_id: str
    happened: bool
    by: str
    result: HandleResult

    def to_json(self) -> dict[str, Any]:
        events = [e for c, _ in self.result.saved for e in c.unsent_events]
        return {
            "payment_id": self.payment_id,
            "command_id": self.command_id,
            "happened": self.happened,
            "by": self.by,
            "outcome": self.result.status,
            "events": [{"id": e.id, "type": e.type} for e in events],
        }

    def summary(self) -> str:
        what = "happened" if self.happened else "did not happen"
        return (
            f"{self.command_id} on {self.payment_id}: resolved as {what} by {self.by}; "
            "the relay publishes what it recorded"
        )


async def _no_questions(ask: Ask) -> ProviderOutcome:  # pragma: no cover - never asked
    raise AssertionError("resolving asks no provider")


async def resolve(
    connection: Connection, payment_id: str, command_id: str, *, happened: bool, by: str
) -> Resolution:
    """Settle `command_id` of `payment_id` as a person says; `ToolError` if it is not an
    operation that needs attention."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        connection.require_mongodb(), tz_aware=True, serverSelectionTimeoutMS=10_000
    )
    store = MongoCollectionStore(client[connection.database])
    now = datetime.now(UTC)

    def decide(loaded: Any, _: Any) -> Decision:
        if loaded is None:
            return Decision("ignored", note=f"no payment {payment_id!r}")
        result: Decision = loaded.collection.resolve(command_id, happened, by, now)
        return result

    try:
        result = await UnitOfWork(store, _no_questions).run(
            Work(payment_id, lambda: store.load_by_payment(payment_id), decide)
        )
    finally:
        await client.close()
    if result.status != "applied":
        raise ToolError(result.note or f"nothing to resolve for {command_id!r}")
    return Resolution(payment_id, command_id, happened, by, result)
