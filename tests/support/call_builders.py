"""Provider calls as the tests build them: cart_1's session ps_1, in usd."""

from __future__ import annotations

from typing import Any

from schemas.outbound import PaymentFailed
from service.domain.calls import CallOperation, ProviderCall
from service.domain.model import PaymentCollection


def provider_call(
    operation: CallOperation,
    provider_id: str,
    idempotency_key: str,
    amount: int = 5000,
    **values: Any,
) -> ProviderCall:
    """A call of cart_1's session ps_1 in usd; `values` add fields or replace those."""
    fields: dict[str, Any] = {
        "session_id": "ps_1",
        "currency_code": "usd",
        "cart_id": "cart_1",
        **values,
    }
    return ProviderCall(
        operation=operation,
        provider_id=provider_id,
        idempotency_key=idempotency_key,
        amount=amount,
        **fields,
    )


def stripe_call(
    operation: CallOperation, key: str, amount: int = 5000, **values: Any
) -> ProviderCall:
    """A call to the Stripe adapter about payment `pay_1` unless `values` says otherwise."""
    values.setdefault("payment_id", "pay_1")
    return provider_call(operation, "stripe", key, amount, **values)


def declined_authorization(collection: PaymentCollection) -> PaymentFailed:
    """A `payment.failed` for a declined sandbox authorization of `collection`."""
    return PaymentFailed.model_validate(
        {
            "cart_id": collection.cart_id,
            "collection_id": collection.id,
            "provider_id": "sandbox",
            "currency_code": "usd",
            "operation": "authorize",
            "reason": "declined",
            "message": "declined",
            "retryable": False,
        }
    )
