"""Amounts across the Stripe boundary: ISO 4217 minor units ↔ Stripe's minor units.

Our contract amounts are integers in the currency's ISO 4217 minor unit (section 2:
5000 USD = $50.00, 5000 JPY = ¥5000, 5000 KWD = 5.000 KD). Stripe also takes
integers "in the currency's smallest unit", but its idea of the smallest unit is
not always ISO's, and for some currencies it refuses digits ISO allows. Getting
this wrong charges 100× too much or too little, so the conversion is one pure,
table-driven function with no rounding: an amount Stripe cannot represent
exactly is refused (:class:`AmountNotRepresentable`), never rounded, because a
rounded charge is a different charge than the one the customer agreed to.

What the tables encode (Stripe's "Supported currencies" page, section "Minor
units in API amounts" and "Special cases"):

* **Zero-decimal** (Stripe exponent 0): BIF, CLP, DJF, GNF, JPY, KMF, KRW, MGA,
  PYG, RWF, UGX, VND, VUV, XAF, XOF, XPF. All have ISO exponent 0 except MGA
  (ISO 2): an MGA amount must be a whole number of ariary (divisible by 100).
* **Three-decimal** (BHD, JOD, KWD, OMR, TND): Stripe's unit is ISO's (1/1000),
  but Stripe requires the last digit to be 0 "for compatibility with its
  payment partners" and tells integrations to round to the nearest ten. We do
  not round: 5120 KWD (5.120 KD) is sent as 5120; 5125 KWD (5.125 KD) is refused
  as not representable, and the checkout fails with a provider error instead of
  charging the customer 5 fils more or less.
* **ISK**: ISO exponent 0, but Stripe keeps it two-decimal for backwards
  compatibility and requires the decimals to be 00: 5 ISK is sent as 500.
* **HUF, TWD**: two-decimal for charges (= ISO), zero-decimal only for payouts,
  which this service does not make: no conversion.
* **Other ISO 4217 currencies with exponent 3 or 4** (IQD, LYD, CLF, UYW) and
  ISO codes without a minor unit (XAU, XXX…): Stripe does not list them as
  three-decimal currencies, so there is no safe mapping; they are refused
  (:class:`UnsupportedCurrency`).
* Everything else: two-decimal in both.
"""

from __future__ import annotations

from typing import Final

STRIPE_ZERO_DECIMAL: Final[frozenset[str]] = frozenset(
    {
        "bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga",
        "pyg", "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf",
    }
)  # fmt: skip
"""Currencies Stripe takes in whole units (its "zero-decimal currencies")."""

STRIPE_THREE_DECIMAL: Final[frozenset[str]] = frozenset({"bhd", "jod", "kwd", "omr", "tnd"})
"""Currencies Stripe takes in thousandths, with the last digit required to be 0."""

STRIPE_TWO_DECIMAL_WHOLE_UNITS: Final[frozenset[str]] = frozenset({"isk"})
"""Two-decimal in Stripe's API but only whole units allowed (decimals must be 00)."""

ISO_EXPONENT_EXCEPTIONS: Final[dict[str, int | None]] = {
    # Exponent 0
    "bif": 0, "clp": 0, "djf": 0, "gnf": 0, "isk": 0, "jpy": 0, "kmf": 0, "krw": 0,
    "pyg": 0, "rwf": 0, "ugx": 0, "uyi": 0, "vnd": 0, "vuv": 0, "xaf": 0, "xof": 0,
    "xpf": 0,
    # Exponent 3
    "bhd": 3, "iqd": 3, "jod": 3, "kwd": 3, "lyd": 3, "omr": 3, "tnd": 3,
    # Exponent 4
    "clf": 4, "uyw": 4,
    # No minor unit at all (precious metals, SDR, testing and "no currency" codes)
    "xag": None, "xau": None, "xba": None, "xbb": None, "xbc": None, "xbd": None,
    "xdr": None, "xpd": None, "xpt": None, "xsu": None, "xts": None, "xua": None,
    "xxx": None,
}  # fmt: skip
"""ISO 4217 minor-unit exponents that are not 2 (None: the code has no minor unit)."""


class UnsupportedCurrency(ValueError):
    """Stripe has no agreed representation for this currency's minor units."""


class AmountNotRepresentable(ValueError):
    """The amount is valid in ISO minor units but Stripe cannot take it exactly."""


def iso_exponent(currency: str) -> int | None:
    """The ISO 4217 minor-unit exponent of `currency` (2 unless listed otherwise)."""
    return ISO_EXPONENT_EXCEPTIONS.get(currency.lower(), 2)


def stripe_exponent(currency: str) -> int:
    """The exponent of the unit Stripe's `amount` fields count in for `currency`."""
    code = currency.lower()
    iso = iso_exponent(code)
    if code in STRIPE_ZERO_DECIMAL:
        return 0
    if code in STRIPE_THREE_DECIMAL:
        return 3
    if code in STRIPE_TWO_DECIMAL_WHOLE_UNITS:
        return 2
    if iso is None or iso > 2:
        raise UnsupportedCurrency(
            f"currency {code!r} has ISO exponent {iso}; Stripe has no matching minor unit"
        )
    return 2


def _pow10(exponent: int) -> int:
    return int(10**exponent)


def _granularity(currency: str) -> int:
    """Stripe units that must divide every amount (1: no constraint)."""
    code = currency.lower()
    if code in STRIPE_THREE_DECIMAL:
        return 10
    if code in STRIPE_TWO_DECIMAL_WHOLE_UNITS:
        return 100
    return 1


def _conversion(amount: int, currency: str) -> tuple[str, int, int]:
    """Check an amount to convert; its currency's code, ISO exponent and Stripe exponent."""
    if isinstance(amount, bool) or not isinstance(amount, int) or amount < 0:
        raise ValueError(f"amount must be a non-negative integer, got {amount!r}")
    code = currency.lower()
    iso = iso_exponent(code)
    stripe = stripe_exponent(code)
    if iso is None:  # pragma: no cover - stripe_exponent refused it already
        raise UnsupportedCurrency(f"currency {code!r} has no minor unit")
    return code, iso, stripe


def to_stripe_amount(amount: int, currency: str) -> int:
    """Convert an ISO minor-unit amount to Stripe's unit; exact or an exception.

    >>> to_stripe_amount(5000, "usd"), to_stripe_amount(5000, "jpy"), to_stripe_amount(5120, "kwd")
    (5000, 5000, 5120)
    """
    code, iso, target = _conversion(amount, currency)
    if target >= iso:
        converted = amount * _pow10(target - iso)
    else:
        factor = _pow10(iso - target)
        if amount % factor:
            raise AmountNotRepresentable(
                f"{amount} {code} (ISO minor units) is not a whole number of the "
                f"{factor}-unit steps Stripe charges {code.upper()} in"
            )
        converted = amount // factor
    step = _granularity(code)
    if converted % step:
        raise AmountNotRepresentable(
            f"Stripe requires {code.upper()} amounts in multiples of {step} of its minor "
            f"unit; {amount} {code} would have to be rounded, which this service never does"
        )
    return converted


def from_stripe_amount(amount: int, currency: str) -> int:
    """Convert a Stripe amount back to ISO minor units; exact or an exception."""
    code, iso, source = _conversion(amount, currency)
    if iso >= source:
        return amount * _pow10(iso - source)
    factor = _pow10(source - iso)
    if amount % factor:
        raise AmountNotRepresentable(
            f"Stripe amount {amount} {code} is not a whole number of ISO minor units"
        )
    return amount // factor
