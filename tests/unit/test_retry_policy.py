"""The one retry policy (issue 14): one backoff formula, one retry loop, used everywhere.

`Backoff` (service/domain/backoff.py) is the formula; `service.retry.retrying` runs
the loops with tenacity. These tests pin the formula's shape, what the loop does
with it (attempts, what is retried, cancellation, the waits it sleeps), and that no
module under `service/` computes a backoff of its own again.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.domain.backoff import Backoff
from service.domain.reconcile import RECONCILE_BACKOFF
from service.retry import OUTAGE_BACKOFF, call_backoff, pause, retry_on_types, retrying

SERVICE = Path(__file__).resolve().parents[2] / "service"


class Sleeps:
    """Records the waits instead of sleeping them (tenacity sleeps with `asyncio.sleep`)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.waits: list[float] = []
        monkeypatch.setattr(asyncio, "sleep", self._sleep)

    async def _sleep(self, seconds: float) -> None:
        self.waits.append(seconds)


# -- the formula ------------------------------------------------------------------------


def test_waits_start_at_the_initial_delay_double_and_stop_at_the_cap() -> None:
    backoff = Backoff(initial_s=0.5, max_s=5.0)

    assert [backoff.delay_s(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]


def test_jitter_adds_up_to_its_amount_and_stays_under_the_cap() -> None:
    backoff = Backoff(initial_s=0.1, max_s=0.5, jitter_s=0.1)

    assert backoff.delay_s(1, 0.0) == 0.1
    assert backoff.delay_s(1, 1.0) == pytest.approx(0.2)
    assert backoff.delay_s(2, 0.5) == pytest.approx(0.25)
    assert backoff.delay_s(3, 1.0) == 0.5  # 0.4 + 0.1, capped
    assert backoff.longest_s(2) == pytest.approx(0.3)


def test_a_very_late_retry_waits_the_cap_instead_of_overflowing() -> None:
    assert Backoff(initial_s=0.5, max_s=60.0).delay_s(5000) == 60.0


@pytest.mark.parametrize(
    "arguments", [{"retry": 0}, {"retry": 1, "draw": 1.5}, {"retry": 1, "draw": -0.1}]
)
def test_nonsense_is_refused(arguments: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Backoff(initial_s=1.0, max_s=2.0).delay_s(**arguments)  # type: ignore[arg-type]


def test_a_negative_delay_is_refused() -> None:
    with pytest.raises(ValueError, match=">= 0"):
        Backoff(initial_s=-1.0, max_s=2.0)


@given(
    initial=st.floats(0, 10),
    cap=st.floats(0, 100),
    jitter=st.floats(0, 10),
    retry=st.integers(1, 2000),
    draw=st.floats(0, 1),
)
def test_every_wait_lies_between_its_shortest_and_longest(
    initial: float, cap: float, jitter: float, retry: int, draw: float
) -> None:
    backoff = Backoff(initial_s=initial, max_s=cap, jitter_s=jitter)

    wait = backoff.delay_s(retry, draw)

    assert 0 <= backoff.delay_s(retry) <= wait <= backoff.longest_s(retry) <= cap
    assert backoff.delay_s(retry) <= backoff.delay_s(retry + 1)  # never shrinks


def test_the_total_is_the_sum_of_the_longest_waits() -> None:
    backoff = call_backoff(0.05, 2.0)

    assert backoff.total_s(0) == 0.0
    assert backoff.total_s(3) == pytest.approx(0.1 + 0.15 + 0.25)


def test_the_fixed_backoffs_keep_their_schedules() -> None:
    # Unchanged by the move to one formula: the start-up reconnect (0.5 s to 5 s)
    # and the reconciler's due times (0.5 s to a minute).
    assert [OUTAGE_BACKOFF.delay_s(n) for n in (1, 2, 3, 4, 5, 9)] == [0.5, 1, 2, 4, 5, 5]
    assert [RECONCILE_BACKOFF.delay_s(n) for n in (1, 2, 8, 20)] == [0.5, 1, 60, 60]


# -- the loop ---------------------------------------------------------------------------


async def test_the_loop_waits_the_backoff_between_attempts_and_raises_the_last_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sleeps = Sleeps(monkeypatch)
    backoff = Backoff(initial_s=0.5, max_s=1.5, jitter_s=0.25)
    tries = 0

    with pytest.raises(ConnectionError, match="try 4"):
        async for attempt in retrying(backoff, retry_on_types(ConnectionError), attempts=4):
            with attempt:
                tries += 1
                raise ConnectionError(f"try {tries}")

    assert tries == 4
    assert len(sleeps.waits) == 3
    for retry, wait in enumerate(sleeps.waits, start=1):
        assert backoff.delay_s(retry) <= wait <= backoff.longest_s(retry)


async def test_the_loop_retries_only_what_it_is_told_to(monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps = Sleeps(monkeypatch)
    tries = 0

    with pytest.raises(KeyError):
        async for attempt in retrying(Backoff(0, 0), retry_on_types(ConnectionError), attempts=5):
            with attempt:
                tries += 1
                raise KeyError("a bug, not an outage")

    assert tries == 1
    assert sleeps.waits == []


async def test_the_loop_never_retries_a_cancellation(monkeypatch: pytest.MonkeyPatch) -> None:
    Sleeps(monkeypatch)
    tries = 0

    with pytest.raises(asyncio.CancelledError):
        async for attempt in retrying(Backoff(0, 0), lambda exc: True, attempts=None):
            with attempt:
                tries += 1
                raise asyncio.CancelledError

    assert tries == 1


async def test_without_a_limit_the_loop_goes_on_until_it_succeeds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sleeps = Sleeps(monkeypatch)
    tries = 0

    async for attempt in retrying(OUTAGE_BACKOFF, retry_on_types(OSError), attempts=None):
        with attempt:
            tries += 1
            if tries < 30:
                raise OSError("not reachable yet")

    assert tries == 30
    assert sleeps.waits == [OUTAGE_BACKOFF.delay_s(n) for n in range(1, 30)]


async def test_a_pause_waits_the_backoff_of_its_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps = Sleeps(monkeypatch)

    await pause(OUTAGE_BACKOFF, 1)
    await pause(OUTAGE_BACKOFF, 7)

    assert sleeps.waits == [0.5, 5.0]


# -- one policy -------------------------------------------------------------------------

HAND_MADE_BACKOFF = re.compile(r"\b2(\.0)?\s*\*\*|random\.uniform\(")


def test_no_module_under_service_computes_a_backoff_by_hand() -> None:
    offenders = [
        f"{path.relative_to(SERVICE.parent)}:{number}: {line.strip()}"
        for path in sorted(SERVICE.rglob("*.py"))
        if path.name != "backoff.py"
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if HAND_MADE_BACKOFF.search(line)
    ]
    assert not offenders, f"take the wait from a Backoff (service/retry.py): {offenders}"


@pytest.mark.parametrize(
    ("module", "uses"),
    [
        ("provider_calls.py", "retrying("),
        ("consumer.py", "retrying("),
        ("entrypoints/app.py", "retrying("),
        ("entrypoints/app.py", "pause(self.outage_backoff"),
        ("domain/reconcile.py", "RECONCILE_BACKOFF.delay_s("),
    ],
)
def test_every_place_that_waits_and_tries_again_uses_the_policy(module: str, uses: str) -> None:
    assert uses in (SERVICE / module).read_text()
