"""The `stripe` provider: Stripe PaymentIntents through the official SDK's async client.

Options (``PAYMENTS_PROVIDER_OPTIONS["stripe"]``): :class:`StripeOptions`.

The SDK's own retries are off (``max_network_retries=0``): the service retries
itself, with the status query in between (contract promises 6 and 7), and an SDK
retry hidden inside one of our attempts would defeat the caller's timeout.

Idempotency: every mutating request carries a Stripe ``Idempotency-Key`` derived
from ``call.idempotency_key`` and prefixed by the operation (see
:func:`.stripe_mapping.idempotency_key`), so a retry after a lost answer is
answered by Stripe from its record and moves no money twice. Fakes such as
localstripe ignore the header, so the adapter also reads the intent's state
before acting where that is cheap (authorize never re-confirms an intent that
is already past confirmation).

Amounts cross the boundary through :mod:`.stripe_money`: exact or refused, never
rounded (KWD amounts must end in 0 at Stripe, for instance).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Mapping
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Final, cast

import stripe
from pydantic import Field, StringConstraints

if TYPE_CHECKING:
    from stripe.params import (
        PaymentIntentCaptureParams,
        PaymentIntentConfirmParams,
        PaymentIntentCreateParams,
        PaymentIntentUpdateParams,
        RefundCreateParams,
    )

from service.domain.calls import ProviderCall
from service.domain.outcomes import OutcomeKind, ProviderOutcome
from service.ports.providers import (
    PaymentProvider,
    ProviderUnavailable,
    SavedPaymentMethod,
    WebhookAction,
    WebhookVerificationError,
)

from .options import ProviderOptions
from .stripe_mapping import (
    CANCELABLE,
    CONFIRMABLE,
    REFUND_CALL_KEY_METADATA,
    UPDATABLE,
    as_int,
    error_outcome,
    failed_payment_method,
    idempotency_key,
    intent_outcome,
    interpret_event,
    object_id,
    our_amount,
    public_intent_data,
    refund_reason,
)
from .stripe_money import AmountNotRepresentable, UnsupportedCurrency, to_stripe_amount

STRIPE_PROVIDER_ID: Final = "stripe"
DEFAULT_API_BASE: Final = "https://api.stripe.com"
WEBHOOK_TOLERANCE_S: Final = 300
SIGNATURE_HEADER: Final = "stripe-signature"
REFUND_KEY_METADATA: Final = "payments_refund_key"
"""Refund metadata naming the Stripe idempotency key it was made under: the status
query finds a refund by it when the answer to the refund call was lost."""

_Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
"""A non-empty string, surrounding whitespace (a pasted newline) removed."""


class StripeOptions(ProviderOptions):
    """``PAYMENTS_PROVIDER_OPTIONS["stripe"]``."""

    provider_id = STRIPE_PROVIDER_ID
    secret_options = frozenset({"api_key", "webhook_secret", "webhook_secrets"})

    api_key: _Text
    """The secret key. It only ever goes into the SDK client; session and payment
    data keep public PaymentIntent fields (id, client secret, status…), never the key."""
    api_base: _Text | None = None
    """Defaults to Stripe's own; tests point it at localstripe."""
    webhook_secret: _Text | None = None
    """The endpoint's signing secret (``whsec_…``). Without it every webhook fails
    verification (400), which is the safe default."""
    webhook_secrets: list[_Text] | None = None
    """More signing secrets accepted at the same time, for rotation: Stripe signs with
    the new and the old secret while a rolled secret expires, and events already on
    the topic were signed with the old one. A webhook verifies when any configured
    secret matches."""
    capture: bool = False
    """Capture on authorization (``capture_method: automatic``)."""
    multicapture: bool = False
    """Request Stripe's multicapture on new intents and send ``final_capture: false``
    on captures that leave an amount capturable, so several partial captures work.
    Stripe only offers it to some accounts and card brands; without it a partial
    capture releases the rest and a second capture is refused by Stripe (reported
    as a capture `provider_error`)."""
    payment_method_types: Annotated[
        list[Annotated[str, StringConstraints(min_length=1)]], Field(min_length=1)
    ] = ["card"]
    """Fixed types let the server confirm without a ``return_url``; a ``return_url``
    in the payment data is passed on when given."""
    timeout_s: Annotated[float, Field(ge=0.1)] = 20.0
    """The SDK's own HTTP timeout. The service's
    :class:`~service.provider_calls.ProviderCaller` bounds every call with its own,
    normally shorter, timeout; this one only stops a connection from outliving it."""

    def all_webhook_secrets(self) -> tuple[str, ...]:
        """`webhook_secret` and `webhook_secrets`, in that order, without repeats."""
        single = [self.webhook_secret] if self.webhook_secret is not None else []
        return tuple(dict.fromkeys([*single, *(self.webhook_secrets or [])]))


class _Answer(Exception):
    """Carries an outcome out of a nested step (a Stripe error, an unusable amount)."""

    def __init__(self, outcome: ProviderOutcome) -> None:
        super().__init__(outcome.message)
        self.outcome = outcome


def _fingerprint(params: Mapping[str, Any]) -> str:
    """A short, stable digest of request parameters, for idempotency keys."""
    canonical = json.dumps(params, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def _signature_timestamp(header: str) -> int | None:
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.isdigit():
            return int(value)
    return None


class StripeProvider(PaymentProvider):
    """Stripe PaymentIntents: one intent per payment session (see module doc)."""

    def __init__(
        self,
        options: StripeOptions | Mapping[str, Any] | None = None,
        *,
        http_client: stripe.HTTPClient | None = None,
    ) -> None:
        if not isinstance(options, StripeOptions):
            options = StripeOptions.parse(options)
        self.id: str = STRIPE_PROVIDER_ID
        self.api_base: str = (options.api_base or DEFAULT_API_BASE).rstrip("/")
        self._webhook_secrets = options.all_webhook_secrets()
        self.capture_on_authorize: bool = options.capture
        self.multicapture: bool = options.multicapture
        self.timeout_s: float = options.timeout_s
        self.payment_method_types: list[str] = list(options.payment_method_types)
        # Built now but connects lazily: httpx opens nothing until the first request.
        self._http = http_client or stripe.HTTPXClient(timeout=self.timeout_s)
        self._client = stripe.StripeClient(
            options.api_key,
            base_addresses={"api": self.api_base},
            max_network_retries=0,
            http_client=self._http,
        )

    def __repr__(self) -> str:  # never show the key
        return f"StripeProvider(api_base={self.api_base!r}, capture={self.capture_on_authorize})"

    # -- plumbing -------------------------------------------------------------------

    async def _stripe(self, request: Awaitable[Any], *, moves_money: bool) -> dict[str, Any]:
        """Await one SDK request; a Stripe error becomes an :class:`_Answer`."""
        try:
            result = await request
        except stripe.StripeError as exc:
            raise _Answer(error_outcome(exc, moves_money=moves_money)) from exc
        answer: dict[str, Any] = result.to_dict()
        return answer

    @staticmethod
    def _amount(call: ProviderCall, amount: int | None = None) -> int:
        try:
            return to_stripe_amount(call.amount if amount is None else amount, call.currency_code)
        except (AmountNotRepresentable, UnsupportedCurrency) as exc:
            raise _Answer(
                ProviderOutcome.failed(str(exc), code="amount_not_representable")
            ) from exc

    @staticmethod
    def _intent_id(call: ProviderCall) -> str | None:
        value = call.data.get("id")
        return value if isinstance(value, str) and value.startswith("pi_") else None

    async def _retrieve(self, intent_id: str) -> dict[str, Any]:
        return await self._stripe(
            self._client.v1.payment_intents.retrieve_async(intent_id), moves_money=False
        )

    async def _create_intent(self, call: ProviderCall) -> dict[str, Any]:
        params: dict[str, Any] = {
            "amount": self._amount(call),
            "currency": call.currency_code.lower(),
            "capture_method": "automatic" if self.capture_on_authorize else "manual",
            "payment_method_types": self.payment_method_types,
            "metadata": {"session_id": call.session_id, "cart_id": call.cart_id},
        }
        if self.multicapture and not self.capture_on_authorize:
            params["payment_method_options"] = {"card": {"request_multicapture": "if_available"}}
        # Keyed by the session and the parameters, whichever call creates it:
        # initiate and an authorize that finds no intent reach the same one. The
        # parameters belong in the key because Stripe refuses a key reused with
        # other parameters for 24 hours: after a lost create answer, a session
        # whose amount then changed would otherwise fail every call for a day. A
        # changed amount creates a new intent; the one whose answer was lost was
        # never confirmed, holds no money, and Stripe expires it.
        key = idempotency_key("initiate", f"{call.session_id}:initiate", _fingerprint(params))
        return await self._stripe(
            self._client.v1.payment_intents.create_async(
                cast("PaymentIntentCreateParams", params), {"idempotency_key": key}
            ),
            moves_money=False,
        )

    # -- session calls ------------------------------------------------------------------

    async def initiate(self, call: ProviderCall) -> ProviderOutcome:
        """Create the session's PaymentIntent, tagged with our session and cart ids."""
        try:
            intent = await self._create_intent(call)
        except _Answer as answer:
            return answer.outcome
        return ProviderOutcome.succeeded(public_intent_data(intent))

    async def update(self, call: ProviderCall) -> ProviderOutcome:
        """New amount or currency, while Stripe allows it (before confirmation)."""
        intent_id = self._intent_id(call)
        try:
            if intent_id is None:
                return ProviderOutcome.succeeded(
                    public_intent_data(await self._create_intent(call))
                )
            intent = await self._retrieve(intent_id)
            wanted = self._amount(call)
            currency = call.currency_code.lower()
            if as_int(intent.get("amount")) == wanted and intent.get("currency") == currency:
                return ProviderOutcome.succeeded(public_intent_data(intent))
            if intent.get("status") not in UPDATABLE:
                return ProviderOutcome.failed(
                    f"PaymentIntent {intent_id} is {intent.get('status')}; Stripe no longer "
                    "allows its amount or currency to change",
                    code="payment_intent_unexpected_state",
                )
            updated = await self._stripe(
                self._client.v1.payment_intents.update_async(
                    intent_id,
                    {"amount": wanted, "currency": currency},
                    {"idempotency_key": idempotency_key("update", call.idempotency_key)},
                ),
                moves_money=False,
            )
        except _Answer as answer:
            return answer.outcome
        return ProviderOutcome.succeeded(public_intent_data(updated))

    async def update_data(self, call: ProviderCall) -> ProviderOutcome:
        """Keep the customer's payment method (and return URL) for the authorization.

        No Stripe call: the method is attached when the session is authorized, so a
        customer changing their mind costs nothing at Stripe.
        """
        kept: dict[str, Any] = {}
        for name in ("payment_method", "return_url"):
            if name in call.payment_data:
                value = call.payment_data[name]
                if not isinstance(value, str) or not value:
                    return ProviderOutcome.invalid_data(f"payment_data.{name} must be a string")
                kept[name] = value
        return ProviderOutcome.succeeded({**call.data, **kept})

    async def delete(self, call: ProviderCall) -> ProviderOutcome:
        """Cancel the session's intent (Medusa's deletePayment); nothing to do if gone."""
        intent_id = self._intent_id(call)
        if intent_id is None:
            return ProviderOutcome.succeeded({})
        try:
            intent = await self._retrieve(intent_id)
            if intent.get("status") == "canceled":
                return ProviderOutcome.succeeded(public_intent_data(intent))
            if intent.get("status") not in CANCELABLE:
                return ProviderOutcome.failed(
                    f"PaymentIntent {intent_id} is {intent.get('status')} and cannot be canceled",
                    code="payment_intent_unexpected_state",
                )
            canceled = await self._stripe(
                self._client.v1.payment_intents.cancel_async(
                    intent_id,
                    {},
                    {"idempotency_key": idempotency_key("delete", call.idempotency_key)},
                ),
                moves_money=False,
            )
        except _Answer as answer:
            return answer.outcome
        return ProviderOutcome.succeeded(public_intent_data(canceled))

    async def retrieve(self, call: ProviderCall) -> ProviderOutcome:
        intent_id = self._intent_id(call)
        if intent_id is None:
            return ProviderOutcome.succeeded(dict(call.data))
        try:
            return ProviderOutcome.succeeded(public_intent_data(await self._retrieve(intent_id)))
        except _Answer as answer:
            return answer.outcome

    async def payment_data(self, call: ProviderCall) -> dict[str, Any]:
        return {k: v for k, v in call.data.items() if k != "return_url"}

    async def list_payment_methods(self, customer_id: str) -> list[SavedPaymentMethod]:
        try:
            listing = await self._stripe(
                self._client.v1.payment_methods.list_async(
                    {"customer": customer_id, "type": "card"}
                ),
                moves_money=False,
            )
        except _Answer:
            return []
        methods = []
        for item in listing.get("data") or []:
            if isinstance(item, Mapping) and isinstance(item.get("id"), str):
                card = item.get("card")
                last4 = card.get("last4") if isinstance(card, Mapping) else None
                methods.append(
                    SavedPaymentMethod(
                        id=item["id"], type=str(item.get("type") or "card"), last4=last4
                    )
                )
        return methods

    # -- authorize -------------------------------------------------------------------------

    async def authorize(self, call: ProviderCall) -> ProviderOutcome:
        """Confirm the intent with the customer's payment method, or report its state.

        The intent is read first: one already past confirmation (the customer
        finished 3-D Secure, an earlier attempt whose answer was lost) is reported as
        it stands, so a re-try never confirms twice. An intent whose last attempt
        failed with the same payment method is a decline (Medusa maps
        `last_payment_error` to an error); a different method starts a new attempt.
        """
        try:
            return await self._authorize(call)
        except _Answer as answer:
            return answer.outcome

    async def _authorize(self, call: ProviderCall) -> ProviderOutcome:
        intent_id = self._intent_id(call)
        intent = (
            await self._retrieve(intent_id)
            if intent_id is not None
            else await self._create_intent(call)
        )
        intent_id = str(intent["id"])
        status = intent.get("status")
        if status not in CONFIRMABLE:
            return intent_outcome(intent)

        payment_method = (
            call.payment_data.get("payment_method")
            or call.data.get("payment_method")
            or object_id(intent.get("payment_method"))
        )
        if not isinstance(payment_method, str) or not payment_method:
            return ProviderOutcome.invalid_data(
                "no payment method: give payment_data.payment_method (a Stripe PaymentMethod id)"
            )
        if intent.get("last_payment_error") and failed_payment_method(intent) in (
            None,
            payment_method,
        ):
            return intent_outcome(intent)

        changes: dict[str, Any] = {}
        if object_id(intent.get("payment_method")) != payment_method:
            changes["payment_method"] = payment_method
        wanted = self._amount(call)
        currency = call.currency_code.lower()
        if as_int(intent.get("amount")) != wanted or intent.get("currency") != currency:
            changes.update(amount=wanted, currency=currency)
        if changes:
            # Attached by an update rather than as a confirm parameter: the same two
            # requests work on Stripe and on localstripe, which has no confirm-time
            # payment_method. Keyed by method too, so a new method is a new request.
            await self._stripe(
                self._client.v1.payment_intents.update_async(
                    intent_id,
                    cast("PaymentIntentUpdateParams", changes),
                    {
                        "idempotency_key": idempotency_key(
                            "authorize-attach", call.idempotency_key, payment_method
                        )
                    },
                ),
                moves_money=False,
            )
        params: dict[str, Any] = {}
        return_url = call.payment_data.get("return_url") or call.data.get("return_url")
        if isinstance(return_url, str) and return_url:
            params["return_url"] = return_url
        confirmed = await self._stripe(
            self._client.v1.payment_intents.confirm_async(
                intent_id,
                cast("PaymentIntentConfirmParams", params),
                {
                    "idempotency_key": idempotency_key(
                        "authorize", call.idempotency_key, payment_method
                    )
                },
            ),
            moves_money=True,
        )
        return intent_outcome(confirmed)

    # -- capture, refund, cancel -----------------------------------------------------------

    def _payment_intent(self, call: ProviderCall) -> str:
        intent_id = self._intent_id(call)
        if intent_id is None:
            raise _Answer(
                ProviderOutcome.failed(
                    "the payment has no Stripe PaymentIntent id", code="missing_intent"
                )
            )
        return intent_id

    async def capture(self, call: ProviderCall) -> ProviderOutcome:
        """Capture `call.amount` (partial captures as `amount_to_capture`)."""
        try:
            intent_id = self._payment_intent(call)
            params: dict[str, Any] = {"amount_to_capture": self._amount(call)}
            if self.multicapture:
                current = await self._retrieve(intent_id)
                capturable = as_int(current.get("amount_capturable"))
                if capturable is not None and params["amount_to_capture"] < capturable:
                    params["final_capture"] = False
            captured = await self._stripe(
                self._client.v1.payment_intents.capture_async(
                    intent_id,
                    cast("PaymentIntentCaptureParams", params),
                    {"idempotency_key": idempotency_key("capture", call.idempotency_key)},
                ),
                moves_money=True,
            )
        except _Answer as answer:
            return answer.outcome
        if captured.get("status") in ("succeeded", "requires_capture"):
            return ProviderOutcome.succeeded(public_intent_data(captured), amount=call.amount)
        return ProviderOutcome.failed(
            f"capture left PaymentIntent {captured.get('id')} {captured.get('status')}",
            code="payment_intent_unexpected_state",
        )

    async def refund(self, call: ProviderCall) -> ProviderOutcome:
        """Refund `call.amount`; our reason goes to Stripe's field when it is one of
        Stripe's three (duplicate, fraudulent, requested_by_customer), and always to
        the refund's metadata."""
        key = idempotency_key("refund", call.idempotency_key)
        try:
            intent_id = self._payment_intent(call)
            metadata: dict[str, str] = {
                REFUND_KEY_METADATA: key,
                REFUND_CALL_KEY_METADATA: call.idempotency_key,
                "session_id": call.session_id,
                "cart_id": call.cart_id,
            }
            if call.payment_id:
                metadata["payment_id"] = call.payment_id
            if call.reason:
                metadata["reason"] = call.reason[:500]
            params: dict[str, Any] = {
                "payment_intent": intent_id,
                "amount": self._amount(call),
                "metadata": metadata,
            }
            reason = refund_reason(call.reason)
            if reason is not None:
                params["reason"] = reason
            refund = await self._stripe(
                self._client.v1.refunds.create_async(
                    cast("RefundCreateParams", params), {"idempotency_key": key}
                ),
                moves_money=True,
            )
        except _Answer as answer:
            return answer.outcome
        return self._refund_outcome(refund, call)

    @staticmethod
    def _refund_outcome(refund: Mapping[str, Any], call: ProviderCall) -> ProviderOutcome:
        status = refund.get("status")
        data = {"id": refund.get("id"), "status": status}
        # `pending` is accepted by Stripe but is not money back yet: the refund
        # stays reserved until `refund.updated` says succeeded or failed (or the
        # reconciler's status query finds it settled).
        if status in ("succeeded", None):
            return ProviderOutcome.succeeded(data, amount=call.amount)
        if status in ("pending", "requires_action"):
            return ProviderOutcome.pending(data)
        reason = refund.get("failure_reason")
        return ProviderOutcome.failed(
            f"refund {refund.get('id')} {status}" + (f": {reason}" if reason else ""),
            code=str(reason) if reason else "refund_failed",
        )

    async def cancel(self, call: ProviderCall) -> ProviderOutcome:
        """Cancel (void) the authorization; an intent already canceled is a success."""
        try:
            intent_id = self._payment_intent(call)
            try:
                canceled = await self._stripe(
                    self._client.v1.payment_intents.cancel_async(
                        intent_id,
                        {},
                        {"idempotency_key": idempotency_key("cancel", call.idempotency_key)},
                    ),
                    moves_money=True,
                )
            except _Answer as answer:
                if answer.outcome.kind != OutcomeKind.FAILED:
                    raise
                current = await self._retrieve(intent_id)
                if current.get("status") != "canceled":
                    raise
                canceled = current
        except _Answer as answer:
            return answer.outcome
        if canceled.get("status") == "canceled":
            return ProviderOutcome.succeeded(public_intent_data(canceled))
        return ProviderOutcome.failed(
            f"cancel left PaymentIntent {intent_id} {canceled.get('status')}",
            code="payment_intent_unexpected_state",
        )

    # -- status ----------------------------------------------------------------------------

    async def get_status(self, call: ProviderCall) -> ProviderOutcome:
        """What became of `call`, read from Stripe's state after an unknown outcome.

        * authorize: the intent's status, mapped as in :meth:`authorize` — except that
          an intent still waiting for confirmation (and no failed attempt) answers
          ``transient``: the confirmation never took effect, so re-sending it under
          the same key is safe; answering ``pending`` would leave the session to wait
          for a confirmation nobody will make;
        * capture: once the intent is captured, whether by this capture (see
          :meth:`_settled_capture_status`: succeeded, failed, or re-send under the
          same key); still capturable → ``transient`` (re-send: Stripe
          de-duplicates by key); canceled → failed;
        * refund: the refund carrying our key in its metadata, or ``transient`` when
          there is none (nothing was refunded under this key);
        * cancel: ``succeeded`` when the intent is canceled, else ``transient``;
        * session calls have no money effect: ``transient`` (safe to repeat).
        """
        try:
            if call.operation == "authorize":
                intent_id = self._intent_id(call)
                if intent_id is None:
                    return ProviderOutcome.not_found("no PaymentIntent yet; safe to retry")
                intent = await self._retrieve(intent_id)
                if intent.get("status") in CONFIRMABLE and not intent.get("last_payment_error"):
                    return ProviderOutcome.not_found("not confirmed at Stripe; safe to retry")
                return intent_outcome(intent)
            if call.operation == "capture":
                intent = await self._retrieve(self._payment_intent(call))
                status = intent.get("status")
                if status == "succeeded":
                    return self._settled_capture_status(intent, call)
                if status == "canceled":
                    return ProviderOutcome.failed(
                        "the PaymentIntent is canceled", code="payment_intent_unexpected_state"
                    )
                return ProviderOutcome.not_found(f"PaymentIntent is {status}; safe to re-send")
            if call.operation == "refund":
                return await self._refund_status(call)
            if call.operation == "cancel":
                intent = await self._retrieve(self._payment_intent(call))
                if intent.get("status") == "canceled":
                    return ProviderOutcome.succeeded(public_intent_data(intent))
                return ProviderOutcome.not_found("not canceled at Stripe; safe to re-send")
        except _Answer as answer:
            return answer.outcome
        return ProviderOutcome.transient("session calls are safe to repeat")

    def _settled_capture_status(
        self, intent: Mapping[str, Any], call: ProviderCall
    ) -> ProviderOutcome:
        """Whether *this* capture is the one a succeeded intent took.

        An intent that succeeded says that some capture happened, not that ours
        did: after a partial capture Stripe releases the rest (without
        multicapture) and refuses every later capture, so a second partial capture
        whose answer was lost must not be booked. Only Stripe's own record of our
        key can tell, so the ambiguous cases are re-sent under the same key
        (``not_found``): Stripe replays our capture's answer if it happened, or
        refuses it if it did not.

        * the whole intent received in one capture of exactly our amount: ours;
        * without multicapture, a received amount other than ours: another
          capture took the intent and ours was refused;
        * anything else (a partial capture of our amount, multicapture, no
          ``amount_received``): re-send under the same key.
        """
        currency = intent.get("currency") if isinstance(intent.get("currency"), str) else None
        received = our_amount(intent.get("amount_received"), currency)
        whole = our_amount(intent.get("amount"), currency)
        if received is not None and received == call.amount == whole:
            return ProviderOutcome.succeeded(public_intent_data(intent), amount=call.amount)
        if received is not None and received != call.amount and not self.multicapture:
            return ProviderOutcome.failed(
                f"PaymentIntent {intent.get('id')} was captured for {received}, not for this "
                f"capture of {call.amount}; without multicapture Stripe refuses a second capture",
                code="payment_intent_unexpected_state",
            )
        return ProviderOutcome.not_found(
            "the intent is captured; re-sending under the same key lets Stripe say whether "
            "this capture was the one"
        )

    async def _refund_status(self, call: ProviderCall) -> ProviderOutcome:
        key = idempotency_key("refund", call.idempotency_key)
        intent_id = self._payment_intent(call)
        listing = await self._stripe(
            self._client.v1.refunds.list_async({"payment_intent": intent_id, "limit": 100}),
            moves_money=False,
        )
        for refund in listing.get("data") or []:
            metadata = refund.get("metadata") if isinstance(refund, Mapping) else None
            if isinstance(metadata, Mapping) and metadata.get(REFUND_KEY_METADATA) == key:
                return self._refund_outcome(refund, call)
        return ProviderOutcome.not_found("no refund under this key at Stripe; safe to retry")

    # -- webhooks --------------------------------------------------------------------------

    def verify_webhook(self, headers: Mapping[str, str], body: bytes, now: datetime) -> None:
        """Check Stripe's `Stripe-Signature` (HMAC-SHA256 of `t.body`) and its age.

        The signature is checked as in :meth:`verify_webhook_signature`; the timestamp
        against `now` rather than the SDK's wall clock, with Stripe's 300 s tolerance
        either way, so a captured request cannot be replayed later over HTTP and the
        check is testable.
        """
        header = self._verified_header(headers, body)
        timestamp = _signature_timestamp(header)
        if timestamp is None:
            raise WebhookVerificationError("Stripe-Signature has no timestamp")
        age = now.timestamp() - timestamp
        if abs(age) > WEBHOOK_TOLERANCE_S:
            raise WebhookVerificationError(
                f"Stripe-Signature timestamp is {age:.0f}s from now "
                f"(tolerance {WEBHOOK_TOLERANCE_S}s)"
            )

    def verify_webhook_signature(self, headers: Mapping[str, str], body: bytes) -> None:
        """The signature alone, with no age limit: for the consumer of the webhook topic.

        A webhook stored on the topic is applied long after it arrived (a redelivery,
        a dead letter sent back), so its age proves nothing there; its signature
        proves that Stripe wrote exactly these bytes.
        """
        self._verified_header(headers, body)

    def verify_stored_webhook(
        self, headers: Mapping[str, str], body: bytes, received_at: datetime
    ) -> None:
        # Its age proves nothing on the topic; a replay is stopped by de-duplication.
        self.verify_webhook_signature(headers, body)

    def _verified_header(self, headers: Mapping[str, str], body: bytes) -> str:
        """The `Stripe-Signature` header once one configured secret verifies it.

        The SDK compares in constant time against every ``v1`` entry of the header;
        each configured secret is tried in turn (rotation).
        """
        if not self._webhook_secrets:
            raise WebhookVerificationError("no stripe.webhook_secret is configured")
        header = _header(headers, SIGNATURE_HEADER)
        if not header:
            raise WebhookVerificationError("missing Stripe-Signature header")
        if not header.isascii():
            # Stripe's signatures are ASCII; the SDK's constant-time comparison raises
            # TypeError on anything else instead of refusing it.
            raise WebhookVerificationError("Stripe-Signature header is not ASCII")
        try:
            payload = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise WebhookVerificationError("body is not UTF-8") from exc
        failure = "no signature matched"
        for secret in self._webhook_secrets:
            try:
                stripe.WebhookSignature.verify_header(payload, header, secret, tolerance=None)
            except stripe.SignatureVerificationError as exc:
                failure = str(exc)
                continue
            return header
        raise WebhookVerificationError(failure)

    def interpret_webhook(self, headers: Mapping[str, str], payload: str) -> WebhookAction | None:
        return interpret_event(payload)

    async def resolve_webhook(
        self, headers: Mapping[str, str], payload: str
    ) -> WebhookAction | None:
        """:meth:`interpret_webhook`, with the cart looked up where the event lacks it.

        A refund made in the dashboard and every dispute name only the PaymentIntent;
        its metadata names our session and cart. A Stripe error here raises, so the
        consumer retries the webhook (and dead-letters it if Stripe stays away)
        rather than dropping a dispute.
        """
        action = interpret_event(payload)
        if action is None or action.cart_id is not None:
            return action
        try:
            intent = await self._retrieve(action.provider_reference)
        except _Answer as answer:
            if answer.outcome.kind == OutcomeKind.FAILED:
                return None  # no such intent on this account (or not ours to read)
            raise ProviderUnavailable(
                f"stripe: cannot look up PaymentIntent {action.provider_reference} "
                f"for a webhook: {answer.outcome.message}"
            ) from answer
        metadata = intent.get("metadata")
        metadata = metadata if isinstance(metadata, Mapping) else {}
        cart_id, session_id = metadata.get("cart_id"), metadata.get("session_id")
        if not isinstance(cart_id, str) or not cart_id:
            return None  # another integration's intent on the same account
        return replace(
            action,
            cart_id=cart_id,
            session_id=session_id if isinstance(session_id, str) and session_id else None,
        )

    async def close(self) -> None:
        await self._http.close_async()  # type: ignore[no-untyped-call]
