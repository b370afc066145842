"""The `manual` provider: Medusa's system provider (`pp_system_default`).

Money moves outside the service (cash on delivery, bank transfer), so there is
nobody to ask: every call succeeds at once and capture, refund and cancel only
keep the books. No I/O, hence nothing to de-duplicate and nothing to close.

Its objects (issue 22) are named after the session (the authorization, which its
captures and cancel are on: one per session, as nothing else exists to name) and
after the call's key (a refund). The books are its only ledger, so there is nothing
for the audit to read (`read_objects` keeps the port's default, no facts), and its
capabilities are the lenient default.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from service.domain.calls import ProviderCall
from service.domain.capabilities import LENIENT, Capabilities
from service.domain.outcomes import ProviderOutcome
from service.ports.providers import (
    PaymentProvider,
    SavedPaymentMethod,
    WebhookAction,
    WebhookVerificationError,
)

from .options import ProviderOptions

MANUAL_PROVIDER_ID = "manual"


class ManualOptions(ProviderOptions):
    """``PAYMENTS_PROVIDER_OPTIONS["manual"]``."""

    provider_id = MANUAL_PROVIDER_ID

    capture: bool = False
    """Report the capture with the authorization (the money is already in hand)."""


class ManualProvider(PaymentProvider):
    """Authorizes at once; with option `capture: true` also reports the capture."""

    def __init__(self, options: ManualOptions | Mapping[str, Any] | None = None) -> None:
        if not isinstance(options, ManualOptions):
            options = ManualOptions.parse(options)
        self.id: str = MANUAL_PROVIDER_ID
        self.capture_on_authorize: bool = options.capture
        self.capabilities: Capabilities = LENIENT

    @staticmethod
    def _reference(call: ProviderCall) -> str:
        """The object `call` is about: the session's authorization, or a refund."""
        if call.operation == "refund":
            return f"refund:{call.idempotency_key}"
        return call.session_id

    async def initiate(self, call: ProviderCall) -> ProviderOutcome:
        return ProviderOutcome.succeeded({})

    async def update(self, call: ProviderCall) -> ProviderOutcome:
        return ProviderOutcome.succeeded(dict(call.data))

    async def update_data(self, call: ProviderCall) -> ProviderOutcome:
        # Medusa's system provider echoes what it is given; there is nothing to validate.
        return ProviderOutcome.succeeded({**call.data, **call.payment_data})

    async def delete(self, call: ProviderCall) -> ProviderOutcome:
        return ProviderOutcome.succeeded({})

    async def authorize(self, call: ProviderCall) -> ProviderOutcome:
        return ProviderOutcome.succeeded(
            {},
            captured=self.capture_on_authorize,
            amount=call.amount,
            reference=self._reference(call),
        )

    async def get_status(self, call: ProviderCall) -> ProviderOutcome:
        # Every manual call succeeds when made, so whatever was asked took effect.
        captured = self.capture_on_authorize and call.operation == "authorize"
        return ProviderOutcome.succeeded(
            {}, captured=captured, amount=call.amount, reference=self._reference(call)
        )

    async def retrieve(self, call: ProviderCall) -> ProviderOutcome:
        return ProviderOutcome.succeeded(dict(call.data))

    async def payment_data(self, call: ProviderCall) -> dict[str, Any]:
        return {}

    async def capture(self, call: ProviderCall) -> ProviderOutcome:
        return ProviderOutcome.succeeded({}, amount=call.amount, reference=self._reference(call))

    async def refund(self, call: ProviderCall) -> ProviderOutcome:
        return ProviderOutcome.succeeded({}, amount=call.amount, reference=self._reference(call))

    async def cancel(self, call: ProviderCall) -> ProviderOutcome:
        return ProviderOutcome.succeeded({}, reference=self._reference(call))

    async def list_payment_methods(self, customer_id: str) -> list[SavedPaymentMethod]:
        return []

    def verify_webhook(self, headers: Mapping[str, str], body: bytes, now: datetime) -> None:
        # Nothing ever sends manual webhooks, so any request claiming to is forged.
        raise WebhookVerificationError("the manual provider has no webhooks")

    def interpret_webhook(self, headers: Mapping[str, str], payload: str) -> WebhookAction | None:
        return None

    async def close(self) -> None:
        return None
