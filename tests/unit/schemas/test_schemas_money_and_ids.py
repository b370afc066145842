"""Money and identifier types, checked directly on the models."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from schemas import (
    ISO_4217_CODES,
    Amount,
    CartId,
    CartUpdated,
    CurrencyCode,
    PaymentAuthorized,
    ProviderId,
    example_event,
)


class Priced(BaseModel):
    amount: Amount
    currency_code: CurrencyCode


class Identified(BaseModel):
    cart_id: CartId
    provider_id: ProviderId


@pytest.mark.parametrize(
    ("given", "stored"), [("USD", "usd"), ("usd", "usd"), ("Eur", "eur"), ("jpy", "jpy")]
)
def test_currency_code_is_case_insensitive_and_lowercased(given: str, stored: str) -> None:
    assert Priced(amount=1, currency_code=given).currency_code == stored


@pytest.mark.parametrize("code", ["jpy", "kwd", "bhd", "clf", "chf", "xau"])
def test_currencies_with_any_minor_unit_are_accepted(code: str) -> None:
    assert Priced(amount=5000, currency_code=code.upper()).currency_code == code


@pytest.mark.parametrize("code", ["xyz", "usdd", "u", "", " usd", "usd ", "ÜSD", "dem"])
def test_unknown_currency_codes_are_rejected(code: str) -> None:
    with pytest.raises(ValidationError):
        Priced(amount=1, currency_code=code)


def test_currency_list_is_iso_4217() -> None:
    assert {"usd", "eur", "jpy", "kwd", "gbp"} <= ISO_4217_CODES
    assert all(len(code) == 3 and code.islower() for code in ISO_4217_CODES)
    assert len(ISO_4217_CODES) > 150


def test_uppercase_currency_is_lowercase_in_the_output() -> None:
    data = dict(example_event("payment.authorized")["data"], currency_code="USD")

    dumped = PaymentAuthorized.model_validate(data).model_dump_json()

    assert '"currency_code":"usd"' in dumped


def test_uppercase_currency_of_inbound_event_is_stored_lowercase() -> None:
    data = dict(example_event("cart.updated")["data"], currency_code="KWD")

    assert CartUpdated.model_validate(data).currency_code == "kwd"


@pytest.mark.parametrize("amount", [0, 1, 5000, 10**12])
def test_amount_accepts_integers_in_range(amount: int) -> None:
    assert Priced(amount=amount, currency_code="usd").amount == amount


@pytest.mark.parametrize("amount", [5000.0, 5000.5, True, False, "5000", -1, 10**12 + 1, None])
def test_amount_is_never_coerced(amount: Any) -> None:
    with pytest.raises(ValidationError):
        Priced(amount=amount, currency_code="usd")


@pytest.mark.parametrize("cart_id", ["c", "cart_01HX", "A.b:c-d_e", "x" * 128])
def test_cart_id_charset_and_length(cart_id: str) -> None:
    assert Identified(cart_id=cart_id, provider_id="sandbox").cart_id == cart_id


@pytest.mark.parametrize("cart_id", ["", "x" * 129, "a b", "a\n", "\na", "a/b", "ä"])
def test_bad_cart_ids_are_rejected(cart_id: str) -> None:
    with pytest.raises(ValidationError):
        Identified(cart_id=cart_id, provider_id="sandbox")


@pytest.mark.parametrize("provider_id", ["", "Sandbox", "pp stripe", "p" * 65, "a.b"])
def test_bad_provider_ids_are_rejected(provider_id: str) -> None:
    with pytest.raises(ValidationError):
        Identified(cart_id="c", provider_id=provider_id)
