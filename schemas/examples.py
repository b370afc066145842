"""One valid example event per event type, as the JSON object that goes on the wire.

They document the contract in the exported JSON Schemas, serve as the starting point
of tests (which mutate one field at a time to get each kind of invalid input), and
can seed producers, benchmarks and harnesses. `example_event` builds a fresh event
on every call, so callers may mutate it freely.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

from schemas.outbound_event import event_payload, event_value
from schemas.topics import (
    ADMIN_PAYMENT_CANCEL,
    ADMIN_PAYMENT_CAPTURE,
    ADMIN_PAYMENT_REFUND,
    ALL_DATA_MODELS,
    CART_UPDATED,
    CHECKOUT_COMPLETED,
    PAYMENT_AUTHORIZED,
    PAYMENT_CANCELED,
    PAYMENT_CAPTURED,
    PAYMENT_DISPUTED,
    PAYMENT_FAILED,
    PAYMENT_PROVIDER_WEBHOOK,
    PAYMENT_REFUNDED,
    PAYMENT_REQUIRES_ACTION,
    PAYMENTS_DEAD_LETTER,
)
from schemas.wire_time import wire_time

_EXAMPLE_TIME: Final = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
_TIME: Final = wire_time(_EXAMPLE_TIME)
_CART: Final = "cart_01HXAMPLE"
_PAYMENT: Final = "pay_01HXAMPLE"
_PAYMENT_REF: Final[dict[str, Any]] = {
    "cart_id": _CART,
    "collection_id": "paycol_01HXAMPLE",
    "provider_id": "sandbox",
    "currency_code": "usd",
}

_EXAMPLE_DATA: Final[dict[str, dict[str, Any]]] = {
    CART_UPDATED: {
        "cart_id": _CART,
        "region_id": "reg_us",
        "currency_code": "usd",
        "amount": 5000,
        "version": 3,
        "email": "jane@example.com",
        "customer": {"id": "cus_01HXAMPLE", "email": "jane@example.com", "metadata": {}},
        "provider_id": "sandbox",
        "payment_data": {"payment_method": "pm_card_visa"},
        "context": {"ip": "203.0.113.7"},
    },
    CHECKOUT_COMPLETED: {
        "cart_id": _CART,
        "idempotency_key": "idem_01HXAMPLE",
        "region_id": "reg_us",
        "currency_code": "usd",
        "amount": 5000,
        "provider_id": "sandbox",
        "payment_data": {"payment_method": "pm_card_visa"},
        "context": {"ip": "203.0.113.7"},
    },
    ADMIN_PAYMENT_CAPTURE: {
        "payment_id": _PAYMENT,
        "amount": 5000,
        "requested_by": "ops@example.com",
        "note": "shipped",
    },
    ADMIN_PAYMENT_REFUND: {
        "payment_id": _PAYMENT,
        "amount": 1500,
        "reason": "item returned",
        "requested_by": "ops@example.com",
    },
    ADMIN_PAYMENT_CANCEL: {"payment_id": _PAYMENT, "requested_by": "ops@example.com"},
    PAYMENT_PROVIDER_WEBHOOK: {
        "provider_id": "sandbox",
        "received_at": _TIME,
        "headers": {"content-type": "application/json"},
        "payload": '{"type": "payment_intent.succeeded", "id": "evt_1"}',
    },
    PAYMENT_AUTHORIZED: {
        **_PAYMENT_REF,
        "payment_id": _PAYMENT,
        "session_id": "payses_01HXAMPLE",
        "amount": 5000,
        "authorized_at": _TIME,
    },
    PAYMENT_REQUIRES_ACTION: {
        **_PAYMENT_REF,
        "session_id": "payses_01HXAMPLE",
        "amount": 5000,
        "action": {"type": "redirect_to_url", "url": "https://sandbox.example/3ds/abc"},
    },
    PAYMENT_FAILED: {
        **_PAYMENT_REF,
        "operation": "authorize",
        "reason": "declined",
        "message": "Your card was declined.",
        "retryable": False,
        "amount": 5000,
        "session_id": "payses_01HXAMPLE",
    },
    PAYMENT_CAPTURED: {
        **_PAYMENT_REF,
        "payment_id": _PAYMENT,
        "capture_id": "capt_01HXAMPLE",
        "amount": 5000,
        "captured_total": 5000,
        "fully_captured": True,
    },
    PAYMENT_REFUNDED: {
        **_PAYMENT_REF,
        "payment_id": _PAYMENT,
        "refund_id": "ref_01HXAMPLE",
        "amount": 1500,
        "refunded_total": 1500,
        "reason": "item returned",
    },
    PAYMENT_CANCELED: {**_PAYMENT_REF, "payment_id": _PAYMENT, "canceled_at": _TIME},
    PAYMENT_DISPUTED: {
        **_PAYMENT_REF,
        "payment_id": _PAYMENT,
        "dispute_id": "dp_1QfXyZ2eZvKYlo2C",
        "amount": 5000,
        "status": "open",
        "reason": "fraudulent",
        "evidence_due_by": _TIME,
    },
    PAYMENTS_DEAD_LETTER: {
        "source_topic": CHECKOUT_COMPLETED,
        "partition": 3,
        "offset": 1042,
        "key": _CART,
        "value": "{not json",
        "headers": {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
        "error": {"kind": "invalid_json", "detail": "the value is not valid JSON"},
        "failed_at": _TIME,
    },
}

_SOURCES: Final[dict[str, str]] = {
    CART_UPDATED: "/storefront",
    CHECKOUT_COMPLETED: "/storefront",
    ADMIN_PAYMENT_CAPTURE: "/admin",
    ADMIN_PAYMENT_REFUND: "/admin",
    ADMIN_PAYMENT_CANCEL: "/admin",
    PAYMENT_PROVIDER_WEBHOOK: "/payments/webhooks",
}


def example_event(event_type: str) -> dict[str, Any]:
    """Return a valid example CloudEvent of `event_type` as a JSON-ready dict.

    Built from the typed `data` by the envelope builder, so an example that breaks
    the contract fails here. Raises `KeyError` for an event type that is not in the
    registry.
    """
    data = ALL_DATA_MODELS[event_type].model_validate(_EXAMPLE_DATA[event_type])
    outbound = event_type not in _SOURCES
    return event_payload(
        data,
        event_id=f"evt_{event_type.replace('.', '_')}_1",
        source=_SOURCES.get(event_type, "/payments"),
        time=_EXAMPLE_TIME,
        subject=_EXAMPLE_DATA[event_type].get("cart_id"),
        causation_id="evt_checkout_completed_1" if outbound else None,
    )


def example_event_bytes(event_type: str) -> bytes:
    """Return `example_event(event_type)` encoded as a Kafka value."""
    return event_value(example_event(event_type))
