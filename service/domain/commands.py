"""What the domain is asked to do, already validated by `schemas/`.

Each command carries the id of the inbound event that caused it (the inbox and
causation key) and `now`, so that decisions stay pure functions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Literal

from service.domain.capabilities import LENIENT, Capabilities


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
    capabilities: Capabilities = LENIENT
    """What the chosen provider allows; the payment keeps it."""


@dataclass(frozen=True, slots=True)
class CapturePayment:
    operation: ClassVar[Literal["capture"]] = "capture"

    command_id: str
    payment_id: str
    requested_by: str
    now: datetime
    amount: int | None = None
    note: str | None = None
    key_id: str | None = None
    patient: bool = True
    """May wait for an operation in flight whose outcome decides the answer."""


@dataclass(frozen=True, slots=True)
class RefundPayment:
    operation: ClassVar[Literal["refund"]] = "refund"

    command_id: str
    payment_id: str
    requested_by: str
    now: datetime
    amount: int | None = None
    reason: str | None = None
    note: str | None = None
    key_id: str | None = None
    patient: bool = True


@dataclass(frozen=True, slots=True)
class CancelPayment:
    operation: ClassVar[Literal["cancel"]] = "cancel"
    amount: ClassVar[None] = None
    """A cancel releases the whole authorization: it names no amount."""

    command_id: str
    payment_id: str
    requested_by: str
    now: datetime
    note: str | None = None
    key_id: str | None = None
    patient: bool = True


PaymentCommand = CapturePayment | RefundPayment | CancelPayment


CommandOperation = Literal["capture", "refund", "cancel"]


def command_operation(command: PaymentCommand) -> CommandOperation:
    """Each command class names its operation (`CapturePayment.operation == "capture"`)."""
    return command.operation


def operation_fingerprint(operation: str, payment_id: str, amount: int | None) -> str:
    """What must be equal when the same command id is seen again."""
    return f"{operation}|{payment_id}|{amount}"


def command_fingerprint(command: PaymentCommand) -> str:
    """A command's :func:`operation_fingerprint`."""
    return operation_fingerprint(command.operation, command.payment_id, command.amount)


fingerprint = command_fingerprint


@dataclass(frozen=True, slots=True)
class ApplyWebhook:
    """A provider webhook, verified, to be interpreted by its provider and applied."""

    event_id: str
    provider_id: str
    headers: dict[str, str]
    payload: str
    now: datetime
