"""Making provider calls: timeout, retries with backoff, and the status query.

Contract promises 6 and 7: every call carries its idempotency key and is bounded
by a timeout; transient failures are retried in place with exponential backoff
up to a limit (the one retry policy, `service/retry.py`); an unknown outcome
(timeout, lost answer, adapter exception) is not a failure: the provider is asked
what happened before the call is retried with the *same* key, so a retry can
never move money twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from structlog.contextvars import bound_contextvars
from tenacity import AsyncRetrying, RetryCallState

from service.domain.calls import Ask, ProviderCall
from service.domain.outcomes import OutcomeKind, ProviderOutcome
from service.ports.providers import InstalledProviders, PaymentProvider, operation_method
from service.retry import call_backoff, retry_on_types, retrying
from service.settings import Settings

if TYPE_CHECKING:
    from service.domain.backoff import Backoff

log = logging.getLogger(__name__)

CallObserver = Callable[[ProviderCall, ProviderOutcome, float, str], None]
"""(call, outcome, seconds, method): method is the provider method actually called —
the call's operation, or `get_status` for the status query made on its behalf."""


LEASE_MARGIN_S = 30.0


def _setting_default(name: str) -> Any:
    """A default is declared once, in `Settings`; a policy built without it agrees."""
    return Settings.model_fields[name].default


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Provider calls: a timeout per call, a limit on attempts, and the waits between
    them (`PAYMENTS_PROVIDER_TIMEOUT_S`, `_PROVIDER_MAX_ATTEMPTS`,
    `_RETRY_BASE_DELAY_S`, `_RETRY_MAX_DELAY_S`; :meth:`from_settings`)."""

    timeout_s: float = _setting_default("provider_timeout_s")
    max_attempts: int = _setting_default("provider_max_attempts")
    base_delay_s: float = _setting_default("retry_base_delay_s")
    max_delay_s: float = _setting_default("retry_max_delay_s")

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(
            timeout_s=settings.provider_timeout_s,
            max_attempts=settings.provider_max_attempts,
            base_delay_s=settings.retry_base_delay_s,
            max_delay_s=settings.retry_max_delay_s,
        )

    @property
    def backoff(self) -> Backoff:
        return call_backoff(self.base_delay_s, self.max_delay_s)

    def call_bound_s(self) -> float:
        """The longest a call through :class:`ProviderCaller` can take: every attempt
        with a status query after it, the final status query, and the longest
        waits between attempts. (A status query alone, asked again at most
        `max_attempts` times, takes less.)"""
        return self.timeout_s * (2 * self.max_attempts + 1) + self.backoff.total_s(
            self.max_attempts - 1
        )

    def lease_s(self, calls: int = 1) -> float:
        """How long a handler owns an operation whose `calls` provider calls it makes.

        Twice their bound plus 30 s for the store writes around them, so that a
        handler slowed down by load is not taken for dead: the reconciler takes
        the operation over only then (a handler that finishes releases it at once).
        """
        return 2 * calls * self.call_bound_s() + LEASE_MARGIN_S


class _TryAgain(Exception):
    """An answer worth asking again for (a transient error, an unknown outcome):
    raised inside an attempt so that the retry loop decides, carrying the answer."""

    def __init__(self, outcome: ProviderOutcome) -> None:
        super().__init__(outcome.message)
        self.outcome = outcome


class ProviderCaller:
    """Runs :class:`ProviderCall`s against the registry's providers."""

    def __init__(
        self,
        policy: RetryPolicy,
        *,
        observe: CallObserver | None = None,
        on_retry: Callable[[ProviderCall, ProviderOutcome], None] | None = None,
    ) -> None:
        self.policy = policy
        self._observe = observe
        self._on_retry = on_retry

    async def _once(
        self, call: ProviderCall, method: Callable[[ProviderCall], Awaitable[ProviderOutcome]]
    ) -> ProviderOutcome:
        started = time.perf_counter()
        try:
            outcome = await asyncio.wait_for(method(call), self.policy.timeout_s)
        except TimeoutError:
            outcome = ProviderOutcome.unknown(
                f"{call.operation} timed out after {self.policy.timeout_s:g}s"
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # an adapter bug or a broken connection
            log.warning("provider %s %s raised", call.provider_id, call.operation, exc_info=True)
            outcome = ProviderOutcome.unknown(
                f"{call.operation} raised {type(exc).__name__}: {exc}"
            )
        if self._observe is not None:
            method_name = getattr(method, "__name__", call.operation)
            self._observe(call, outcome, time.perf_counter() - started, method_name)
        return outcome

    def _retrying(
        self, before_sleep: Callable[[RetryCallState], None] | None = None
    ) -> AsyncRetrying:
        return retrying(
            self.policy.backoff,
            retry_on_types(_TryAgain),
            attempts=self.policy.max_attempts,
            before_sleep=before_sleep,
        )

    async def call(self, provider: PaymentProvider, call: ProviderCall) -> ProviderOutcome:
        """Make `call`: the first attempt as it is (most calls are answered at once: no
        retry machinery for them), then the retry loop for what is worth another."""
        method = operation_method(provider, call.operation)
        first = await self._once(call, method)
        if first.kind not in (OutcomeKind.TRANSIENT, OutcomeKind.UNKNOWN):
            return first
        return await self._again(provider, call, method, first)

    async def _again(
        self,
        provider: PaymentProvider,
        call: ProviderCall,
        method: Callable[[ProviderCall], Awaitable[ProviderOutcome]],
        first: ProviderOutcome,
    ) -> ProviderOutcome:
        """After a first attempt that was not answered for good: the status query for an
        unknown outcome, then retries under the same key within the policy."""

        def before_retry(state: RetryCallState) -> None:
            if self._on_retry is not None and state.outcome is not None:
                tried = state.outcome.exception()
                assert isinstance(tried, _TryAgain)
                self._on_retry(call, tried.outcome)

        outcome = first
        unknown: ProviderOutcome | None = None
        pending: ProviderOutcome | None = first
        try:
            async for attempt in self._retrying(before_retry):
                with attempt:
                    if pending is not None:
                        outcome, pending = pending, None  # the first attempt's answer
                    else:
                        outcome = await self._once(call, method)
                    if outcome.kind == OutcomeKind.UNKNOWN and call.moves_money:
                        unknown = outcome
                        status = await self._once(call, provider.get_status)
                        if status.kind not in (OutcomeKind.UNKNOWN, OutcomeKind.TRANSIENT):
                            return status
                    if outcome.kind in (OutcomeKind.TRANSIENT, OutcomeKind.UNKNOWN):
                        raise _TryAgain(outcome)
                    return outcome
        except _TryAgain as last:  # the attempts are used up
            outcome = last.outcome
        if call.moves_money and outcome.kind == OutcomeKind.TRANSIENT:
            # Someone else may have made the call under the same key meanwhile (the
            # reconciler, another instance after a rebalance): ask before failing.
            status = await self._once(call, provider.get_status)
            if status.kind not in (OutcomeKind.UNKNOWN, OutcomeKind.TRANSIENT):
                return status
        if unknown is not None and outcome.kind == OutcomeKind.TRANSIENT:
            # An earlier attempt may have moved money and nothing since told us
            # otherwise: a transient error on a retry says nothing about it.
            # Reporting it as failed would invite a retry under a new key (a
            # second charge); unknown leaves it to the reconciler.
            return ProviderOutcome.unknown(
                f"{unknown.message}; retries failed transiently: {outcome.message}"
            )
        return outcome

    async def ask_status(self, provider: PaymentProvider, call: ProviderCall) -> ProviderOutcome:
        """A status query (the reconciler's question), asked again while the provider
        refuses it for a moment (a transient error, not "not found", which is an
        answer). A timeout is not asked again: the provider may be down, and the
        reconciler's pass must not wait on it for every collection; the next pass asks.
        """
        try:
            async for attempt in self._retrying():
                with attempt:
                    outcome = await self._once(call, provider.get_status)
                    if outcome.kind == OutcomeKind.TRANSIENT and not outcome.is_not_found:
                        raise _TryAgain(outcome)
                    return outcome
        except _TryAgain as last:  # the attempts are used up
            return last.outcome
        raise AssertionError("unreachable: the retry loop returns or raises")


class ProviderAccess:
    """Puts a decision's questions to the installed providers (the unit of work's `ask`).

    A call is made through :meth:`ProviderCaller.call` (timeout, retries, the status
    query after an unknown outcome), a status query through
    :meth:`ProviderCaller.ask_status`; a resumed call asks first (:meth:`resume`).
    """

    def __init__(self, providers: InstalledProviders, caller: ProviderCaller) -> None:
        self.providers = providers
        self.caller = caller

    async def __call__(self, ask: Ask) -> ProviderOutcome:
        call = ask.call
        provider = self.providers.get(call.provider_id)
        if provider is None:
            missing = f"provider {call.provider_id!r} is not installed"
            # A call fails; a question gets no answer, so it is asked again once the
            # provider is back.
            return (
                ProviderOutcome.failed(missing)
                if ask.how == "call"
                else ProviderOutcome.unknown(missing)
            )
        if ask.how == "status":
            return await self.caller.ask_status(provider, call)
        # Log lines of the call (retries, adapter errors) say which provider and payment.
        with bound_contextvars(
            provider=call.provider_id,
            cart_id=call.cart_id,
            **({"payment_id": call.payment_id} if call.payment_id else {}),
        ):
            if ask.how == "resume":
                return await self.resume(provider, call)
            return await self.caller.call(provider, call)

    async def resume(self, provider: PaymentProvider, call: ProviderCall) -> ProviderOutcome:
        """The call of a reservation an earlier delivery stored and never settled (it
        crashed): the money may have moved, maybe longer ago than the provider's
        idempotency window. Status first; the call is made again only when the
        provider says it never happened (as the reconciler does)."""
        status = await self.caller.ask_status(provider, call)
        if not status.is_not_found:
            if status.kind in (OutcomeKind.TRANSIENT, OutcomeKind.UNKNOWN, OutcomeKind.PENDING):
                return ProviderOutcome.unknown(f"resumed call: status unknown: {status.message}")
            return status
        answer = await self.caller.call(provider, call)
        if answer.kind == OutcomeKind.TRANSIENT:
            # A transient error is no failure here either: the reconciler settles it.
            return ProviderOutcome.unknown(f"resumed call: {answer.message}")
        return answer
