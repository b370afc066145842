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

What the domain is told (issue 22): every outcome names its Stripe object
(`reference`: the PaymentIntent, or a refund's ``re_…`` id); the provider's
:attr:`~StripeProvider.capabilities` follow the options (Stripe's 24-hour key
window, refunds that can be pending, multicapture or a partial capture that
releases the rest); a capture sends exactly what its call says (``final_capture``
is the domain's decision, stored with the capture, never re-read from Stripe); a
status query answers found, not found, or *could not tell*; and
:meth:`~StripeProvider.read_objects` reads a payment's intent, refunds and disputes
for the audit.
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
from service.domain.capabilities import Capabilities
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
    IDEMPOTENCY_ERROR,
    IDEMPOTENCY_WINDOW_S,
    REFUND_CALL_KEY_METADATA,
    UPDATABLE,
    as_int,
    could_not_tell,
    error_outcome,
    failed_payment_method,
    idempotency_key,
    intent_outcome,
    interpret_event,
    object_facts,
    object_id,
    our_amount,
    public_intent_data,
    refund_outcome,
    refund_reason,
    with_reference,
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
    on captures the domain reserved as not final, so several partial captures work.
    Stripe only offers it to some accounts and card brands; without it every capture
    is final: a partial capture releases the rest, and Stripe refuses a second one.
    The provider's capabilities say which (`multicapture`,
    `partial_capture_releases_rest`)."""
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


def _intent_success(intent: Mapping[str, Any]) -> ProviderOutcome:
    """A session call's success: the intent's public data, naming the intent."""
    return ProviderOutcome.succeeded(
        public_intent_data(intent), reference=object_id(intent.get("id"))
    )


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
        self.capabilities: Capabilities = Capabilities(
            multicapture=options.multicapture,
            partial_capture_releases_rest=not options.multicapture,
            refunds_can_be_pending=True,
            idempotency_window_s=IDEMPOTENCY_WINDOW_S,
        )
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

    @staticmethod
    async def _read(request: Awaitable[Any]) -> dict[str, Any]:
        """One read for a status query or the audit: any error of it (a rotated key,
        an object this key cannot see, a 5xx, a connection) is *could not tell*, an
        :class:`_Answer` with an unknown outcome — never an outcome of what is asked."""
        try:
            result = await request
        except stripe.StripeError as exc:
            raise _Answer(could_not_tell(exc)) from exc
        answer: dict[str, Any] = result.to_dict()
        return answer

    async def _read_intent(self, intent_id: str) -> dict[str, Any]:
        return await self._read(self._client.v1.payment_intents.retrieve_async(intent_id))

    async def _read_all(
        self, listing: Any, params: dict[str, Any], *, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Every object of a Stripe list (refunds, disputes), page after page."""
        found: list[dict[str, Any]] = []
        page_params = {**params, "limit": limit}
        while True:
            page = await self._read(listing(page_params))
            items = [item for item in page.get("data") or [] if isinstance(item, Mapping)]
            found.extend(dict(item) for item in items)
            last = object_id(items[-1].get("id")) if items else None
            if not page.get("has_more") or last is None:
                return found
            page_params = {**page_params, "starting_after": last}

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
        return _intent_success(intent)

    async def update(self, call: ProviderCall) -> ProviderOutcome:
        """New amount or currency, while Stripe allows it (before confirmation)."""
        intent_id = self._intent_id(call)
        try:
            if intent_id is None:
                return _intent_success(await self._create_intent(call))
            intent = await self._retrieve(intent_id)
            wanted = self._amount(call)
            currency = call.currency_code.lower()
            if as_int(intent.get("amount")) == wanted and intent.get("currency") == currency:
                return _intent_success(intent)
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
        return _intent_success(updated)

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
                return _intent_success(intent)
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
        return _intent_success(canceled)

    async def retrieve(self, call: ProviderCall) -> ProviderOutcome:
        intent_id = self._intent_id(call)
        if intent_id is None:
            return ProviderOutcome.succeeded(dict(call.data))
        try:
            return _intent_success(await self._retrieve(intent_id))
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
        Every answer names the intent: all attempts on a session share it.
        """
        intent_id = self._intent_id(call)
        try:
            if intent_id is None:
                # Created under a key of the session and the parameters, so a retry
                # reaches the same intent; Stripe replays the create's answer, the
                # intent as it was then, so it is read again as it is now.
                intent_id = object_id((await self._create_intent(call)).get("id"))
            if intent_id is None:
                raise _Answer(ProviderOutcome.failed("Stripe created no PaymentIntent id"))
            intent = await self._retrieve(intent_id)
            outcome = await self._authorize(call, intent)
        except _Answer as answer:
            outcome = answer.outcome
        if outcome.code == IDEMPOTENCY_ERROR:
            outcome = await self._key_conflict(call, outcome, intent_id)
        return with_reference(outcome, intent_id)

    @staticmethod
    def _payment_method(call: ProviderCall, intent: Mapping[str, Any]) -> str | None:
        """The method an authorization confirms with: the customer's, else the intent's."""
        method = (
            call.payment_data.get("payment_method")
            or call.data.get("payment_method")
            or object_id(intent.get("payment_method"))
        )
        return method if isinstance(method, str) and method else None

    @staticmethod
    def _failed_with(intent: Mapping[str, Any], payment_method: str | None) -> bool:
        """Whether the intent's last attempt failed with this method (a decline of this
        attempt, not of an earlier one with another method)."""
        return bool(intent.get("last_payment_error")) and failed_payment_method(intent) in (
            None,
            payment_method,
        )

    async def _authorize(self, call: ProviderCall, intent: Mapping[str, Any]) -> ProviderOutcome:
        intent_id = str(intent["id"])
        status = intent.get("status")
        if status not in CONFIRMABLE:
            return intent_outcome(intent)

        payment_method = self._payment_method(call, intent)
        if payment_method is None:
            return ProviderOutcome.invalid_data(
                "no payment method: give payment_data.payment_method (a Stripe PaymentMethod id)"
            )
        if self._failed_with(intent, payment_method):
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

    async def _key_conflict(
        self, call: ProviderCall, refused: ProviderOutcome, intent_id: str | None = None
    ) -> ProviderOutcome:
        """Stripe refused our key as used before with other parameters
        (`idempotency_error`): a request under it began executing, and may have moved
        money. What it did is asked, not assumed (issue 22, sequence 4):

        * found (the operation's outcome) → that outcome;
        * not found (Stripe shows the operation never happened) → the refusal stands
          (failed, code ``idempotency_error``): nothing moved, and the key cannot be
          used with these parameters for 24 hours;
        * could not tell → unknown: the status query is asked again later. Where a
          status would have said "re-send under the same key to tell" (a capture
          among several partial ones), re-sending is what Stripe just refused: could
          not tell.
        """
        status = await self._status(call, intent_id, resend_tells=False)
        if status.is_not_found:
            return refused
        if status.kind in (OutcomeKind.UNKNOWN, OutcomeKind.TRANSIENT):
            return ProviderOutcome.unknown(
                f"{refused.message} (an earlier request under this key may have acted; "
                f"its status: {status.message})"
            )
        return status

    async def capture(self, call: ProviderCall) -> ProviderOutcome:
        """Capture `call.amount` (partial captures as `amount_to_capture`).

        The request is exactly what the call says: ``final_capture: false`` only for a
        capture the domain reserved as not final, and only with multicapture. Nothing
        is re-read from Stripe to decide it, so a retry under the same key sends the
        same parameters (Stripe answers a key reused with other parameters with
        `idempotency_error`).
        """
        intent_id = self._intent_id(call)
        try:
            intent_id = self._payment_intent(call)
            params: dict[str, Any] = {"amount_to_capture": self._amount(call)}
            if self.multicapture and not call.final_capture:
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
            outcome = answer.outcome
        else:
            if captured.get("status") in ("succeeded", "requires_capture"):
                outcome = ProviderOutcome.succeeded(
                    public_intent_data(captured), amount=call.amount
                )
            else:
                outcome = ProviderOutcome.failed(
                    f"capture left PaymentIntent {captured.get('id')} {captured.get('status')}",
                    code="payment_intent_unexpected_state",
                )
        if outcome.code == IDEMPOTENCY_ERROR:
            outcome = await self._key_conflict(call, outcome)
        return with_reference(outcome, intent_id)

    async def refund(self, call: ProviderCall) -> ProviderOutcome:
        """Refund `call.amount`; our reason goes to Stripe's field when it is one of
        Stripe's three (duplicate, fraudulent, requested_by_customer), and always to
        the refund's metadata. The answer names the refund (``re_…``)."""
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
            if answer.outcome.code == IDEMPOTENCY_ERROR:
                return await self._key_conflict(call, answer.outcome)
            return answer.outcome
        return refund_outcome(refund, call.amount)

    async def cancel(self, call: ProviderCall) -> ProviderOutcome:
        """Cancel (void) the authorization; an intent already canceled is a success.

        Stripe refuses to cancel an intent that is canceled already: a refusal is
        checked against the intent, so a cancel repeated (or made in the dashboard
        first) is answered with the intent as it is."""
        intent_id = self._intent_id(call)
        try:
            intent_id = self._payment_intent(call)
            canceled = await self._stripe(
                self._client.v1.payment_intents.cancel_async(
                    intent_id,
                    {},
                    {"idempotency_key": idempotency_key("cancel", call.idempotency_key)},
                ),
                moves_money=True,
            )
        except _Answer as answer:
            outcome = answer.outcome
            if outcome.kind == OutcomeKind.FAILED and intent_id is not None:
                outcome = await self._refused_cancel(call, intent_id, outcome)
            return with_reference(outcome, intent_id)
        if canceled.get("status") == "canceled":
            return with_reference(
                ProviderOutcome.succeeded(public_intent_data(canceled)), intent_id
            )
        return with_reference(
            ProviderOutcome.failed(
                f"cancel left PaymentIntent {intent_id} {canceled.get('status')}",
                code="payment_intent_unexpected_state",
            ),
            intent_id,
        )

    async def _refused_cancel(
        self, call: ProviderCall, intent_id: str, refused: ProviderOutcome
    ) -> ProviderOutcome:
        """A refused cancel, checked against the intent: canceled (by us earlier, the
        dashboard, Stripe's expiry) → succeeded; otherwise the refusal stands. A key
        conflict whose intent cannot be read is *could not tell*."""
        try:
            current = await self._read_intent(intent_id)
        except _Answer as answer:
            if refused.code == IDEMPOTENCY_ERROR:
                return ProviderOutcome.unknown(f"{refused.message}; {answer.outcome.message}")
            return refused
        if current.get("status") == "canceled":
            return ProviderOutcome.succeeded(public_intent_data(current))
        return refused

    # -- status ----------------------------------------------------------------------------

    async def get_status(self, call: ProviderCall) -> ProviderOutcome:
        """What became of `call`, read from Stripe's state after an unknown outcome.

        Three kinds of answer (the port's): found (the operation's outcome, naming
        its object), not found (Stripe positively shows it never happened: re-sending
        it under the same key is safe), or *could not tell* (unknown). Any error of
        the query itself — a key rotated (401) or restricted (403), an object this key
        cannot see (404), a 5xx, a timeout — is could not tell, never an outcome.

        * authorize: the intent's status, mapped as in :meth:`authorize`; an intent
          still waiting for confirmation (and whose last failure, if any, was with
          another method) is not found: the confirmation never took effect. Without
          an intent in the call's data, the intent is the one the authorization's
          create key names (Stripe replays that create within 24 hours);
        * capture: see :meth:`_capture_status`;
        * refund: the refund carrying our key in its metadata, or not found when the
          intent's refunds show none;
        * cancel: succeeded when the intent is canceled, else not found (a cancel
          takes effect at once);
        * session calls have no money effect: not found (safe to repeat).
        """
        return await self._status(call)

    async def _status(
        self, call: ProviderCall, intent_id: str | None = None, *, resend_tells: bool = True
    ) -> ProviderOutcome:
        intent_id = intent_id or self._intent_id(call)
        try:
            if call.operation == "authorize":
                return await self._authorize_status(call, intent_id)
            if call.operation in ("capture", "refund", "cancel"):
                if intent_id is None:
                    # The call itself fails before any request without an intent.
                    return ProviderOutcome.not_found("no PaymentIntent: nothing was sent")
                if call.operation == "refund":
                    return await self._refund_status(call, intent_id)
                intent = await self._read_intent(intent_id)
                if call.operation == "capture":
                    return with_reference(
                        self._capture_status(intent, call, resend_tells=resend_tells), intent_id
                    )
                if intent.get("status") == "canceled":
                    return with_reference(
                        ProviderOutcome.succeeded(public_intent_data(intent)), intent_id
                    )
                return with_reference(
                    ProviderOutcome.not_found(
                        f"PaymentIntent is {intent.get('status')}, not canceled at Stripe"
                    ),
                    intent_id,
                )
        except _Answer as answer:
            return with_reference(answer.outcome, intent_id)
        return ProviderOutcome.not_found("session calls have no money effect; safe to repeat")

    async def _authorize_status(self, call: ProviderCall, intent_id: str | None) -> ProviderOutcome:
        if intent_id is None:
            # An authorization without an intent created one, under a key of the
            # session and the parameters; the same request replays its answer
            # (Stripe remembers keys for 24 hours), which names the intent, so a
            # confirmation whose answer was lost is found on it. Made anew, it is an
            # intent nobody confirmed.
            try:
                intent_id = object_id((await self._create_intent(call)).get("id"))
            except _Answer as answer:
                return ProviderOutcome.unknown(
                    f"no PaymentIntent to ask about: {answer.outcome.message}"
                )
            if intent_id is None:
                return ProviderOutcome.unknown("Stripe answered a create without an id")
        # Read as it is now: a replayed answer is the intent as it was then.
        intent = await self._read_intent(intent_id)
        if intent.get("status") in CONFIRMABLE and not self._failed_with(
            intent, self._payment_method(call, intent)
        ):
            return with_reference(
                ProviderOutcome.not_found("not confirmed at Stripe; safe to retry"),
                object_id(intent.get("id")),
            )
        return intent_outcome(intent)

    def _capture_status(
        self, intent: Mapping[str, Any], call: ProviderCall, *, resend_tells: bool = True
    ) -> ProviderOutcome:
        """Whether *this* capture happened, from the intent.

        An intent says how much was captured in all (`amount_received`), not by which
        capture; only Stripe's record of our key knows that (re-sending under it within
        24 hours replays our capture's answer). So:

        * nothing received and not canceled: no capture happened → not found;
        * still capturable after partial captures (multicapture): ours may be one of
          them; re-sending under the same key is how Stripe tells → not found (the
          domain repeats a call only inside the key window), or could not tell when
          re-sending is not an option (`resend_tells` False: Stripe just refused it);
        * succeeded with exactly our amount received, the whole intent: ours (or one
          of the same amount that took all: the books end the same) → succeeded;
        * succeeded without multicapture with another amount received: one capture
          took the intent and Stripe refuses any other → failed;
        * succeeded otherwise (a partial capture of our amount, multicapture, no
          `amount_received`): could not tell;
        * canceled with nothing received: no capture happened, and none can → failed;
          with money received (multicapture): could not tell.
        """
        status = intent.get("status")
        currency = intent.get("currency") if isinstance(intent.get("currency"), str) else None
        received = our_amount(intent.get("amount_received"), currency)
        whole = our_amount(intent.get("amount"), currency)
        if status == "succeeded":
            if received is not None and received == call.amount == whole:
                return ProviderOutcome.succeeded(public_intent_data(intent), amount=call.amount)
            if received is not None and received != call.amount and not self.multicapture:
                return ProviderOutcome.failed(
                    f"PaymentIntent {intent.get('id')} was captured for {received}, not for "
                    f"this capture of {call.amount}; without multicapture Stripe refuses a "
                    "second capture",
                    code="payment_intent_unexpected_state",
                )
            return ProviderOutcome.unknown(
                f"PaymentIntent {intent.get('id')} is captured ({received} received); "
                f"whether by this capture of {call.amount} only Stripe's record of its "
                "key can tell"
            )
        if status == "canceled":
            if received:
                return ProviderOutcome.unknown(
                    f"PaymentIntent {intent.get('id')} is canceled after {received} was "
                    "captured; whether by this capture Stripe's record of its key can tell"
                )
            return ProviderOutcome.failed(
                "the PaymentIntent is canceled", code="payment_intent_unexpected_state"
            )
        if received:
            message = (
                f"PaymentIntent is {status} with {received} captured so far; only Stripe's "
                "record of this capture's key can say whether it was one of them"
            )
            if resend_tells:
                return ProviderOutcome.not_found(f"{message} (re-send under the same key)")
            return ProviderOutcome.unknown(message)
        return ProviderOutcome.not_found(f"PaymentIntent is {status}, nothing captured")

    async def _refund_status(self, call: ProviderCall, intent_id: str) -> ProviderOutcome:
        key = idempotency_key("refund", call.idempotency_key)
        refunds = await self._read_all(
            self._client.v1.refunds.list_async, {"payment_intent": intent_id}
        )
        for refund in refunds:
            metadata = refund.get("metadata")
            if isinstance(metadata, Mapping) and metadata.get(REFUND_KEY_METADATA) == key:
                return refund_outcome(refund, call.amount)
        return ProviderOutcome.not_found("no refund under this key at Stripe; safe to retry")

    # -- the audit ---------------------------------------------------------------------------

    async def read_objects(self, call: ProviderCall) -> list[WebhookAction]:
        """The payment's PaymentIntent, its refunds and its disputes as they are now,
        as facts (:func:`.stripe_mapping.object_facts`). An intent whose metadata
        does not name the payment's cart is not ours to report: no facts. A Stripe
        error raises :class:`ProviderUnavailable` (the audit asks again later)."""
        intent_id = self._intent_id(call)
        if intent_id is None:
            return []
        try:
            intent = await self._read_intent(intent_id)
            metadata = intent.get("metadata")
            if not isinstance(metadata, Mapping) or metadata.get("cart_id") != call.cart_id:
                return []
            params = {"payment_intent": intent_id}
            refunds = await self._read_all(self._client.v1.refunds.list_async, params)
            disputes = await self._read_all(self._client.v1.disputes.list_async, params)
        except _Answer as answer:
            raise ProviderUnavailable(
                f"stripe: cannot read PaymentIntent {intent_id}: {answer.outcome.message}"
            ) from answer
        return object_facts(intent, refunds, disputes)

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
        its metadata names our session and cart. Only an intent Stripe says does not
        exist on this account (404) drops the webhook; any other error raises (a key
        rotated or restricted, Stripe away), so the consumer retries the webhook (and
        dead-letters it if Stripe stays away) rather than dropping a dispute.
        """
        action = interpret_event(payload)
        if action is None or action.cart_id is not None:
            return action
        try:
            intent = await self._read_intent(action.provider_reference)
        except _Answer as answer:
            cause = answer.__cause__
            if isinstance(cause, stripe.InvalidRequestError) and cause.http_status == 404:
                return None  # no such intent on this account
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
