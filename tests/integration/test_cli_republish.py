"""`payments republish`: stored events go out again with their original ids."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from cli_testkit import invoke, json_of, kafka_args, mongo_args

from service.testing import builders
from service.testing.harness import ServiceHarness

# `store`: also proven on FerretDB (`make test-store`): it exercises store semantics.
pytestmark = [pytest.mark.integration, pytest.mark.store]


@pytest.fixture
async def harness(kafka_bootstrap: str, mongodb_url: str) -> AsyncIterator[ServiceHarness]:
    async with ServiceHarness(kafka_bootstrap, mongodb_url) as h:
        yield h


async def test_republish_a_cart_keeps_ids_keys_and_content(harness: ServiceHarness) -> None:
    h = harness
    cart, other = f"cart_{uuid.uuid4().hex[:12]}", f"cart_{uuid.uuid4().hex[:12]}"
    for c in (cart, other):
        await h.publish("cart.updated", builders.cart_updated(c, 3000))
        await h.publish("checkout.completed", builders.checkout_completed(c, 3000))
    authorized = await h.await_event("payment.authorized", cart_id=cart, timeout=30)
    await h.publish("admin.payment.capture", builders.capture(authorized.data["payment_id"]))
    captured = await h.await_event("payment.captured", cart_id=cart, timeout=30)
    await h.await_event("payment.authorized", cart_id=other, timeout=30)
    await h.settle(quiet_s=1.0)

    result = json_of(
        await invoke("republish", "--cart-id", cart, "--json", *kafka_args(h), *mongo_args(h))
    )
    assert [(e["id"], e["type"]) for e in result["events"]] == [
        (authorized.id, "payment.authorized"),
        (captured.id, "payment.captured"),
    ]
    assert all(e["key"] == cart for e in result["events"])

    again = await h.await_event("payment.authorized", cart_id=cart, count=2, timeout=30)
    assert again.id == authorized.id and again.event == authorized.event
    assert again.key == cart
    # The contract's header; FastStream's per-message correlation_id is not part of it.
    content_type = "application/cloudevents+json; charset=utf-8"
    assert again.headers["content-type"] == authorized.headers["content-type"] == content_type
    recaptured = await h.await_event("payment.captured", cart_id=cart, count=2, timeout=30)
    assert recaptured.event == captured.event
    await h.settle(quiet_s=1.0)
    assert len(h.events("payment.authorized", cart_id=other)) == 1, "another cart was re-sent"


async def test_republish_by_time_window(harness: ServiceHarness) -> None:
    h = harness
    cart = f"cart_{uuid.uuid4().hex[:12]}"
    await h.publish("checkout.completed", builders.checkout_completed(cart, 1200))
    authorized = await h.await_event("payment.authorized", cart_id=cart, timeout=30)

    def args(*window: str) -> list[str]:
        return ["republish", *window, "--dry-run", "--json", *kafka_args(h), *mongo_args(h)]

    recent = json_of(await invoke(*args("--since", "10m")))
    assert [e["id"] for e in recent["events"]] == [authorized.id] and recent["dry_run"]
    assert json_of(await invoke(*args("--since", "2999-01-01T00:00:00Z")))["events"] == []
    assert json_of(await invoke(*args("--until", "2000-01-01T00:00:00Z")))["events"] == []
    await h.settle(quiet_s=1.0)
    assert len(h.events("payment.authorized", cart_id=cart)) == 1, "a dry run sent something"

    sent = json_of(
        await invoke("republish", "--since", "10m", "--json", *kafka_args(h), *mongo_args(h))
    )
    assert sent["count"] == 1
    again = await h.await_event("payment.authorized", cart_id=cart, count=2, timeout=30)
    assert again.id == authorized.id

    unbounded = await invoke("republish", *kafka_args(h), *mongo_args(h))
    assert unbounded.exit_code == 1 and "--cart-id" in unbounded.stderr
