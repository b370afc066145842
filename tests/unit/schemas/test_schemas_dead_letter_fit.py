"""A dead letter always fits (contract section 5): cut to a budget, and saying so."""

from __future__ import annotations

import os
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.dead_letter import (
    MIN_LETTER_BYTES,
    DeadLetterKind,
    build_dead_letter_data,
    encoded_size,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)
BUDGET = 1024 * 1024 - 72 * 1024


def _letter(value: bytes | None, *, key: bytes | None = b"cart_1", headers=(), budget=BUDGET):  # type: ignore[no-untyped-def]
    return build_dead_letter_data(
        "cart.updated",
        0,
        7,
        key,
        value,
        list(headers),
        DeadLetterKind.INVALID_JSON,
        "not JSON",
        NOW,
        max_encoded_bytes=budget,
    )


def test_regression_control_bytes_escaped_six_times_over_are_cut_to_fit() -> None:
    value = b"\x01" * 180_000  # \u0001 each: ~1.08 MB whole
    letter = _letter(value)
    assert encoded_size(letter) <= BUDGET
    assert letter.truncated is True and letter.original_size == 180_000
    assert letter.value is not None and value.startswith(letter.value.encode())
    assert len(letter.value) > 140_000  # cut to the budget, not to nothing


def test_regression_random_bytes_in_base64_are_cut_to_fit() -> None:
    value = os.urandom(800_000)  # base64: ~1.07 MB whole
    letter = _letter(value)
    assert encoded_size(letter) <= BUDGET
    assert letter.truncated is True and letter.original_size == 800_000
    original = letter.original_value()
    assert original is not None and value.startswith(original)
    assert len(original) > 600_000


def test_a_letter_that_fits_is_whole_and_says_nothing() -> None:
    letter = _letter(b"{not json")
    assert letter.truncated is None and letter.original_size is None
    assert letter.original_value() == b"{not json"


def test_too_large_keeps_its_first_bytes_and_says_so() -> None:
    value = b"{" + b" " * 2_000_000 + b"}"
    letter = build_dead_letter_data(
        "cart.updated",
        0,
        1,
        None,
        value,
        [],
        DeadLetterKind.TOO_LARGE,
        "too large",
        NOW,
        max_encoded_bytes=BUDGET,
        keep_value_bytes=64 * 1024,
    )
    assert letter.original_value() == value[: 64 * 1024]
    assert letter.truncated is True and letter.original_size == len(value)


def test_a_budget_too_small_to_hold_the_cut_parts_is_refused() -> None:
    with pytest.raises(ValueError):
        _letter(b"x", budget=MIN_LETTER_BYTES - 1)


_BYTES = st.one_of(
    st.binary(max_size=64),
    st.text(max_size=64).map(str.encode),
    st.sampled_from([0x00, 0x01, 0x22, 0x5C, 0x7F, 0xFF]).flatmap(
        lambda b: st.integers(1, 400_000).map(lambda n: bytes([b]) * n)
    ),
    st.integers(1, 300_000).map(lambda n: "é\u2028".encode() * n),
)


@settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    key=st.none() | _BYTES,
    value=st.none() | _BYTES,
    headers=st.lists(st.tuples(st.text(max_size=300), st.none() | _BYTES), max_size=40),
    budget=st.integers(MIN_LETTER_BYTES, 2 * 1024 * 1024),
)
def test_any_letter_fits_its_budget_and_keeps_a_prefix_of_the_original(
    key: bytes | None,
    value: bytes | None,
    headers: list[tuple[str, bytes | None]],
    budget: int,
) -> None:
    letter = _letter(value, key=key, headers=headers, budget=budget)
    assert encoded_size(letter) <= budget
    kept = letter.original_value()
    if value is None:
        assert kept is None
    else:
        assert kept is not None and value.startswith(kept)
    if letter.truncated:
        assert letter.original_size == (len(value) if value is not None else 0)
    else:
        assert kept == value and letter.original_key() == key
