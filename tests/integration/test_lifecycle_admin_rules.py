"""Admin commands end to end: the cancel flow, and a command for an unknown payment.

The capture / refund / cancel rules are tested where they live:
tests/unit/domain/test_domain_payment_commands.py (the decisions) and
tests/unit/test_admin_rule_answers.py (the service's answers over the in-memory
fakes). Here the wiring over the real broker and MongoDB-protocol server.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from schemas.envelope import CLOUDEVENTS_CONTENT_TYPE
from schemas.topics import EVENT_MODELS
from service.domain import derived_ids as ids
from service.domain.statuses import CollectionStatus, SessionStatus
from service.testing import builders
from service.testing.builders import new_cart_id as _cart
from service.testing.harness import ReceivedEvent, ServiceHarness
from service.testing.harness import caused_by as _caused_by

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def harness(kafka_bootstrap: str, mongodb_url: str) -> AsyncIterator[ServiceHarness]:
    async with ServiceHarness(kafka_bootstrap, mongodb_url) as h:
        yield h


async def _authorized_payment(harness: ServiceHarness, amount: int = 5000) -> tuple[str, str]:
    cart = _cart()
    await harness.publish("checkout.completed", builders.checkout_completed(cart, amount))
    authorized = await harness.await_event("payment.authorized", cart_id=cart)
    return cart, str(authorized.data["payment_id"])


async def _command(
    harness: ServiceHarness, command: str, data: dict[str, Any], cart: str | None, expected: str
) -> ReceivedEvent:
    command_id = await harness.publish(f"admin.payment.{command}", data)
    return await harness.await_event(expected, cart_id=cart, predicate=_caused_by(command_id))


async def test_unknown_payment_id(harness: ServiceHarness) -> None:
    # One command end to end (the answer without a collection, keyed by payment id);
    # every command kind: tests/unit/test_admin_rule_answers.py.
    command = "capture"
    payment_id = f"pay_unknown_{uuid.uuid4().hex[:10]}"
    data: dict[str, Any] = {"payment_id": payment_id, "requested_by": "ops@test"}
    if command != "cancel":
        data["amount"] = 100
    command_id = await harness.publish(f"admin.payment.{command}", data)
    failed = await harness.await_event("payment.failed", predicate=_caused_by(command_id))
    assert failed.key == payment_id
    assert failed.headers.get("content-type") == CLOUDEVENTS_CONTENT_TYPE
    assert failed.data["reason"] == "payment_not_found"
    assert failed.data["operation"] == command
    assert failed.data["payment_id"] == payment_id
    # The contract's own model (and JSON schema) must accept what was published:
    # cart_id, collection_id, provider_id and currency_code are present and null.
    EVENT_MODELS["payment.failed"].model_validate(failed.event)
    for field in ("cart_id", "collection_id", "provider_id", "currency_code"):
        assert field in failed.data and failed.data[field] is None, failed.data
    assert failed.event["subject"] == payment_id
    assert failed.event["causationid"] == command_id
    assert await harness.ledger(payment_id=payment_id) == []


async def test_cancel_happy_path(harness: ServiceHarness) -> None:
    cart, payment_id = await _authorized_payment(harness)
    command_id = await harness.publish("admin.payment.cancel", builders.cancel(payment_id))
    canceled = await harness.await_event("payment.canceled", cart_id=cart)
    assert canceled.key == cart
    assert canceled.event["causationid"] == command_id
    assert canceled.event["subject"] == cart
    assert canceled.data["payment_id"] == payment_id
    assert canceled.data["canceled_at"]
    assert canceled.data["provider_id"] == "sandbox"
    assert canceled.data["currency_code"] == "usd"
    collection = await harness.collection(cart)
    assert collection is not None and collection.payment is not None
    assert collection.payment.canceled_at is not None
    assert collection.status == CollectionStatus.CANCELED
    session = collection.session_by_id(collection.payment.session_id)
    assert session is not None and session.status == SessionStatus.CANCELED
    ledger = await harness.ledger(cart_id=cart, operation="cancel")
    # The provider key names the collection and operation (issue 16).
    provider_key = ids.provider_key(collection.id, "cancel", command_id)
    assert len(ledger) == 1 and ledger[0]["idempotency_key"] == provider_key

    # A second cancel (new command id) answers with the stored event, same id.
    await harness.publish("admin.payment.cancel", builders.cancel(payment_id))
    again = await harness.await_event("payment.canceled", cart_id=cart, count=2)
    assert again.id == canceled.id
    assert len(await harness.ledger(cart_id=cart, operation="cancel")) == 1
