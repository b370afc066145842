"""The registry (`service/bus.py`): every inbound event type has one entry, and an entry
is all the consumer needs to order, prefetch, command and handle a new event type."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import BaseModel, ConfigDict

import schemas.parse
import schemas.topics
from schemas.envelope import CloudEvent
from schemas.inbound import (
    AdminCancel,
    AdminCapture,
    AdminRefund,
    CartUpdated,
    CheckoutCompleted,
    ProviderWebhook,
)
from schemas.topics import INBOUND_DATA_MODELS, INBOUND_TOPICS
from service import bus
from service.bus import Context, Inbound, Route
from service.consumer import Record
from service.domain.model import PaymentCollection, ProcessedEvent
from service.domain.results import Decision
from service.handlers import HandleResult, PaymentService
from service.ports.store import Loaded
from service.unit_of_work import Work
from tests.support.memory import RecordingPublisher
from tests.support.world import World

SERVICE = Path(__file__).resolve().parents[3] / "service"


def test_every_inbound_topic_has_exactly_one_entry() -> None:
    assert set(bus.ROUTES) == set(INBOUND_TOPICS)
    for event_type, route in bus.ROUTES.items():
        assert route.event_type == event_type
        assert route.data is INBOUND_DATA_MODELS[event_type], event_type


def test_cart_events_are_ordered_and_prefetched_by_cart_and_commands_by_payment() -> None:
    cart = CartUpdated.model_validate(
        {"cart_id": "c1", "region_id": "eu", "currency_code": "usd", "amount": 1}
    )
    checkout = CheckoutCompleted.model_validate(
        {
            "cart_id": "c1",
            "idempotency_key": "k",
            "region_id": "eu",
            "currency_code": "usd",
            "amount": 1,
            "provider_id": "fake",
        }
    )
    assert bus.route_for("cart.updated").ordering_key(Inbound("e", cart)) == "cart:c1"
    assert bus.route_for("checkout.completed").ordering_key(Inbound("e", checkout)) == "cart:c1"
    for event_type, model in (
        ("admin.payment.capture", AdminCapture),
        ("admin.payment.refund", AdminRefund),
        ("admin.payment.cancel", AdminCancel),
    ):
        command = model.model_validate({"payment_id": "p1", "requested_by": "ops"})
        route = bus.route_for(event_type)
        assert route.ordering_key(Inbound("cmd", command)) == "payment:p1"
        assert route.prefetch_payment is not None and route.prefetch_payment(command) == "p1"
        assert route.claim is not None
        # The claim names the command and what it means, never the clock or the key.
        assert route.claim(Inbound("cmd", command, key_id="k1")) == route.claim(
            Inbound("cmd", command)
        )
        assert route.claim(Inbound("cmd", command))[0] == "cmd"
    webhook = ProviderWebhook.model_validate(
        {
            "provider_id": "stripe",
            "received_at": "2026-01-01T00:00:00Z",
            "headers": {},
            "payload": "{}",
        }
    )
    assert bus.route_for("payment.provider_webhook").ordering_key(Inbound("w", webhook)) == (
        "webhook:stripe"
    )


def test_nothing_in_the_service_dispatches_on_an_event_type_with_isinstance() -> None:
    inbound = {model.__name__ for model in INBOUND_DATA_MODELS.values()}
    found = []
    for path in SERVICE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "isinstance"
                and len(node.args) == 2
            ):
                named = {n.id for n in ast.walk(node.args[1]) if isinstance(n, ast.Name)}
                if named & inbound:
                    found.append(f"{path.relative_to(SERVICE.parent)}:{node.lineno}")
    assert found == []


# -- a new inbound event type: one schema, one entry, one handler, one decision --------


class CartNoted(BaseModel):
    """The throwaway event type's schema: a note for a cart's payment collection."""

    model_config = ConfigDict(extra="forbid")
    cart_id: str
    note: str


def _note(collection: PaymentCollection, note: str, event_id: str) -> Decision:
    """The throwaway decision (a domain method would hold it)."""
    collection.context = {**collection.context, "note": note}
    collection.processed.append(
        ProcessedEvent(id=event_id, type="cart.noted", at=collection.updated_at)
    )
    return Decision("settled", collection)


async def _handle_note(service: PaymentService, event: Inbound[CartNoted]) -> HandleResult:
    """The throwaway handler, the size of the others."""

    def decide(loaded: Loaded | None, _: Any) -> Decision:
        if loaded is None:
            return Decision("ignored", note="no such cart")
        return _note(loaded.collection, event.data.note, event.event_id)

    return await service.unit_of_work.run(
        Work(
            event.data.cart_id,
            lambda: service.store.load_by_cart(event.data.cart_id),
            decide,
            seen=lambda c: c.has_processed(event.event_id),
        )
    )


async def test_a_new_event_type_is_one_entry_in_the_registry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The schema (as schemas/topics.py would list it) and the registry entry.
    monkeypatch.setitem(schemas.topics.ALL_DATA_MODELS, "cart.noted", CartNoted)
    monkeypatch.setitem(schemas.topics.INBOUND_DATA_MODELS, "cart.noted", CartNoted)
    monkeypatch.setitem(schemas.parse._INBOUND_EVENT_MODELS, "cart.noted", CloudEvent[CartNoted])
    route: Route[CartNoted, Inbound[CartNoted]] = Route(
        "cart.noted",
        CartNoted,
        order=lambda data: f"cart:{data.cart_id}",
        command=lambda event, _ctx: event,
        handle=_handle_note,
        prefetch_cart=lambda data: data.cart_id,
    )
    monkeypatch.setitem(bus.ROUTES, "cart.noted", route)  # type: ignore[index]

    world = World("fake")
    await world.cart("cart_1", 1000)
    publisher = RecordingPublisher()
    processor = world.batch_processor(publisher, "t.")
    notes = [
        Record(
            "t.cart.noted",
            0,
            offset,
            b"cart_1",
            orjson.dumps(
                {
                    "specversion": "1.0",
                    "id": event_id,
                    "source": "/test",
                    "type": "cart.noted",
                    "data": {"cart_id": "cart_1", "note": note},
                }
            ),
            (),
        )
        for offset, (event_id, note) in enumerate((("n1", "first"), ("n2", "second"), ("n1", "x")))
    ]
    prefetches = len(world.store.prefetches)

    await processor.process(notes)

    collection = await world.collection("cart_1")
    # In partition order per cart, the replayed id changed nothing, one prefetch.
    assert collection.context["note"] == "second"
    assert [p.id for p in collection.processed if p.type == "cart.noted"] == ["n1", "n2"]
    assert world.store.prefetches[prefetches:] == [("cart_1",)]
    assert publisher.of_type("payments.dead_letter") == []
    assert Context  # the command builder's context: the clock and the providers
