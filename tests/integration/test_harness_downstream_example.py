"""How another team tests its flow against the payments service (shown in the docs).

Needs only `pip install payments-service[embedded] pytest pytest-asyncio`: the
`payments` pytest plugin provides `payments_service`, a running service with its
own topics and database, on embedded Kafka and MongoDB unless PAYMENTS_TEST_KAFKA /
PAYMENTS_TEST_MONGODB_URL name running ones.
"""

import pytest

from service.testing import builders
from service.testing.harness import ServiceHarness

pytestmark = [pytest.mark.asyncio, pytest.mark.integration]


@pytest.fixture
def payments_service_settings() -> dict[str, object]:
    # Any PAYMENTS_* setting, by field name: here an EU region that only offers sandbox.
    return {"region_providers": {"eu": ["sandbox"]}}


async def test_order_is_paid_and_captured(payments_service: ServiceHarness) -> None:
    cart = builders.new_id("cart")
    await payments_service.publish("cart.updated", builders.cart_updated(cart, 2500))
    await payments_service.publish(
        "checkout.completed",
        builders.checkout_completed(cart, 2500, payment_method="pm_card_visa"),
    )
    authorized = await payments_service.await_event("payment.authorized", cart_id=cart)
    assert authorized.data["amount"] == 2500

    # Admin commands are signed with the harness's key automatically.
    await payments_service.publish(
        "admin.payment.capture", builders.capture(authorized.data["payment_id"])
    )
    captured = await payments_service.await_event("payment.captured", cart_id=cart)
    assert captured.data["fully_captured"] is True

    # The sandbox ledger proves the card was charged exactly once.
    charges = await payments_service.ledger(operation="capture")
    assert [c["amount"] for c in charges] == [2500]


async def test_declined_card_is_reported(payments_service: ServiceHarness) -> None:
    cart = builders.new_id("cart")
    await payments_service.publish(
        "checkout.completed",
        builders.checkout_completed(cart, 990, payment_method="pm_card_chargeDeclined"),
    )
    failed = await payments_service.await_event("payment.failed", cart_id=cart)
    assert failed.data["reason"] == "declined"
    assert failed.data["retryable"] is False
