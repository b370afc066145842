"""Money on the wire (contract section 2).

Amounts are integers in the currency's minor unit, so no binary float ever touches
money. `Amount` is therefore *strict*: a float (even `5000.0`), a bool or a numeric
string is rejected instead of coerced, because a producer that sends one has a bug
we want to see in the dead-letter topic, not paper over.

Currency codes are ISO 4217 alphabetic codes. Producers disagree on case, so input is
case-insensitive; everything the service stores and publishes is lowercase (the
Medusa convention), so comparisons never have to think about case again.
"""

from __future__ import annotations

from typing import Annotated, Final

import pycountry
from pydantic import AfterValidator, Field, StringConstraints

MAX_AMOUNT: Final[int] = 10**12
"""Largest accepted amount in minor units (contract section 2)."""

Amount = Annotated[
    int,
    Field(
        strict=True,
        ge=0,
        le=MAX_AMOUNT,
        description="Integer amount in the currency's minor unit (5000 USD = $50.00).",
    ),
]
"""A non-negative integer amount in minor units, 0 ≤ amount ≤ 10**12; never coerced."""

ISO_4217_CODES: Final[frozenset[str]] = frozenset(
    str(currency.alpha_3).lower() for currency in pycountry.currencies
)
"""Every ISO 4217 alphabetic code known to pycountry, lowercase; built once at import."""


def normalize_currency_code(code: str) -> str:
    """Return `code` lowercased, or raise `ValueError` if it is not an ISO 4217 code."""
    lowered = code.lower()
    if lowered not in ISO_4217_CODES:
        raise ValueError(f"unknown ISO 4217 currency code {code!r}")
    return lowered


CurrencyCode = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z]{3}$"),
    AfterValidator(normalize_currency_code),
    Field(
        description="ISO 4217 alphabetic code; case-insensitive on input, lowercase on output.",
        examples=["usd", "eur", "jpy"],
    ),
]
"""An ISO 4217 currency code, validated against pycountry and normalized to lowercase."""
