"""Builders for valid inbound events, with sensible defaults (for tests and harnesses)."""

from __future__ import annotations

import uuid
from typing import Any

from schemas.outbound_event import envelope as schemas_envelope
from schemas.outbound_event import event_value
from service.admin_auth import SIGNATURE_HEADER, signature_header


def new_id(prefix: str = "evt") -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def new_cart_id() -> str:
    return f"cart_{uuid.uuid4().hex[:12]}"


def envelope(
    event_type: str,
    data: dict[str, Any],
    *,
    event_id: str | None = None,
    source: str = "/test-harness",
    **extensions: Any,
) -> dict[str, Any]:
    """A CloudEvent of `data` as given: tests build invalid events too, so nothing is checked.

    `extensions` (any attribute, `time` and `subject` included) are written as given,
    after the standard attributes; one named like a standard attribute replaces it.
    """
    return schemas_envelope(
        event_type, data, event_id=event_id or new_id(), source=source, extensions=extensions
    )


def encode(event: dict[str, Any]) -> bytes:
    return event_value(event)


def sign(value: bytes, key_id: str, secret: str) -> tuple[str, bytes]:
    return SIGNATURE_HEADER, signature_header(value, key_id, secret).encode()


def cart_updated(
    cart_id: str,
    amount: int = 5000,
    *,
    currency_code: str = "usd",
    region_id: str = "eu",
    **fields: Any,
) -> dict[str, Any]:
    return {
        "cart_id": cart_id,
        "region_id": region_id,
        "currency_code": currency_code,
        "amount": amount,
        **fields,
    }


def checkout_completed(
    cart_id: str,
    amount: int = 5000,
    *,
    idempotency_key: str | None = None,
    provider_id: str = "sandbox",
    payment_method: str | None = None,
    currency_code: str = "usd",
    region_id: str = "eu",
    payment_data: dict[str, Any] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    data = dict(payment_data or {})
    if payment_method is not None:
        data["payment_method"] = payment_method
    result: dict[str, Any] = {
        "cart_id": cart_id,
        "idempotency_key": idempotency_key or new_id("idem"),
        "region_id": region_id,
        "currency_code": currency_code,
        "amount": amount,
        "provider_id": provider_id,
        **fields,
    }
    if data:
        result["payment_data"] = data
    return result


def capture(
    payment_id: str, amount: int | None = None, *, requested_by: str = "ops@test", **fields: Any
) -> dict[str, Any]:
    data: dict[str, Any] = {"payment_id": payment_id, "requested_by": requested_by, **fields}
    if amount is not None:
        data["amount"] = amount
    return data


def refund(
    payment_id: str, amount: int | None = None, *, requested_by: str = "ops@test", **fields: Any
) -> dict[str, Any]:
    return capture(payment_id, amount, requested_by=requested_by, **fields)


def cancel(payment_id: str, *, requested_by: str = "ops@test", **fields: Any) -> dict[str, Any]:
    return {"payment_id": payment_id, "requested_by": requested_by, **fields}
