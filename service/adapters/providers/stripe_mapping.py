"""Pure tables for the Stripe adapter: statuses, errors, keys, reasons, webhooks.

Kept apart from the I/O so each table can be tested on plain dicts (recorded or
hand-made Stripe objects) without a server. The adapter (:mod:`.stripe`) only
glues these to the SDK.

PaymentIntent statuses map as Medusa's Stripe provider maps them
(`getStatus`): `requires_payment_method`, `requires_confirmation` and
`processing` are pending — or an error when `last_payment_error` is set;
`requires_action` needs the customer; `requires_capture` is authorized;
`succeeded` is authorized and captured; `canceled` is canceled.

Every outcome about a PaymentIntent names it (`reference`, the `pi_…` id) and every
refund outcome names its refund (`re_…`): the books match provider objects by these
ids only. Every attempt on one session confirms the same PaymentIntent, so they all
answer with the same reference.

Provider facts (webhooks, and what the audit reads: :func:`object_facts`) say what
an object *is now*: an authorization's `capturable`, a capture's cumulative
`amount_received`, a refund's status, a dispute's status; an event's own `evt_…` id
rides along as `event_id`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Final

import stripe

from service.domain.outcomes import ProviderOutcome
from service.ports.providers import WebhookAction, WebhookMeaning

from .stripe_money import (
    AmountNotRepresentable,
    UnsupportedCurrency,
    from_stripe_amount,
)

MAX_IDEMPOTENCY_KEY: Final = 255
"""Stripe's limit on the `Idempotency-Key` header."""

IDEMPOTENCY_WINDOW_S: Final = 24 * 3600
"""How long Stripe is sure to remember an idempotency key ("at least 24 hours old"
keys may be pruned; a key reused after that is a new request)."""

IDEMPOTENCY_ERROR: Final = "idempotency_error"
"""The code of Stripe's answer to a key reused with other parameters."""

CONFIRMABLE: Final = frozenset({"requires_payment_method", "requires_confirmation"})
"""Statuses in which a PaymentIntent can be (re-)confirmed with a payment method."""

CANCELABLE: Final = frozenset(
    {"requires_payment_method", "requires_confirmation", "requires_action", "requires_capture"}
)
"""Statuses Stripe allows `cancel` from (`processing` too, for some methods; not cards)."""

UPDATABLE: Final = frozenset(
    {"requires_payment_method", "requires_confirmation", "requires_action"}
)
"""Statuses in which Stripe lets amount and currency change."""

STRIPE_REFUND_REASONS: Final = frozenset({"duplicate", "fraudulent", "requested_by_customer"})

REFUND_REASON_ALIASES: Final[dict[str, str]] = {
    "duplicate": "duplicate",
    "duplicate_charge": "duplicate",
    "fraud": "fraudulent",
    "fraudulent": "fraudulent",
    "requested_by_customer": "requested_by_customer",
    "customer_request": "requested_by_customer",
    "customer_requested": "requested_by_customer",
}
"""Our free-text refund reasons that mean one of Stripe's three; others go to metadata."""

WEBHOOK_MEANINGS: Final[dict[str, WebhookMeaning]] = {
    "payment_intent.amount_capturable_updated": "authorized",
    "payment_intent.succeeded": "captured",
    "payment_intent.payment_failed": "failed",
    "payment_intent.requires_action": "requires_more",
    "payment_intent.canceled": "canceled",
}
"""Stripe event type → what it means for a session; every other type means nothing."""

PUBLIC_INTENT_FIELDS: Final = ("id", "client_secret", "status", "capture_method")
"""PaymentIntent fields kept in session/payment data. The client secret is meant for
the customer's browser (Stripe.js confirms with it); the API key never leaves the
adapter."""


def idempotency_key(operation: str, key: str, *parts: str) -> str:
    """The Stripe `Idempotency-Key` for one operation of one of our calls.

    The operation prefix keeps different operations from ever sharing a key (a
    capture and a refund made under the same command id would otherwise collide,
    and Stripe would answer the second with the first's response). Keys longer
    than Stripe's limit are hashed, deterministically, so retries still match.
    """
    raw = ":".join((operation, key, *parts))
    if len(raw) <= MAX_IDEMPOTENCY_KEY:
        return raw
    digest = hashlib.sha256(raw.encode()).hexdigest()
    return f"{operation}:sha256:{digest}"


def refund_reason(reason: str | None) -> str | None:
    """Stripe's refund `reason` for ours, or None (ours then goes to metadata only)."""
    if reason is None:
        return None
    return REFUND_REASON_ALIASES.get(reason.strip().lower())


def as_int(value: Any) -> int | None:
    """An integer field of a Stripe object (some fakes echo form strings back)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def object_id(value: Any) -> str | None:
    """The id of an expandable field: a string id or an expanded object."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        found = value.get("id")
        return found if isinstance(found, str) else None
    return None


def our_amount(value: Any, currency: str | None) -> int | None:
    """A Stripe amount field in our ISO minor units, or None when absent or inexact."""
    amount = as_int(value)
    if amount is None or not currency:
        return None
    try:
        return from_stripe_amount(amount, currency)
    except (AmountNotRepresentable, UnsupportedCurrency, ValueError):
        return None


def public_intent_data(intent: Mapping[str, Any]) -> dict[str, Any]:
    """What of a PaymentIntent is kept on the session or payment: public fields only."""
    data: dict[str, Any] = {
        name: intent[name] for name in PUBLIC_INTENT_FIELDS if intent.get(name) is not None
    }
    currency = intent.get("currency")
    if isinstance(currency, str):
        data["currency_code"] = currency.lower()
        amount = our_amount(intent.get("amount"), currency)
        if amount is not None:
            data["amount"] = amount
    payment_method = object_id(intent.get("payment_method"))
    if payment_method is not None:
        data["payment_method"] = payment_method
    charge = object_id(intent.get("latest_charge"))
    if charge is not None:
        data["latest_charge"] = charge
    return data


def storefront_action(intent: Mapping[str, Any]) -> dict[str, Any]:
    """The `action` of `payment.requires_action`: what a storefront needs to finish.

    Stripe's `next_action` is kept as it is (its `type` and the object named by the
    type), and beside it, flat:

    * ``payment_intent_id`` and ``client_secret``: Stripe.js finishes any action
      with them (``stripe.handleNextAction({clientSecret})``); for the common
      ``use_stripe_sdk`` (in-page 3-D Secure) there is no other way;
    * ``url`` (and ``return_url``) for ``redirect_to_url``: a storefront without
      Stripe.js sends the customer there and gets them back on the return URL.

    The client secret is meant for the customer's browser (it cannot move money
    without the customer); the logs redact it all the same.
    """
    next_action = intent.get("next_action")
    action: dict[str, Any] = (
        dict(next_action) if isinstance(next_action, Mapping) else {"type": "unknown"}
    )
    if not isinstance(action.get("type"), str):
        action["type"] = "unknown"
    intent_id = object_id(intent.get("id"))
    if intent_id is not None:
        action["payment_intent_id"] = intent_id
    secret = intent.get("client_secret")
    if isinstance(secret, str) and secret:
        action["client_secret"] = secret
    redirect = action.get("redirect_to_url")
    if isinstance(redirect, Mapping):
        for name in ("url", "return_url"):
            value = redirect.get(name)
            if isinstance(value, str) and value:
                action[name] = value
    return action


def failed_payment_method(intent: Mapping[str, Any]) -> str | None:
    """The payment method the last failed attempt used, where Stripe says so."""
    error = intent.get("last_payment_error")
    if isinstance(error, Mapping):
        found = object_id(error.get("payment_method"))
        if found is not None:
            return found
    return object_id(intent.get("payment_method"))


def _error_message(error: Mapping[str, Any]) -> str:
    message = error.get("message")
    return message if isinstance(message, str) and message else "the payment failed"


def _error_code(error: Mapping[str, Any]) -> str | None:
    for name in ("decline_code", "code"):
        value = error.get(name)
        if isinstance(value, str) and value:
            return value
    return None


def with_reference(outcome: ProviderOutcome, reference: str | None) -> ProviderOutcome:
    """`outcome` naming the provider object it is about (unchanged without one)."""
    if reference is None or outcome.reference == reference:
        return outcome
    return replace(outcome, reference=reference)


def intent_outcome(intent: Mapping[str, Any]) -> ProviderOutcome:
    """A PaymentIntent's status as an authorization outcome (Medusa's table), naming
    the intent (`reference`).

    `amount` on a success is what Stripe holds for us, in our units: the amount
    received once captured, else the capturable (or, failing that, the intent's)
    amount.
    """
    return with_reference(_intent_outcome(intent), object_id(intent.get("id")))


def _intent_outcome(intent: Mapping[str, Any]) -> ProviderOutcome:
    status = intent.get("status")
    data = public_intent_data(intent)
    currency = _currency(intent)
    error = intent.get("last_payment_error")
    if status in ("requires_payment_method", "requires_confirmation", "processing"):
        if isinstance(error, Mapping) and status != "processing":
            return ProviderOutcome.declined(_error_message(error), _error_code(error))
        return ProviderOutcome.pending(data)
    if status == "requires_action":
        return ProviderOutcome.requires_more(storefront_action(intent), data)
    if status == "requires_capture":
        amount = our_amount(intent.get("amount_capturable"), currency)
        if amount is None:
            amount = our_amount(intent.get("amount"), currency)
        return ProviderOutcome.succeeded(data, amount=amount)
    if status == "succeeded":
        amount = our_amount(intent.get("amount_received"), currency)
        if amount is None:
            amount = our_amount(intent.get("amount"), currency)
        return ProviderOutcome.succeeded(data, captured=True, amount=amount)
    if status == "canceled":
        return ProviderOutcome.canceled(data)
    return ProviderOutcome.failed(f"unexpected PaymentIntent status {status!r}", code="status")


def refund_outcome(refund: Mapping[str, Any], fallback_amount: int) -> ProviderOutcome:
    """A Refund as the outcome of a refund call, naming the refund (`re_…`).

    `pending` (and `requires_action`) is accepted by Stripe but is not money back
    yet: the refund stays reserved until it settles (`refund.updated`, or the status
    query). The amount is the refund's own, as Stripe holds it.
    """
    status = refund.get("status")
    refund_id = object_id(refund.get("id"))
    data = {"id": refund_id, "status": status}
    if status in ("succeeded", None):
        amount = our_amount(refund.get("amount"), _currency(refund))
        return ProviderOutcome.succeeded(
            data, amount=fallback_amount if amount is None else amount, reference=refund_id
        )
    if status in ("pending", "requires_action"):
        return ProviderOutcome.pending(data, reference=refund_id)
    reason = refund.get("failure_reason")
    return with_reference(
        ProviderOutcome.failed(
            f"refund {refund_id} {status}" + (f": {reason}" if reason else ""),
            code=str(reason) if reason else "refund_failed",
        ),
        refund_id,
    )


def _currency(obj: Mapping[str, Any]) -> str | None:
    currency = obj.get("currency")
    return currency if isinstance(currency, str) else None


def error_outcome(exc: stripe.StripeError, *, moves_money: bool) -> ProviderOutcome:
    """A Stripe SDK exception as an outcome kind.

    * card declined (`CardError`) → declined;
    * rate limit, and 409 (a request with the same idempotency key is still
      running) → transient: retry with the same key;
    * connection failures → transient when the request cannot have reached
      Stripe (connect refused or timed out); otherwise, for calls that move
      money, unknown — a read timeout or dropped connection may follow an effect,
      and contract promise 7 says to ask for the status, not to assume nothing
      happened;
    * 5xx → transient for calls that move no money; for those that do, unknown,
      because Stripe documents a 500 as indeterminate ("the request may or may not
      have been processed");
    * invalid request → failed (`provider_error`), except an unusable payment
      method → invalid data; authentication and permission errors → failed;
    * a key reused with other parameters (`idempotency_error`) → failed with code
      :data:`IDEMPOTENCY_ERROR`. An earlier request under the key began executing,
      so for a call that moves money the adapter asks the status before it lets
      that failure stand (:meth:`StripeProvider._key_conflict`).
    """
    message = exc.user_message or str(exc) or type(exc).__name__
    code = exc.code
    if isinstance(exc, stripe.CardError):
        error = exc.error.to_dict() if exc.error is not None else {}
        return ProviderOutcome.declined(message, _error_code(error) or code)
    if isinstance(exc, stripe.RateLimitError):
        return ProviderOutcome.transient(f"stripe rate limit: {message}")
    if isinstance(exc, stripe.APIConnectionError):
        if not moves_money or _not_sent(exc):
            return ProviderOutcome.transient(f"stripe unreachable: {message}")
        return ProviderOutcome.unknown(f"stripe connection lost, outcome unknown: {message}")
    if isinstance(exc, stripe.IdempotencyError):
        return ProviderOutcome.failed(message, code=code or IDEMPOTENCY_ERROR)
    if isinstance(exc, stripe.InvalidRequestError):
        if getattr(exc, "param", None) == "payment_method":
            return ProviderOutcome.invalid_data(message)
        return ProviderOutcome.failed(message, code=code)
    if isinstance(exc, stripe.AuthenticationError | stripe.PermissionError):
        return ProviderOutcome.failed(f"stripe rejected the API key: {message}", code=code)
    status = exc.http_status
    if status == 409:
        return ProviderOutcome.transient(f"stripe conflict (409): {message}")
    if status is None or status >= 500:
        if moves_money:
            return ProviderOutcome.unknown(f"stripe error {status}, outcome unknown: {message}")
        return ProviderOutcome.transient(f"stripe error {status}: {message}")
    return ProviderOutcome.failed(message, code=code)


def could_not_tell(exc: stripe.StripeError) -> ProviderOutcome:
    """An error of a status query (or of an audit read) itself, as *could not tell*.

    Whatever failed — the key rotated (401) or restricted (403), the object is not
    visible to this key (404 `resource_missing`), a bad request, a rate limit, a 5xx,
    a connection — says nothing about what became of the operation asked about, so
    it is never an outcome of it (issue 22, sequence 7).
    """
    message = exc.user_message or str(exc) or type(exc).__name__
    status = f" {exc.http_status}" if exc.http_status is not None else ""
    return ProviderOutcome.unknown(
        f"stripe could not tell ({type(exc).__name__}{status}): {message}"
    )


def _not_sent(exc: BaseException) -> bool:
    """Whether a connection error happened before the request could reach Stripe."""
    cause = exc.__cause__
    try:
        import httpx
    except ImportError:  # pragma: no cover - httpx is the client we configure
        return False
    return isinstance(cause, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)


REFUND_EVENTS: Final = frozenset(
    {"refund.created", "refund.updated", "refund.failed", "charge.refund.updated"}
)
"""Events whose object is a Refund (Stripe sends `charge.refund.updated` on older
API versions and `refund.*` on newer ones; both are handled)."""

DISPUTE_EVENTS: Final = frozenset(
    {
        "charge.dispute.created",
        "charge.dispute.updated",
        "charge.dispute.closed",
        "charge.dispute.funds_withdrawn",
        "charge.dispute.funds_reinstated",
    }
)

REFUND_MEANINGS: Final[dict[str, WebhookMeaning]] = {
    "succeeded": "refund_succeeded",
    "pending": "refund_pending",
    "requires_action": "refund_pending",
    "failed": "refund_failed",
    "canceled": "refund_failed",
}
"""A Refund's `status` → what it means; `pending` is not money back yet."""

DISPUTE_STATUSES: Final[dict[str, str]] = {
    "warning_needs_response": "open",
    "warning_under_review": "open",
    "needs_response": "open",
    "under_review": "open",
    "warning_closed": "won",
    "won": "won",
    "prevented": "won",
    "lost": "lost",
}
"""Stripe's dispute `status` → the contract's `open`/`won`/`lost`. An inquiry closed
without a chargeback (`warning_closed`) leaves the money with the merchant: won."""

REFUND_CALL_KEY_METADATA: Final = "payments_call_key"
"""Refund metadata holding our call's idempotency key (the pending refund's key)."""


def interpret_event(payload: str) -> WebhookAction | None:
    """What a (verified) Stripe event means for one of our payments, or None.

    PaymentIntent events count only for intents we created: the intent's metadata
    must name our session and cart, as :meth:`StripeProvider.initiate` writes them.
    Refund, charge and dispute events name the PaymentIntent; refunds we created
    carry our ids in their metadata, others (the dashboard's, disputes) come back
    with ``cart_id`` None and the PaymentIntent id as ``provider_reference``, for
    :meth:`StripeProvider.resolve_webhook` to look the cart up. The action carries
    the event's own id (``evt_…``) as ``event_id``: Stripe delivers an event more
    than once and in any order, and a signed body replayed under another envelope
    is still the same event.
    """
    try:
        event = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(event, Mapping):
        return None
    data = event.get("data")
    obj = data.get("object") if isinstance(data, Mapping) else None
    if not isinstance(obj, Mapping):
        return None
    action = _event_action(str(event.get("type")), obj)
    event_id = event.get("id")
    if action is None or not isinstance(event_id, str) or not event_id:
        return action
    return replace(action, event_id=event_id)


def _event_action(event_type: str, obj: Mapping[str, Any]) -> WebhookAction | None:
    if event_type in REFUND_EVENTS:
        return _refund_action(obj)
    if event_type == "charge.refunded":
        return _charge_refunded_action(obj)
    if event_type == "charge.captured":
        return _charge_captured_action(obj)
    if event_type in DISPUTE_EVENTS:
        return _dispute_action(obj)
    meaning = WEBHOOK_MEANINGS.get(event_type)
    if meaning is None:
        return None
    return intent_action(meaning, obj)


def intent_capturable(intent: Mapping[str, Any]) -> int | None:
    """What Stripe still lets be captured on `intent`, in our units (None: not said).

    A succeeded intent has nothing left: its last capture was final, and a final
    capture of less than what was capturable released the rest (without
    multicapture every capture is final). A canceled intent released its hold.
    """
    if intent.get("status") in ("succeeded", "canceled"):
        return 0
    return our_amount(intent.get("amount_capturable"), _currency(intent))


def intent_action(meaning: WebhookMeaning, intent: Mapping[str, Any]) -> WebhookAction | None:
    """A PaymentIntent as a fact of `meaning` (from its event's type), or None when
    the intent is not ours (no metadata naming our cart).

    `authorized` carries the amount held (`amount_capturable`); `captured` the amount
    received so far in all (`amount_received`, cumulative). An intent that still
    holds money after partial captures (multicapture, `final_capture: false`) is
    `captured`, whatever its event's type said: its captures are money in, and
    `capturable` says what is still held. Every PaymentIntent fact carries
    `capturable` where Stripe says it.
    """
    if intent.get("object") not in (None, "payment_intent"):
        return None
    session_id, cart_id = _ours(intent.get("metadata"))
    reference = object_id(intent.get("id"))
    if cart_id is None or reference is None:
        return None
    currency = _currency(intent)
    received = our_amount(intent.get("amount_received"), currency)
    amount: int | None = None
    action: dict[str, Any] | None = None
    message = ""
    if meaning == "authorized" and received:
        meaning = "captured"
    if meaning == "captured":
        # Only what Stripe says it received: a fallback to `amount` would turn a
        # partial capture (the rest released) into a full one in our books.
        amount = received
    elif meaning == "authorized":
        amount = our_amount(intent.get("amount_capturable"), currency)
    elif meaning == "requires_more":
        action = storefront_action(intent)
    elif meaning == "failed":
        error = intent.get("last_payment_error")
        message = _error_message(error) if isinstance(error, Mapping) else "the payment failed"
    return WebhookAction(
        meaning=meaning,
        session_id=session_id,
        cart_id=cart_id,
        provider_reference=reference,
        amount=amount,
        data=public_intent_data(intent),
        action=action,
        message=message,
        capturable=intent_capturable(intent),
    )


def object_facts(
    intent: Mapping[str, Any],
    refunds: Iterable[Mapping[str, Any]],
    disputes: Iterable[Mapping[str, Any]],
) -> list[WebhookAction]:
    """A PaymentIntent, its refunds and its disputes as they are now, as facts (for
    the audit: what a webhook never said still reaches the books). Empty when the
    intent is not ours.

    * the intent: `authorized` (held, nothing received), `captured` (received so
      far in all, with what is still `capturable`), `canceled` (after a `captured`
      fact when money was received before the cancel); an intent that holds no money
      (waiting for a method, for the customer, failed) is no money fact;
    * every refund: `refund_pending`, `refund_succeeded` or `refund_failed`, as in
      its webhooks;
    * every dispute: `disputed`, as in its webhooks.

    Refunds made in the dashboard and disputes carry no metadata of ours: they are
    named with the intent's session and cart. `event_id` is None: no event said it.
    """
    session_id, cart_id = _ours(intent.get("metadata"))
    if cart_id is None:
        return []
    facts: list[WebhookAction | None] = []
    status = intent.get("status")
    received = our_amount(intent.get("amount_received"), _currency(intent))
    if status == "requires_capture":
        facts.append(intent_action("captured" if received else "authorized", intent))
    elif status == "succeeded" and received is not None:
        facts.append(intent_action("captured", intent))
    elif status == "canceled":
        if received:
            facts.append(intent_action("captured", intent))
        facts.append(intent_action("canceled", intent))
    facts.extend(_refund_action(refund) for refund in refunds)
    facts.extend(_dispute_action(dispute) for dispute in disputes)
    named: list[WebhookAction] = []
    for fact in facts:
        if fact is None:
            continue
        if fact.cart_id is None:
            fact = replace(fact, cart_id=cart_id, session_id=fact.session_id or session_id)
        named.append(fact)
    return named


def _ours(metadata: Any) -> tuple[str | None, str | None]:
    """(session_id, cart_id) from an object's metadata, where we wrote them."""
    if not isinstance(metadata, Mapping):
        return None, None
    session_id, cart_id = metadata.get("session_id"), metadata.get("cart_id")
    return (
        session_id if isinstance(session_id, str) and session_id else None,
        cart_id if isinstance(cart_id, str) and cart_id else None,
    )


def _refund_action(refund: Mapping[str, Any]) -> WebhookAction | None:
    if refund.get("object") not in (None, "refund"):
        return None
    refund_id = object_id(refund.get("id"))
    intent_id = object_id(refund.get("payment_intent"))
    meaning = REFUND_MEANINGS.get(str(refund.get("status")))
    if refund_id is None or intent_id is None or meaning is None:
        return None
    currency = refund.get("currency") if isinstance(refund.get("currency"), str) else None
    metadata = refund.get("metadata") if isinstance(refund.get("metadata"), Mapping) else {}
    assert isinstance(metadata, Mapping)
    session_id, cart_id = _ours(metadata)
    provider_key = metadata.get(REFUND_CALL_KEY_METADATA)
    if not isinstance(provider_key, str) or not provider_key:
        # Refunds made before the call key was in the metadata: the Stripe key is
        # "refund:" + our key unless it had to be hashed.
        stripe_key = metadata.get("payments_refund_key")
        provider_key = (
            stripe_key.removeprefix("refund:")
            if isinstance(stripe_key, str)
            and stripe_key.startswith("refund:")
            and not stripe_key.startswith("refund:sha256:")
            else None
        )
    reason = refund.get("reason")
    failure = refund.get("failure_reason")
    return WebhookAction(
        meaning=meaning,
        session_id=session_id,
        cart_id=cart_id,
        provider_reference=intent_id,
        amount=our_amount(refund.get("amount"), currency),
        data={
            "refund_id": refund_id,
            "refund_status": refund.get("status"),
            "provider_key": provider_key,
            "reason": reason if isinstance(reason, str) else None,
            "failure_reason": failure if isinstance(failure, str) else None,
        },
        message=f"refund {refund_id} {refund.get('status')}",
    )


def _charge_refunded_action(charge: Mapping[str, Any]) -> WebhookAction | None:
    """`charge.refunded`: the newest refund of the charge's list, when Stripe sends it.

    Since API version 2022-11-15 the list is not in the event; the `refund.*`
    events then carry every refund (subscribe to them, see the README).
    """
    if charge.get("object") not in (None, "charge"):
        return None
    refunds = charge.get("refunds")
    listed = refunds.get("data") if isinstance(refunds, Mapping) else None
    if not isinstance(listed, list) or not listed or not isinstance(listed[0], Mapping):
        return None
    newest = dict(listed[0])
    newest.setdefault("payment_intent", charge.get("payment_intent"))
    newest.setdefault("currency", charge.get("currency"))
    action = _refund_action(newest)
    if action is None or action.cart_id is not None:
        return action
    # The charge carries the PaymentIntent's metadata (Stripe copies it).
    session_id, cart_id = _ours(charge.get("metadata"))
    if cart_id is None:
        return action
    return replace(action, session_id=session_id, cart_id=cart_id)


def _charge_captured_action(charge: Mapping[str, Any]) -> WebhookAction | None:
    """`charge.captured`: a capture, ours or the dashboard's, with multicapture too.

    `amount_captured` is cumulative, like a succeeded intent's `amount_received`,
    so the aggregate books only what it has not booked yet (see `captured`).
    """
    if charge.get("object") not in (None, "charge"):
        return None
    intent_id = object_id(charge.get("payment_intent"))
    currency = charge.get("currency") if isinstance(charge.get("currency"), str) else None
    amount = our_amount(charge.get("amount_captured"), currency)
    if intent_id is None or amount is None or not charge.get("captured"):
        return None
    session_id, cart_id = _ours(charge.get("metadata"))
    data: dict[str, Any] = {"id": intent_id, "latest_charge": object_id(charge.get("id"))}
    authorized = our_amount(charge.get("amount"), currency)
    if authorized is not None:
        # What was authorized (a partial capture captures less of it): the hold, if
        # this event is the first to tell the payment exists.
        data["amount"] = authorized
    return WebhookAction(
        meaning="captured",
        session_id=session_id,
        cart_id=cart_id,
        provider_reference=intent_id,
        amount=amount,
        data=data,
        message=f"charge {charge.get('id')} captured",
    )


def _dispute_action(dispute: Mapping[str, Any]) -> WebhookAction | None:
    if dispute.get("object") not in (None, "dispute"):
        return None
    dispute_id = object_id(dispute.get("id"))
    intent_id = object_id(dispute.get("payment_intent"))
    provider_status = str(dispute.get("status"))
    status = DISPUTE_STATUSES.get(provider_status)
    if dispute_id is None or intent_id is None or status is None:
        return None
    currency = dispute.get("currency") if isinstance(dispute.get("currency"), str) else None
    evidence = dispute.get("evidence_details")
    due = as_int(evidence.get("due_by")) if isinstance(evidence, Mapping) else None
    reason = dispute.get("reason")
    return WebhookAction(
        meaning="disputed",
        session_id=None,
        cart_id=None,  # disputes carry no metadata of ours: resolved from the intent
        provider_reference=intent_id,
        amount=our_amount(dispute.get("amount"), currency),
        data={
            "dispute_id": dispute_id,
            "status": status,
            "provider_status": provider_status,
            "reason": reason if isinstance(reason, str) and reason else "unknown",
            "evidence_due_by": datetime.fromtimestamp(due, UTC) if due else None,
        },
        message=f"dispute {dispute_id} {provider_status}",
    )
