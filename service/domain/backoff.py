"""The one backoff formula: how long to wait before the next try.

Every place that waits and tries again takes its wait from a :class:`Backoff`:
the retry loops run by tenacity (`service/retry.py`: provider calls, processing
retries, start-up reconnects), the pause before a failed batch is re-delivered,
and the reconciler's due time for what it could not settle (`reconcile.py`, here
in the domain, where it is a date to store rather than a sleep). Pure: the random
part of a wait is drawn by the caller and passed in.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with additive jitter, capped.

    The wait before retry `n` (counted from 1) is
    ``min(max_s, initial_s * 2 ** (n - 1) + jitter_s * draw)`` for a draw in
    [0, 1]: the first retry waits between `initial_s` and `initial_s + jitter_s`,
    each later one twice as long before its jitter, never more than `max_s`.
    """

    initial_s: float
    max_s: float
    jitter_s: float = 0.0

    def __post_init__(self) -> None:
        if min(self.initial_s, self.max_s, self.jitter_s) < 0:
            raise ValueError(f"a backoff's delays must be >= 0: {self}")

    def delay_s(self, retry: int, draw: float = 0.0) -> float:
        """The wait before retry `retry` (from 1), `draw` in [0, 1] choosing its jitter."""
        if retry < 1:
            raise ValueError(f"retries count from 1, not {retry}")
        if not 0.0 <= draw <= 1.0:
            raise ValueError(f"the jitter draw must be in [0, 1], not {draw}")
        try:
            grown = self.initial_s * 2.0 ** (retry - 1)
        except OverflowError:  # after ~1000 retries: long past the cap
            return self.max_s
        return min(self.max_s, grown + self.jitter_s * draw)

    def longest_s(self, retry: int) -> float:
        """The longest wait before retry `retry` (its jitter drawn at the top)."""
        return self.delay_s(retry, 1.0)

    def total_s(self, retries: int) -> float:
        """The longest the waits before the first `retries` retries can add up to."""
        return sum((self.longest_s(retry) for retry in range(1, retries + 1)), 0.0)
