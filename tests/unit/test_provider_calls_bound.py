"""`RetryPolicy.call_bound_s` bounds what a provider call can really take.

The lease a handler holds while it calls a provider (`RetryPolicy.lease_s`) is
built on this bound: if a call could outlast it, the reconciler would take over
an operation still in flight. A call's time is its provider calls (each at most
the timeout) plus the waits the retry loop sleeps; the tests count both, with the
jitter drawn at its top, on the paths that make the most calls.
"""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from service.domain.calls import ProviderCall
from service.domain.outcomes import ProviderOutcome
from service.provider_calls import ProviderCaller, RetryPolicy
from tests.support.call_builders import provider_call

CAPTURE = provider_call("capture", "scripted", "cmd-1", payment_id="pay_1")
LOST = ProviderOutcome.unknown("lost")
BUSY = ProviderOutcome.transient("busy")
POLICY = RetryPolicy(timeout_s=2.0, max_attempts=4, base_delay_s=0.05, max_delay_s=0.3)


class Answers:
    """Every call and status query answers at once with the scripted outcome;
    each one is charged the full timeout, as if it had used all of it."""

    def __init__(self, answer: ProviderOutcome, status: ProviderOutcome) -> None:
        self.answer = answer
        self.status = status
        self.calls = 0

    async def capture(self, call: ProviderCall) -> ProviderOutcome:
        self.calls += 1
        return self.answer

    async def get_status(self, call: ProviderCall) -> ProviderOutcome:
        self.calls += 1
        return self.status

    # Every call of the port answers alike (the caller looks methods up by operation).
    initiate = update = update_data = delete = authorize = refund = cancel = capture


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The waits the retry loop sleeps, with every jitter drawn at its top."""
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr(asyncio, "sleep", sleep)
    monkeypatch.setattr(random, "random", lambda: 1.0)
    return slept


@pytest.mark.parametrize(
    ("answer", "status"),
    [(LOST, LOST), (LOST, BUSY), (BUSY, BUSY), (BUSY, LOST)],
    ids=["lost-then-unknown", "lost-then-busy", "busy-then-busy", "busy-then-unknown"],
)
async def test_the_longest_call_stays_within_the_bound(
    waits: list[float], answer: ProviderOutcome, status: ProviderOutcome
) -> None:
    provider = Answers(answer, status)
    retried: list[ProviderOutcome] = []
    caller = ProviderCaller(POLICY, on_retry=lambda call, outcome: retried.append(outcome))

    await caller.call(provider, CAPTURE)  # type: ignore[arg-type]

    assert len(waits) == len(retried) == POLICY.max_attempts - 1
    taken = provider.calls * POLICY.timeout_s + sum(waits)
    assert taken <= POLICY.call_bound_s()
    # The waits are the policy's own, at their longest: the bound is not loose there.
    assert sum(waits) == pytest.approx(POLICY.backoff.total_s(POLICY.max_attempts - 1))


async def test_a_status_query_asked_again_stays_within_the_bound(waits: list[float]) -> None:
    provider = Answers(BUSY, BUSY)
    caller = ProviderCaller(POLICY)

    await caller.ask_status(provider, CAPTURE)  # type: ignore[arg-type]

    assert provider.calls == POLICY.max_attempts
    assert provider.calls * POLICY.timeout_s + sum(waits) <= POLICY.call_bound_s()


async def test_a_provider_that_never_answers_is_given_up_within_the_bound() -> None:
    # Real time this once: every call and status query waits out its timeout.
    policy = RetryPolicy(timeout_s=0.1, max_attempts=2, base_delay_s=0.01, max_delay_s=0.02)

    class Silent:
        async def capture(self, call: ProviderCall) -> ProviderOutcome:
            await asyncio.Event().wait()
            raise AssertionError("never answers")

        initiate = update = update_data = delete = authorize = refund = cancel = capture
        get_status = capture

    started = time.perf_counter()
    outcome = await ProviderCaller(policy).call(Silent(), CAPTURE)  # type: ignore[arg-type]
    taken = time.perf_counter() - started

    assert outcome.kind == LOST.kind
    # Four timeouts (two attempts, each with its status query) of the five in the
    # bound, and one wait: the unused timeout is the slack for the event loop.
    assert taken <= policy.call_bound_s()


def test_the_lease_covers_twice_the_calls_it_is_for() -> None:
    assert POLICY.lease_s() == 2 * POLICY.call_bound_s() + 30.0
    assert POLICY.lease_s(calls=2) == 4 * POLICY.call_bound_s() + 30.0


def test_the_policy_comes_from_settings() -> None:
    from service.settings import Settings

    settings = Settings(
        provider_timeout_s=3.0,
        provider_max_attempts=5,
        retry_base_delay_s=0.2,
        retry_max_delay_s=1.0,
    )

    policy = RetryPolicy.from_settings(settings)

    assert policy == RetryPolicy(timeout_s=3.0, max_attempts=5, base_delay_s=0.2, max_delay_s=1.0)
    assert [policy.backoff.delay_s(n) for n in (1, 2, 3, 4)] == [0.2, 0.4, 0.8, 1.0]
