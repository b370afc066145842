"""End-to-end happy path over the real broker and MongoDB-protocol server.

cart.updated → sessions per enabled provider → checkout with sandbox → authorized
→ partial capture → capture of the rest → partial refunds → refund beyond what is
left → payment.failed; checking the outbound envelope, Kafka key and headers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from schemas.envelope import CLOUDEVENTS_CONTENT_TYPE
from schemas.topics import EVENT_MODELS
from service.domain.statuses import CollectionStatus, SessionStatus
from service.testing import builders
from service.testing.builders import new_cart_id as _cart
from service.testing.harness import ReceivedEvent, ServiceHarness
from service.testing.harness import caused_by as _caused_by

# `store`: also proven on FerretDB (`make test-store`): it exercises store semantics.
pytestmark = [pytest.mark.integration, pytest.mark.store]

REGIONS = {"eu": ["manual", "sandbox"], "us": ["sandbox"]}


@pytest.fixture
async def harness(kafka_bootstrap: str, mongodb_url: str) -> AsyncIterator[ServiceHarness]:
    async with ServiceHarness(kafka_bootstrap, mongodb_url, region_providers=REGIONS) as h:
        yield h


def _assert_envelope(received: ReceivedEvent, cart_id: str, cause: str) -> None:
    event = received.event
    assert received.key == cart_id
    assert received.headers.get("content-type") == CLOUDEVENTS_CONTENT_TYPE
    assert event["specversion"] == "1.0"
    assert event["subject"] == cart_id
    assert event["causationid"] == cause
    assert event["source"]
    assert event["time"]
    assert event["id"]
    assert received.topic.endswith(event["type"])
    data = received.data
    assert data["cart_id"] == cart_id
    assert data["collection_id"]
    assert data["provider_id"]
    assert data["currency_code"] == "usd"
    # What was published parses with the contract's own model for its type.
    EVENT_MODELS[received.type].model_validate(event)


async def test_full_lifecycle(harness: ServiceHarness) -> None:
    cart = _cart()

    # cart.updated in a region with manual + sandbox → one session per provider.
    await harness.publish(
        "cart.updated",
        builders.cart_updated(cart, 5000, currency_code="USD", region_id="eu", version=1),
    )
    collection = None
    for _ in range(100):
        collection = await harness.collection(cart)
        if collection is not None:
            break
        await harness.settle(quiet_s=0.1, timeout=0.1)
    assert collection is not None, "cart.updated did not create a collection"
    assert collection.amount == 5000
    assert collection.currency_code == "usd"
    assert sorted(s.provider_id for s in collection.sessions) == ["manual", "sandbox"]
    assert all(s.initiated for s in collection.sessions)
    assert all(s.amount == 5000 for s in collection.sessions)
    assert collection.status == CollectionStatus.AWAITING

    # checkout with sandbox → exactly one payment.authorized.
    checkout_id = await harness.publish(
        "checkout.completed",
        builders.checkout_completed(cart, 5000, currency_code="USD", region_id="eu"),
    )
    authorized = await harness.await_event("payment.authorized", cart_id=cart)
    _assert_envelope(authorized, cart, checkout_id)
    data = authorized.data
    assert data["provider_id"] == "sandbox"
    assert data["amount"] == 5000
    assert data["currency_code"] == "usd"
    assert data["authorized_at"]
    payment_id = data["payment_id"]
    assert payment_id
    sandbox_session = next(s for s in collection.sessions if s.provider_id == "sandbox")
    assert data["session_id"] == sandbox_session.id

    collection = await harness.collection(cart)
    assert collection is not None
    assert collection.status == CollectionStatus.AUTHORIZED
    assert collection.payment is not None and collection.payment.id == payment_id
    statuses = {s.provider_id: s.status for s in collection.sessions}
    assert statuses == {"sandbox": SessionStatus.AUTHORIZED, "manual": SessionStatus.CANCELED}
    assert len(await harness.ledger(operation="authorize", cart_id=cart)) == 1

    # Partial capture 2000 of 5000.
    cap1 = await harness.publish("admin.payment.capture", builders.capture(payment_id, 2000))
    captured = await harness.await_event(
        "payment.captured", cart_id=cart, predicate=_caused_by(cap1)
    )
    _assert_envelope(captured, cart, cap1)
    assert captured.data["payment_id"] == payment_id
    assert captured.data["amount"] == 2000
    assert captured.data["captured_total"] == 2000
    assert captured.data["fully_captured"] is False
    assert captured.data["capture_id"]

    # Capture with no amount: the rest.
    cap2 = await harness.publish("admin.payment.capture", builders.capture(payment_id))
    captured2 = await harness.await_event(
        "payment.captured", cart_id=cart, predicate=_caused_by(cap2)
    )
    _assert_envelope(captured2, cart, cap2)
    assert captured2.data["amount"] == 3000
    assert captured2.data["captured_total"] == 5000
    assert captured2.data["fully_captured"] is True
    assert captured2.data["capture_id"] != captured.data["capture_id"]

    # Partial refund 1000, then 1500.
    ref1 = await harness.publish(
        "admin.payment.refund", builders.refund(payment_id, 1000, reason="damaged")
    )
    refunded = await harness.await_event(
        "payment.refunded", cart_id=cart, predicate=_caused_by(ref1)
    )
    _assert_envelope(refunded, cart, ref1)
    assert refunded.data["payment_id"] == payment_id
    assert refunded.data["amount"] == 1000
    assert refunded.data["refunded_total"] == 1000
    assert refunded.data["reason"] == "damaged"
    assert refunded.data["refund_id"]

    ref2 = await harness.publish("admin.payment.refund", builders.refund(payment_id, 1500))
    refunded2 = await harness.await_event(
        "payment.refunded", cart_id=cart, predicate=_caused_by(ref2)
    )
    _assert_envelope(refunded2, cart, ref2)
    assert refunded2.data["amount"] == 1500
    assert refunded2.data["refunded_total"] == 2500

    # 5000 > 5000 captured - 2500 refunded → amount_exceeds_captured.
    ref3 = await harness.publish("admin.payment.refund", builders.refund(payment_id, 5000))
    failed = await harness.await_event("payment.failed", cart_id=cart, predicate=_caused_by(ref3))
    _assert_envelope(failed, cart, ref3)
    assert failed.data["operation"] == "refund"
    assert failed.data["reason"] == "amount_exceeds_captured"
    assert failed.data["retryable"] is False
    assert failed.data["payment_id"] == payment_id

    # Final state and provider ledger agree.
    collection = await harness.collection(cart)
    assert collection is not None and collection.payment is not None
    payment = collection.payment
    assert payment.captured_total == 5000
    assert payment.refunded_total == 2500
    assert payment.pending == []
    assert collection.status == CollectionStatus.COMPLETED
    ledger = await harness.ledger(cart_id=cart)
    by_op: dict[str, list[int]] = {}
    for entry in ledger:
        by_op.setdefault(entry["operation"], []).append(entry["amount"])
    assert sorted(by_op["authorize"]) == [5000]
    assert sorted(by_op["capture"]) == [2000, 3000]
    assert sorted(by_op["refund"]) == [1000, 1500]

    # Every outbound event of the flow has a distinct id and the right key.
    await harness.settle(quiet_s=0.5)
    outbound = harness.events(cart_id=cart)
    assert {r.type for r in outbound} == {
        "payment.authorized",
        "payment.captured",
        "payment.refunded",
        "payment.failed",
    }
    assert all(r.key == cart for r in outbound)
    assert len({r.id for r in outbound}) == 6
    assert len(harness.events("payment.authorized", cart_id=cart)) == 1
