"""What the domain is asked to do, already validated by `schemas/`.

Each command carries the id of the inbound event that caused it (the inbox and
causation key) and `now`, so that decisions stay pure functions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class UpdateCart:
    event_id: str
    cart_id: str
    region_id: str
    currency_code: str
    amount: int
    enabled_providers: tuple[str, ...]
    """Providers installed and enabled in the cart's region, in a stable order."""
    now: datetime
    version: int | None = None
    email: str | None = None
    customer: dict[str, Any] | None = None
    provider_id: str | None = None
    payment_data: dict[str, Any] | None = None
    context: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CompleteCheckout:
    event_id: str
    cart_id: str
    idempotency_key: str
    region_id: str
    currency_code: str
    amount: int
    provider_id: str
    enabled_providers: tuple[str, ...]
    now: datetime
    payment_data: dict[str, Any] = field(default_factory=dict)
    context: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CapturePayment:
    command_id: str
    payment_id: str
    requested_by: str
    now: datetime
    amount: int | None = None
    note: str | None = None
    key_id: str | None = None


@dataclass(frozen=True, slots=True)
class RefundPayment:
    command_id: str
    payment_id: str
    requested_by: str
    now: datetime
    amount: int | None = None
    reason: str | None = None
    note: str | None = None
    key_id: str | None = None


@dataclass(frozen=True, slots=True)
class CancelPayment:
    command_id: str
    payment_id: str
    requested_by: str
    now: datetime
    note: str | None = None
    key_id: str | None = None


PaymentCommand = CapturePayment | RefundPayment | CancelPayment


def command_operation(command: PaymentCommand) -> str:
    if isinstance(command, CapturePayment):
        return "capture"
    if isinstance(command, RefundPayment):
        return "refund"
    return "cancel"


def command_fingerprint(command: PaymentCommand) -> str:
    """What must be equal when the same command id is seen again."""
    amount = getattr(command, "amount", None)
    return f"{command_operation(command)}|{command.payment_id}|{amount}"
