"""ISO 4217 minor units ↔ Stripe minor units: exact, table-driven, never rounded."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.adapters.providers.stripe_money import (
    AmountNotRepresentable,
    UnsupportedCurrency,
    from_stripe_amount,
    iso_exponent,
    stripe_exponent,
    to_stripe_amount,
)


@pytest.mark.parametrize(
    ("amount", "currency", "stripe_amount"),
    [
        (5000, "usd", 5000),  # $50.00: cents both sides
        (5000, "USD", 5000),  # case-insensitive
        (1, "eur", 1),
        (5000, "jpy", 5000),  # ¥5000: zero-decimal both sides
        (5000, "krw", 5000),
        (5120, "kwd", 5120),  # 5.120 KD: thousandths, last digit 0
        (5000, "kwd", 5000),
        (10, "bhd", 10),
        (5, "isk", 500),  # 5 króna: ISO exponent 0, Stripe two-decimal ×100
        (12300, "mga", 123),  # 123 ariary: ISO exponent 2, Stripe zero-decimal
        (5000, "huf", 5000),  # two-decimal for charges (payout quirk only)
        (5000, "twd", 5000),
        (5000, "ugx", 5000),  # zero-decimal both sides
        (0, "kwd", 0),
        (10**12, "usd", 10**12),
    ],
)
def test_to_stripe_amount(amount: int, currency: str, stripe_amount: int) -> None:
    assert to_stripe_amount(amount, currency) == stripe_amount
    assert from_stripe_amount(stripe_amount, currency) == amount


@pytest.mark.parametrize(
    ("amount", "currency"),
    [
        (5125, "kwd"),  # 5.125 KD: Stripe wants the last digit 0; we refuse to round
        (5001, "jod"),
        (1, "omr"),
        (12345, "mga"),  # 123.45 ariary: Stripe has no sub-unit for MGA
    ],
)
def test_amounts_stripe_cannot_take_exactly_are_refused(amount: int, currency: str) -> None:
    with pytest.raises(AmountNotRepresentable):
        to_stripe_amount(amount, currency)


@pytest.mark.parametrize("currency", ["iqd", "lyd", "clf", "uyw", "xau", "xxx"])
def test_currencies_without_a_stripe_unit_are_refused(currency: str) -> None:
    with pytest.raises(UnsupportedCurrency):
        to_stripe_amount(1000, currency)


def test_stripe_amounts_that_are_not_whole_iso_units_are_refused() -> None:
    # ISK at Stripe is two-decimal, but ISO (and this service) count whole krónur.
    with pytest.raises(AmountNotRepresentable):
        from_stripe_amount(550, "isk")


@pytest.mark.parametrize("bad", [-1, 1.5, True, "100"])
def test_non_integer_or_negative_amounts_are_refused(bad: object) -> None:
    with pytest.raises(ValueError):
        to_stripe_amount(bad, "usd")  # type: ignore[arg-type]


def test_exponent_tables() -> None:
    assert (iso_exponent("usd"), stripe_exponent("usd")) == (2, 2)
    assert (iso_exponent("jpy"), stripe_exponent("jpy")) == (0, 0)
    assert (iso_exponent("kwd"), stripe_exponent("kwd")) == (3, 3)
    assert (iso_exponent("isk"), stripe_exponent("isk")) == (0, 2)
    assert (iso_exponent("mga"), stripe_exponent("mga")) == (2, 0)
    assert iso_exponent("xau") is None


@given(
    st.sampled_from(["usd", "eur", "jpy", "krw", "kwd", "bhd", "isk", "mga", "huf"]),
    st.integers(min_value=0, max_value=10**12),
)
def test_round_trip_is_exact_or_refused(currency: str, amount: int) -> None:
    try:
        converted = to_stripe_amount(amount, currency)
    except AmountNotRepresentable:
        return
    assert from_stripe_amount(converted, currency) == amount
