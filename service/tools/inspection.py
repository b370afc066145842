"""Inspect: a cart's or a payment's stored state, for answering "what happened?".

Reads the one document that holds a payment collection (with its sessions,
payment, captures, refunds, reserved operations, history, inbox and unsent events),
and its events already sent from the archive (`sent_events`, kept for
`PAYMENTS_EVENT_ARCHIVE_TTL_S`), and offers it as JSON for scripts and as rich tables for people
(:mod:`service.tools.inspection_view`). Read-only: it never writes.

(Named `inspection`, not `inspect`, so it can never be mistaken for the standard
library module.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pymongo import AsyncMongoClient

from service.adapters.mongo_store import ARCHIVE, COLLECTIONS
from service.adapters.stored_document import archived_event, read_document
from service.domain.model import PaymentCollection
from service.tools.connection import Connection, ToolError


@dataclass(frozen=True, slots=True)
class Inspection:
    """One stored payment collection and how it was found."""

    looked_up: Literal["cart", "payment"]
    lookup_id: str
    version: int
    collection: PaymentCollection

    def summary(self) -> dict[str, Any]:
        c = self.collection
        p = c.payment
        return {
            "cart_id": c.cart_id,
            "collection_id": c.id,
            "status": c.status.value,
            "amount": c.amount,
            "currency_code": c.currency_code,
            "sessions": len(c.sessions),
            "payment_id": p.id if p else None,
            "authorized_amount": p.amount if p else 0,
            "captured_total": p.captured_total if p else 0,
            "refunded_total": p.refunded_total if p else 0,
            "canceled": bool(p and p.is_canceled),
            "disputes": [
                {"id": d.id, "status": d.status, "amount": d.amount, "reason": d.reason}
                for d in (p.disputes if p else [])
            ],
            "pending_operations": len(p.pending) if p else 0,
            "released_amount": p.released_amount if p else 0,
            "needs_attention": [
                {
                    "operation": op.operation,
                    "command_id": op.command_id,
                    "amount": op.amount,
                    "why": op.attention,
                }
                for op in c.needs_attention
            ],
            "holds_to_release": len(c.voids),
            "released_holds": len(c.released_holds),
            "facts_kept": len(c.parked),
            "inbox_events": len(c.processed),
            "outbox_events": len(c.outbox),
            "unsent_events": len(c.unsent_events),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "looked_up": self.looked_up,
            "id": self.lookup_id,
            "version": self.version,
            "summary": self.summary(),
            "collection": self.collection.model_dump(mode="json"),
        }


async def inspect(
    connection: Connection, looked_up: Literal["cart", "payment"], lookup_id: str
) -> Inspection:
    """Load the collection of a cart or a payment; `ToolError` if there is none."""
    field = "cart_id" if looked_up == "cart" else "payment_id"
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        connection.require_mongodb(), tz_aware=True, serverSelectionTimeoutMS=10_000
    )
    database = client[connection.database]
    try:
        document = await database[COLLECTIONS].find_one({field: lookup_id})
        if document is None:
            raise ToolError(
                f"no payment collection for {looked_up} {lookup_id!r} in database "
                f"{connection.database!r}"
            )
        collection, version, _ = read_document(document)
        # The events sent (archived) and those not yet, in the order they were made.
        query = {"key": collection.cart_id, "collection_id": collection.id}
        sent = [archived_event(e) async for e in database[ARCHIVE].find(query)]
    finally:
        await client.close()
    unsent = {e.id for e in collection.outbox}
    sent = sorted((e for e in sent if e.id not in unsent), key=lambda e: e.created_at)
    collection.outbox = [*sent, *collection.outbox]
    return Inspection(
        looked_up=looked_up, lookup_id=lookup_id, version=version, collection=collection
    )
