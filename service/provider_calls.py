"""Making provider calls: timeout, retries with backoff, and the status query.

Contract promises 6 and 7: every call carries its idempotency key and is bounded
by a timeout; transient failures are retried in place with exponential backoff
up to a limit; an unknown outcome (timeout, lost answer, adapter exception) is
not a failure: the provider is asked what happened before the call is retried
with the *same* key, so a retry can never move money twice.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from service.domain.calls import ProviderCall
from service.domain.outcomes import OutcomeKind, ProviderOutcome
from service.ports.providers import PaymentProvider

log = logging.getLogger(__name__)

CallObserver = Callable[[ProviderCall, ProviderOutcome, float, str], None]
"""(call, outcome, seconds, method): method is the provider method actually called —
the call's operation, or `get_status` for the status query made on its behalf."""


LEASE_MARGIN_S = 30.0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    timeout_s: float = 10.0
    max_attempts: int = 4
    base_delay_s: float = 0.05
    max_delay_s: float = 2.0

    def call_bound_s(self) -> float:
        """The longest a call through :class:`ProviderCaller` can take: every attempt
        with a status query after it, the final status query, and the backoff
        between attempts."""
        backoff = sum(
            (
                min(self.max_delay_s, self.base_delay_s * 2.0 ** (attempt - 1))
                for attempt in range(1, self.max_attempts)
            ),
            0.0,
        )
        return self.timeout_s * (2 * self.max_attempts + 1) + backoff

    def lease_s(self, calls: int = 1) -> float:
        """How long a handler owns an operation whose `calls` provider calls it makes.

        Twice their bound plus 30 s for the store writes around them, so that a
        handler slowed down by load is not taken for dead: the reconciler takes
        the operation over only then (a handler that finishes releases it at once).
        """
        return 2 * calls * self.call_bound_s() + LEASE_MARGIN_S

    def delay(self, attempt: int) -> float:
        """Exponential backoff with full jitter (attempt counts from 1)."""
        ceiling = min(self.max_delay_s, self.base_delay_s * (2 ** (attempt - 1)))
        return random.uniform(ceiling / 2, ceiling)


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

    async def call(self, provider: PaymentProvider, call: ProviderCall) -> ProviderOutcome:
        method: Callable[[ProviderCall], Awaitable[ProviderOutcome]] = getattr(
            provider, call.operation
        )
        outcome = ProviderOutcome.transient("not attempted")
        unknown: ProviderOutcome | None = None
        for attempt in range(1, self.policy.max_attempts + 1):
            outcome = await self._once(call, method)
            if outcome.kind == OutcomeKind.UNKNOWN and call.moves_money:
                unknown = outcome
                status = await self._once(call, provider.get_status)
                if status.kind not in (OutcomeKind.UNKNOWN, OutcomeKind.TRANSIENT):
                    return status
            if outcome.kind not in (OutcomeKind.TRANSIENT, OutcomeKind.UNKNOWN):
                return outcome
            if attempt < self.policy.max_attempts:
                if self._on_retry is not None:
                    self._on_retry(call, outcome)
                await asyncio.sleep(self.policy.delay(attempt))
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
        outcome = await self._once(call, provider.get_status)
        for attempt in range(1, self.policy.max_attempts):
            if outcome.kind != OutcomeKind.TRANSIENT or outcome.is_not_found:
                break
            await asyncio.sleep(self.policy.delay(attempt))
            outcome = await self._once(call, provider.get_status)
        return outcome
