"""The one retry policy: tenacity runs every loop that waits and tries again.

What is retried, how many times, what happens before each wait, and cancellation
are tenacity's (`AsyncRetrying`, used as ``async for attempt in ...: with attempt:``);
how long each wait is comes from one :class:`~service.domain.backoff.Backoff`.
The loops: provider calls and status queries (`service/provider_calls.py`),
processing retries (`service/consumer.py`) and the start-up reconnect
(`service/entrypoints/app.py`); the pause before a failed batch is re-delivered
(the broker runs that loop) and the reconciler's due times (`service/domain/`)
take their waits from the same formula.

Why tenacity and not stamina (which wraps it): stamina's test mode, on/off switch
and retry instrumentation are process-wide. `stamina.set_testing(True)`, which
stamina recommends for test suites, would change attempt counts here, and so what
the service does: a MongoDB outage would dead-letter messages instead of waiting,
and a provider's transient error would fail a payment at once, in any project
that runs the service in-process through the harness. Its default hooks would
also log a second WARNING line per retry and register a counter in Prometheus'
global registry. Tests here shorten waits the way operators do, through
`PAYMENTS_RETRY_BASE_DELAY_S` / `_MAX_DELAY_S` (0 in unit tests).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_never,
)

from service.domain.backoff import Backoff
from service.settings import Settings


def outage_backoff(initial_s: float, max_delay_s: float) -> Backoff:
    """The broker or MongoDB unreachable (at start-up, or failing a whole batch):
    `PAYMENTS_OUTAGE_RETRY_INITIAL_S`, `PAYMENTS_OUTAGE_RETRY_MAX_DELAY_S`; the waits
    grow to a few seconds, so the service resumes soon after the outage ends."""
    return Backoff(initial_s=initial_s, max_s=max_delay_s)


OUTAGE_BACKOFF = outage_backoff(
    Settings.model_fields["outage_retry_initial_s"].default,
    Settings.model_fields["outage_retry_max_delay_s"].default,
)
"""The outage back-off at the default settings."""


def call_backoff(base_delay_s: float, max_delay_s: float) -> Backoff:
    """Provider calls and processing retries (`PAYMENTS_RETRY_BASE_DELAY_S`,
    `PAYMENTS_RETRY_MAX_DELAY_S`): the first retry waits the base plus up to the
    base again at random, so that calls failed together do not retry together."""
    return Backoff(initial_s=base_delay_s, max_s=max_delay_s, jitter_s=base_delay_s)


def retrying(
    backoff: Backoff,
    retry_on: Callable[[BaseException], bool],
    *,
    attempts: int | None,
    before_sleep: Callable[[RetryCallState], None] | None = None,
) -> AsyncRetrying:
    """Tries (`attempts`, None for no limit) while `retry_on` says an exception is
    worth another; the last one is raised as it is. A cancellation is never retried.
    `before_sleep` runs when a retry is decided, before its wait (`state.upcoming_sleep`).
    """
    return AsyncRetrying(
        stop=stop_never if attempts is None else stop_after_attempt(attempts),
        wait=lambda state: backoff.delay_s(state.attempt_number, random.random()),
        retry=retry_if_exception(lambda exc: isinstance(exc, Exception) and retry_on(exc)),
        before_sleep=before_sleep,
        reraise=True,
    )


def retry_on_types(*types: type[BaseException]) -> Callable[[BaseException], bool]:
    """`retry_on` for exceptions of the given types."""
    return lambda exc: isinstance(exc, types)


async def pause(backoff: Backoff, retry: int) -> None:
    """Wait before retry `retry` of a loop run elsewhere (the broker's re-delivery)."""
    await asyncio.sleep(backoff.delay_s(retry, random.random()))
