"""The `sandbox` provider: deterministic, after Stripe's test payment methods.

It stands in for a real provider in development, tests and benchmarks, so it
reproduces the behaviour the service must cope with — declines, 3-D Secure,
transient errors, lost answers, idempotency keys — without calling anything
outside the service's own database (contract section 7).

Storage, in the service's database:

* ``sandbox_ledger``: one document per *effective* provider-side operation, with
  ``_id = "<operation>:<idempotency key>"``. The ledger is the provider's memory of
  what it did, the source of its idempotency, and what tests count to prove
  nothing was charged twice. It is only ever written with ``insert_one``: the
  unique ``_id`` makes concurrent duplicates collapse into one document without
  upserts or transactions, which the embedded nx-27017 server does not all support.
* ``sandbox_state``: everything that is not a charge — idempotency-key claims of
  authorizations, `pm_card_flaky` call counters, pending 3-D Secure challenges.
  Kept apart so that counting ledger documents stays a count of charges.

One command per operation in the common case (issue 15): a capture, refund or
cancel is one ``insert_one`` of its ledger entry, read back only on a duplicate
key (a repeated call); its entry carries the request's parameters, so it is its
own idempotency-key claim. An authorization is its key's claim, then its ledger
entry; what an earlier use of the key left (an entry, an open challenge) is read
only when the claim says the key was used before.

Money is integers, ids are strings and booleans are only written by inserts:
nx-27017 rejects Decimal128 and turns booleans written by ``$set`` into 0/1.

Provider objects (issue 22): each authorization record is its own object, named by
a stable id derived from its key (``sbx_au_…``: the `reference` of its outcomes, and
``authorization_id`` in its data, so a payment's calls carry it); captures and
cancels name the authorization of the call's data (and record it); a refund is
named by its record's id (``sbx_re_…``). :meth:`SandboxProvider.read_objects` reads
them back from the ledger for the audit. Capabilities are the lenient default
(several captures, nothing pending, keys remembered for ever).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial
from typing import Annotated, Any, Final, Literal

from pydantic import Field
from pymongo import ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from service.adapters.driver_errors import provider_errors
from service.domain.calls import ProviderCall
from service.domain.capabilities import LENIENT, Capabilities
from service.domain.outcomes import OutcomeKind, ProviderOutcome
from service.ports.providers import (
    PaymentProvider,
    SavedPaymentMethod,
    WebhookAction,
    WebhookVerificationError,
)

from .options import ProviderOptions

SANDBOX_PROVIDER_ID: Final = "sandbox"
LEDGER_COLLECTION: Final = "sandbox_ledger"
STATE_COLLECTION: Final = "sandbox_state"

PM_VISA: Final = "pm_card_visa"
PM_DECLINED: Final = "pm_card_chargeDeclined"
PM_AUTHENTICATION_REQUIRED: Final = "pm_card_authenticationRequired"
PM_PROVIDER_ERROR: Final = "pm_card_providerError"
PM_FLAKY: Final = "pm_card_flaky"
PM_LOST_RESPONSE: Final = "pm_card_lostResponse"
PAYMENT_METHODS: Final = (
    PM_VISA,
    PM_DECLINED,
    PM_AUTHENTICATION_REQUIRED,
    PM_PROVIDER_ERROR,
    PM_FLAKY,
    PM_LOST_RESPONSE,
)

FLAKY_FAILURES: Final = 2
"""`pm_card_flaky` answers transient this many times per idempotency key."""

IDEMPOTENCY_KEY_REUSE: Final = "idempotency_key_reuse"
NO_RECORD_MESSAGE: Final = "no record of this operation; safe to retry"

LedgerOperation = Literal["authorize", "capture", "refund", "cancel"]
LEDGER_OPERATIONS: Final[tuple[LedgerOperation, ...]] = ("authorize", "capture", "refund", "cancel")

# What must match when an idempotency key is used again, per operation, as Stripe
# compares a repeated request's parameters with the first one's.
_FINGERPRINT: Final[dict[str, tuple[str, ...]]] = {
    "authorize": ("session_id", "amount", "currency_code"),
    "capture": ("session_id", "payment_id", "amount", "currency_code"),
    "refund": ("session_id", "payment_id", "amount", "currency_code"),
    "cancel": ("session_id", "payment_id"),
}

# A lost answer only makes sense where the provider may have acted.
_LOSABLE: Final = frozenset({"authorize", "capture", "refund"})
_ACTED: Final = frozenset({OutcomeKind.SUCCEEDED, OutcomeKind.DECLINED, OutcomeKind.REQUIRES_MORE})


def _now() -> datetime:
    return datetime.now(UTC)


def _recorded_order(document: Mapping[str, Any]) -> tuple[float, str]:
    """When a ledger document was written (naive datetimes are the driver's UTC)."""
    created = document.get("created_at")
    if not isinstance(created, datetime):
        return (0.0, str(document.get("_id")))
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    return (created.timestamp(), str(document.get("_id")))


def _reference(prefix: str, *parts: str) -> str:
    # Stable provider-side ids make replays return byte-identical data.
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:24]
    return f"{prefix}_{digest}"


def _ledger_id(operation: str, key: str) -> str:
    return f"{operation}:{key}"


def authorization_reference(key: str) -> str:
    """The sandbox's id of the authorization made under `key` (stable: its outcomes,
    replays and status answers all name it)."""
    return _reference("sbx_au", key)


AUTHORIZATION_ID: Final = "authorization_id"
"""Where an authorization's data names it, so the payment's calls carry its id."""


def _named(outcome: ProviderOutcome, reference: str) -> ProviderOutcome:
    return replace(outcome, reference=reference)


def three_ds_url(session_id: str) -> str:
    return f"https://sandbox.invalid/3ds/{session_id}"


Rate = Annotated[float, Field(ge=0.0, le=1.0)]


class SandboxOptions(ProviderOptions):
    """``PAYMENTS_PROVIDER_OPTIONS["sandbox"]``."""

    provider_id = SANDBOX_PROVIDER_ID

    capture: bool = False
    """Capture on authorization."""
    fail_rate: Rate = 0.0
    """Chance of a transient error before acting."""
    lose_rate: Rate = 0.0
    """Chance that authorize/capture/refund acts but answers ``unknown``, as if the
    response were lost."""
    delay_s: Annotated[float, Field(ge=0.0)] = 0.0
    """Latency added before every answer — after acting, so a caller's timeout leaves
    an effect behind exactly like a slow real provider."""
    seed: int | None = None
    """Makes the fault draws reproducible."""


class SandboxProvider(PaymentProvider):
    """Deterministic provider keyed on ``payment_data.payment_method`` (see module doc).

    Options: :class:`SandboxOptions`.
    """

    def __init__(
        self,
        database: AsyncDatabase[dict[str, Any]],
        options: SandboxOptions | Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(options, SandboxOptions):
            options = SandboxOptions.parse(options)
        self.id: str = SANDBOX_PROVIDER_ID
        self.capture_on_authorize: bool = options.capture
        self.capabilities: Capabilities = LENIENT
        self.fail_rate = options.fail_rate
        self.lose_rate = options.lose_rate
        self.delay_s = options.delay_s
        self._random = random.Random(options.seed)
        self.ledger: AsyncCollection[dict[str, Any]] = database[LEDGER_COLLECTION]
        self.state: AsyncCollection[dict[str, Any]] = database[STATE_COLLECTION]

    # -- fault injection ---------------------------------------------------------

    def _draw(self, rate: float) -> bool:
        # No draw at rate 0 keeps the default configuration free of randomness.
        return rate > 0 and self._random.random() < rate

    async def _answer(
        self,
        operation: str,
        act: Callable[[], Awaitable[ProviderOutcome]],
    ) -> ProviderOutcome:
        if self._draw(self.fail_rate):
            outcome = ProviderOutcome.transient("sandbox: injected transient error")
        else:
            outcome = await act()
            if operation in _LOSABLE and outcome.kind in _ACTED and self._draw(self.lose_rate):
                outcome = ProviderOutcome.unknown("sandbox: injected lost response (timed out)")
        if self.delay_s > 0:
            await asyncio.sleep(self.delay_s)
        return outcome

    # -- session calls (no provider-side effect, nothing to record) -----------------

    @provider_errors
    async def initiate(self, call: ProviderCall) -> ProviderOutcome:
        async def act() -> ProviderOutcome:
            return ProviderOutcome.succeeded(
                {
                    "id": _reference("sbx_pi", call.session_id),
                    "status": "requires_payment_method",
                    "amount": call.amount,
                    "currency_code": call.currency_code,
                }
            )

        return await self._answer("initiate", act)

    @provider_errors
    async def update(self, call: ProviderCall) -> ProviderOutcome:
        async def act() -> ProviderOutcome:
            return ProviderOutcome.succeeded(
                {**call.data, "amount": call.amount, "currency_code": call.currency_code}
            )

        return await self._answer("update", act)

    @provider_errors
    async def update_data(self, call: ProviderCall) -> ProviderOutcome:
        async def act() -> ProviderOutcome:
            # Kept on the session, so a `payment_method` given with `cart.updated`
            # applies to a later checkout that carries no payment data of its own.
            return ProviderOutcome.succeeded({**call.data, **call.payment_data})

        return await self._answer("update_data", act)

    @provider_errors
    async def delete(self, call: ProviderCall) -> ProviderOutcome:
        return await self._answer("delete", self._empty_success)

    @provider_errors
    async def retrieve(self, call: ProviderCall) -> ProviderOutcome:
        async def act() -> ProviderOutcome:
            return ProviderOutcome.succeeded(dict(call.data))

        return await self._answer("retrieve", act)

    @provider_errors
    async def payment_data(self, call: ProviderCall) -> dict[str, Any]:
        return dict(call.data)

    @provider_errors
    async def list_payment_methods(self, customer_id: str) -> list[SavedPaymentMethod]:
        return []

    @staticmethod
    async def _empty_success() -> ProviderOutcome:
        return ProviderOutcome.succeeded({})

    # -- authorize -------------------------------------------------------------------

    @provider_errors
    async def authorize(self, call: ProviderCall) -> ProviderOutcome:
        return await self._answer("authorize", lambda: self._authorize(call))

    async def _authorize(self, call: ProviderCall) -> ProviderOutcome:
        key = call.idempotency_key
        first_use, conflict = await self._claim_key("authorize", call)
        if conflict is not None:
            # A ledger entry would say the same: it was written under this claim.
            return conflict
        if not first_use:
            # Only a key used before can have left an entry or an open challenge
            # (both are written after the claim).
            recorded = await self.ledger.find_one({"_id": _ledger_id("authorize", key)})
            if recorded is not None:
                return await self._replay_authorization(call, recorded)
            pending = await self.state.find_one({"_id": self._three_ds_id(key)})
            if pending is not None:
                # The method was fixed by the first attempt; the re-try may carry
                # only the challenge's result.
                return await self._authorize_three_ds(call, pending)

        payment_method = call.payment_data.get("payment_method", call.data.get("payment_method"))
        if payment_method is None or payment_method == PM_VISA:
            return await self._authorize_approved(call, PM_VISA)
        if payment_method == PM_DECLINED:
            return await self._record_decline(
                call, PM_DECLINED, "Your card was declined.", "card_declined"
            )
        if payment_method == PM_AUTHENTICATION_REQUIRED:
            return await self._authorize_three_ds(call, None)
        if payment_method == PM_PROVIDER_ERROR:
            return ProviderOutcome.transient("sandbox: provider error (pm_card_providerError)")
        if payment_method == PM_FLAKY:
            calls = await self._count_call("authorize", key)
            if calls <= FLAKY_FAILURES:
                return ProviderOutcome.transient(
                    f"sandbox: transient error {calls} of {FLAKY_FAILURES} (pm_card_flaky)"
                )
            return await self._authorize_approved(call, PM_FLAKY)
        if payment_method == PM_LOST_RESPONSE:
            document, inserted = await self._record_authorization(
                call, PM_LOST_RESPONSE, "authorized"
            )
            if not inserted:
                # A concurrent attempt acted first; this one sees the ledger like a
                # later re-try would.
                return await self._replay_authorization(call, document)
            return ProviderOutcome.unknown(
                "sandbox: authorized but the response was lost (timed out)"
            )
        return ProviderOutcome.invalid_data(
            f"unknown sandbox payment_method {payment_method!r}; "
            f"use one of {', '.join(PAYMENT_METHODS)}"
        )

    async def _authorize_approved(self, call: ProviderCall, payment_method: str) -> ProviderOutcome:
        document, _ = await self._record_authorization(call, payment_method, "authorized")
        return await self._replay_authorization(call, document)

    async def _record_decline(
        self, call: ProviderCall, payment_method: str, message: str, code: str
    ) -> ProviderOutcome:
        # Declines are recorded too: re-sending a declined key must not turn it into
        # a charge, as with a real provider.
        document, _ = await self._record_authorization(
            call, payment_method, "declined", message=message, code=code
        )
        return await self._replay_authorization(call, document)

    async def _authorize_three_ds(
        self, call: ProviderCall, pending: dict[str, Any] | None
    ) -> ProviderOutcome:
        action = {"type": "redirect_to_url", "url": three_ds_url(call.session_id)}
        result = call.payment_data.get("action_result")
        if result is None:
            if pending is None:
                # A concurrent attempt may have opened the same challenge already.
                with contextlib.suppress(DuplicateKeyError):
                    await self.state.insert_one(
                        {
                            "_id": self._three_ds_id(call.idempotency_key),
                            "kind": "three_ds",
                            "idempotency_key": call.idempotency_key,
                            "session_id": call.session_id,
                            "action": action,
                            "created_at": _now(),
                        }
                    )
            return _named(
                ProviderOutcome.requires_more(
                    action,
                    {
                        "id": _reference("sbx_pi", call.session_id),
                        "status": "requires_action",
                        "payment_method": PM_AUTHENTICATION_REQUIRED,
                    },
                ),
                authorization_reference(call.idempotency_key),
            )
        if result == "succeeded":
            outcome = await self._authorize_approved(call, PM_AUTHENTICATION_REQUIRED)
        elif result == "failed":
            outcome = await self._record_decline(
                call,
                PM_AUTHENTICATION_REQUIRED,
                "The cardholder failed 3-D Secure authentication.",
                "authentication_failed",
            )
        else:
            return ProviderOutcome.invalid_data(
                f"unknown sandbox action_result {result!r}; use 'succeeded' or 'failed'"
            )
        # Only tidiness: the ledger entry now answers for this key.
        await self.state.delete_one({"_id": self._three_ds_id(call.idempotency_key)})
        return outcome

    async def _record_authorization(
        self,
        call: ProviderCall,
        payment_method: str,
        outcome: Literal["authorized", "declined"],
        *,
        message: str = "",
        code: str | None = None,
    ) -> tuple[dict[str, Any], bool]:
        captured = outcome == "authorized" and self.capture_on_authorize
        data: dict[str, Any] = {}
        if outcome == "authorized":
            data = {
                "id": _reference("sbx_pi", call.session_id),
                AUTHORIZATION_ID: authorization_reference(call.idempotency_key),
                "status": "captured" if captured else "authorized",
                "payment_method": payment_method,
                "amount": call.amount,
                "currency_code": call.currency_code,
            }
        return await self._insert_ledger(
            "authorize",
            call,
            outcome,
            data=data,
            extra={
                "payment_method": payment_method,
                "captured": captured,
                "message": message,
                "code": code,
            },
        )

    async def _replay_authorization(
        self, call: ProviderCall, document: dict[str, Any]
    ) -> ProviderOutcome:
        conflict = self._mismatch("authorize", call, document)
        if conflict is not None:
            return conflict
        reference = authorization_reference(document["idempotency_key"])
        if document["outcome"] == "declined":
            return _named(
                ProviderOutcome.declined(document.get("message", ""), document.get("code")),
                reference,
            )
        captured = bool(document.get("captured"))
        if captured:
            # Also on replays: the process may have stopped between the two inserts.
            await self._ensure_auto_capture(document)
        # Records written before authorizations were named get their name on replay.
        data = {**(document.get("data") or {}), AUTHORIZATION_ID: reference}
        return ProviderOutcome.succeeded(
            data, captured=captured, amount=document["amount"], reference=reference
        )

    async def _ensure_auto_capture(self, authorization: dict[str, Any]) -> None:
        with contextlib.suppress(DuplicateKeyError):
            await self.ledger.insert_one(
                {
                    "_id": _ledger_id("capture", authorization["idempotency_key"]),
                    "operation": "capture",
                    "idempotency_key": authorization["idempotency_key"],
                    "session_id": authorization["session_id"],
                    "payment_id": None,
                    "cart_id": authorization.get("cart_id"),
                    "amount": authorization["amount"],
                    "currency_code": authorization["currency_code"],
                    "outcome": "captured",
                    "auto": True,
                    AUTHORIZATION_ID: authorization_reference(authorization["idempotency_key"]),
                    "data": {"id": _reference("sbx_ch", "auto", authorization["idempotency_key"])},
                    "created_at": _now(),
                }
            )

    # -- capture, refund, cancel ---------------------------------------------------

    @provider_errors
    async def capture(self, call: ProviderCall) -> ProviderOutcome:
        return await self._answer("capture", lambda: self._bookkeeping("capture", call, "captured"))

    @provider_errors
    async def refund(self, call: ProviderCall) -> ProviderOutcome:
        return await self._answer("refund", lambda: self._bookkeeping("refund", call, "refunded"))

    @provider_errors
    async def cancel(self, call: ProviderCall) -> ProviderOutcome:
        return await self._answer("cancel", lambda: self._bookkeeping("cancel", call, "canceled"))

    async def _bookkeeping(
        self,
        operation: LedgerOperation,
        call: ProviderCall,
        outcome: Literal["captured", "refunded", "canceled"],
    ) -> ProviderOutcome:
        # The payment method is not known here (as with Stripe, it belongs to the
        # authorization), so these always succeed; only idempotency matters. One
        # insert: nothing is written under such a key before its entry, so the
        # entry is the key's claim, and a repeated call reads it back and is
        # answered (or refused, other parameters) from it.
        prefix = {"capture": "sbx_ch", "refund": "sbx_re", "cancel": "sbx_cn"}[operation]
        extra: dict[str, Any] = {"reason": call.reason} if call.reason is not None else {}
        authorization = call.data.get(AUTHORIZATION_ID)
        if isinstance(authorization, str):
            # What the operation is on, for the audit (read_objects).
            extra[AUTHORIZATION_ID] = authorization
        recorded, _ = await self._insert_ledger(
            operation,
            call,
            outcome,
            data={
                "id": _reference(prefix, call.idempotency_key),
                "status": outcome,
                "amount": call.amount,
            },
            extra=extra,
        )
        return self._ledger_outcome(operation, call, recorded)

    # -- status ----------------------------------------------------------------------

    @provider_errors
    async def get_status(self, call: ProviderCall) -> ProviderOutcome:
        """What became of `call`, looked up by its operation and idempotency key.

        * a ledger entry → what it records: ``succeeded`` for authorized, captured,
          refunded and canceled (with ``captured`` for an authorization that also
          captured), ``declined`` for a decline;
        * an open 3-D Secure challenge → ``requires_more`` with its action;
        * nothing recorded → ``transient``: the sandbox never acted on this key, so
          the caller may safely re-send the original call under the same key (a
          ``transient`` answer never claims money moved and is never final).

        Session calls (initiate, update…) have no provider-side effect and so are
        never recorded: they too answer ``transient``, which is the right advice
        for calls that are safe to repeat.
        """

        async def act() -> ProviderOutcome:
            if call.operation not in LEDGER_OPERATIONS:
                return ProviderOutcome.not_found(NO_RECORD_MESSAGE)
            recorded = await self.ledger.find_one(
                {"_id": _ledger_id(call.operation, call.idempotency_key)}
            )
            if recorded is not None:
                if call.operation == "authorize":
                    return await self._replay_authorization(call, recorded)
                return self._ledger_outcome(call.operation, call, recorded)
            if call.operation == "authorize":
                pending = await self.state.find_one(
                    {"_id": self._three_ds_id(call.idempotency_key)}
                )
                if pending is not None:
                    return _named(
                        ProviderOutcome.requires_more(
                            dict(pending["action"]),
                            {
                                "id": _reference("sbx_pi", pending["session_id"]),
                                "status": "requires_action",
                                "payment_method": PM_AUTHENTICATION_REQUIRED,
                            },
                        ),
                        authorization_reference(call.idempotency_key),
                    )
            return ProviderOutcome.not_found(NO_RECORD_MESSAGE)

        return await self._answer("get_status", act)

    # -- the audit ---------------------------------------------------------------------

    @provider_errors
    async def read_objects(self, call: ProviderCall) -> list[WebhookAction]:
        """The session's authorizations and refunds as the ledger holds them, as facts
        for the audit (`event_id` None):

        * each authorization: `authorized` (nothing captured yet), `captured` (all
          captured on it so far, with what is left `capturable`), `canceled` (after a
          `captured` fact when something was captured before the cancel);
        * each refund: `refund_succeeded` (the sandbox's refunds never pend), with its
          id and our key.

        Captures, refunds and cancels recorded without the authorization they were on
        (before authorizations were named) count for the payment's: the one the call's
        data names, else the session's latest.
        """
        documents = [
            document
            async for document in self.ledger.find(
                {"session_id": call.session_id, "cart_id": call.cart_id}
            )
        ]
        documents.sort(key=_recorded_order)
        authorizations = {
            authorization_reference(document["idempotency_key"]): document
            for document in documents
            if document.get("operation") == "authorize" and document.get("outcome") == "authorized"
        }
        named = call.data.get(AUTHORIZATION_ID)
        payment = named if named in authorizations else next(reversed(authorizations), None)

        def owner(document: Mapping[str, Any]) -> str | None:
            reference = document.get(AUTHORIZATION_ID)
            if isinstance(reference, str) and reference in authorizations:
                return reference
            if document.get("auto"):  # the capture made with its authorization
                return authorization_reference(document["idempotency_key"])
            return payment

        captured: dict[str | None, int] = {}
        canceled: set[str | None] = set()
        refunds: list[WebhookAction] = []
        for document in documents:
            operation = document.get("operation")
            if operation == "capture":
                reference = owner(document)
                captured[reference] = captured.get(reference, 0) + int(document["amount"])
            elif operation == "cancel":
                canceled.add(owner(document))
            elif operation == "refund":
                refunds.append(self._refund_fact(call, document, owner(document)))
        facts: list[WebhookAction] = []
        for reference, authorization in authorizations.items():
            held = int(authorization["amount"])
            got = captured.get(reference, 0)
            ended = reference in canceled
            fact = partial(
                WebhookAction,
                session_id=call.session_id,
                cart_id=call.cart_id,
                provider_reference=reference,
                data={**(authorization.get("data") or {}), AUTHORIZATION_ID: reference},
            )
            if got:
                left = 0 if ended else max(held - got, 0)
                facts.append(fact(meaning="captured", amount=got, capturable=left))
            if ended:
                facts.append(fact(meaning="canceled", capturable=0))
            elif not got:
                facts.append(fact(meaning="authorized", amount=held, capturable=held))
        return facts + refunds

    @staticmethod
    def _refund_fact(
        call: ProviderCall, document: Mapping[str, Any], authorization: str | None
    ) -> WebhookAction:
        data = document.get("data") or {}
        return WebhookAction(
            meaning="refund_succeeded",
            session_id=call.session_id,
            cart_id=call.cart_id,
            provider_reference=authorization or "",
            amount=int(document["amount"]),
            data={
                "refund_id": data.get("id"),
                "refund_status": "succeeded",
                "provider_key": document.get("idempotency_key"),
                "reason": document.get("reason"),
                "failure_reason": None,
            },
            message=f"refund {data.get('id')} succeeded",
        )

    # -- webhooks ----------------------------------------------------------------------

    def verify_webhook(self, headers: Mapping[str, str], body: bytes, now: datetime) -> None:
        # The sandbox sends no webhooks, so any request claiming to come from it is forged.
        raise WebhookVerificationError("the sandbox provider has no webhooks")

    def interpret_webhook(self, headers: Mapping[str, str], payload: str) -> WebhookAction | None:
        return None

    async def close(self) -> None:
        # The database belongs to the service, which closes its client.
        return None

    # -- storage helpers -----------------------------------------------------------------

    @staticmethod
    def _three_ds_id(key: str) -> str:
        return f"three_ds:authorize:{key}"

    def _ledger_outcome(
        self, operation: str, call: ProviderCall, document: dict[str, Any]
    ) -> ProviderOutcome:
        conflict = self._mismatch(operation, call, document)
        if conflict is not None:
            return conflict
        data = dict(document.get("data") or {})
        # A refund is its own object; a capture or cancel is about an authorization.
        reference = (
            data.get("id")
            if operation == "refund"
            else document.get(AUTHORIZATION_ID) or call.data.get(AUTHORIZATION_ID)
        )
        return ProviderOutcome.succeeded(
            data,
            amount=document.get("amount"),
            reference=reference if isinstance(reference, str) else None,
        )

    async def _insert_ledger(
        self,
        operation: LedgerOperation,
        call: ProviderCall,
        outcome: str,
        *,
        data: dict[str, Any],
        extra: Mapping[str, Any],
    ) -> tuple[dict[str, Any], bool]:
        """Record an operation once; returns the stored document and whether it is ours.

        On a duplicate `_id` the first writer's document wins and is returned, so
        concurrent identical calls all answer with the same, single charge.
        """
        document: dict[str, Any] = {
            "_id": _ledger_id(operation, call.idempotency_key),
            "operation": operation,
            "idempotency_key": call.idempotency_key,
            "session_id": call.session_id,
            "payment_id": call.payment_id,
            "cart_id": call.cart_id,
            "amount": call.amount,
            "currency_code": call.currency_code,
            "outcome": outcome,
            "data": data,
            "created_at": _now(),
            **extra,
        }
        try:
            await self.ledger.insert_one(document)
        except DuplicateKeyError:
            existing = await self.ledger.find_one({"_id": document["_id"]})
            if existing is None:  # pragma: no cover - ledger entries are never deleted
                raise
            return existing, False
        return document, True

    async def _claim_key(
        self, operation: str, call: ProviderCall
    ) -> tuple[bool, ProviderOutcome | None]:
        """Remember the first request made under a key; refuse a different one later.

        Returns whether this is the key's first use, and the refusal if the key
        was first used with other parameters. Needed besides the ledger for
        authorizations: their key can be used before anything is recorded
        (transient errors, open 3-D Secure challenges).
        """
        claim = {
            "_id": f"key:{operation}:{call.idempotency_key}",
            "kind": "idempotency_key",
            "operation": operation,
            "idempotency_key": call.idempotency_key,
            "session_id": call.session_id,
            "payment_id": call.payment_id,
            "amount": call.amount,
            "currency_code": call.currency_code,
            "created_at": _now(),
        }
        try:
            await self.state.insert_one(claim)
        except DuplicateKeyError:
            existing = await self.state.find_one({"_id": claim["_id"]})
            if existing is not None:
                return False, self._mismatch(operation, call, existing)
            return False, None  # pragma: no cover - claims are never deleted
        return True, None

    @staticmethod
    def _mismatch(
        operation: str, call: ProviderCall, document: Mapping[str, Any]
    ) -> ProviderOutcome | None:
        for name in _FINGERPRINT.get(operation, ("session_id",)):
            if document.get(name) != getattr(call, name):
                return ProviderOutcome.failed(
                    f"Keys for idempotent requests can only be used with the same parameters "
                    f"they were first used with: {operation} key {call.idempotency_key!r} "
                    f"was used with {name} {document.get(name)!r}, not {getattr(call, name)!r}.",
                    code=IDEMPOTENCY_KEY_REUSE,
                )
        return None

    async def _count_call(self, operation: str, key: str) -> int:
        document = await self.state.find_one_and_update(
            {"_id": f"calls:{operation}:{key}"},
            {"$inc": {"calls": 1}},
            upsert=True,
            return_document=ReturnDocument.AFTER,
        )
        return int(document["calls"]) if document is not None else 1
