"""Property tests of the contract's value types: amounts, currency codes, ids.

The example-based tests in `tests/unit/schemas` pin the boundaries; these let
Hypothesis search the space around them, both on Python values (`TypeAdapter`)
and on the wire path (`parse_event` over JSON), because strictness must hold
where money arrives: from JSON, an integral float such as `5000.0` is a float,
not an amount. Example counts come from the Hypothesis profile (tests/conftest.py).
"""

from __future__ import annotations

import json
import string
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from schemas.dead_letter import DeadLetterKind
from schemas.examples import example_event
from schemas.ids import CartId, EventId, IdempotencyKey, ProviderId
from schemas.inbound import CheckoutCompleted
from schemas.money import ISO_4217_CODES, MAX_AMOUNT, Amount, CurrencyCode
from schemas.parse import Rejection, parse_event


def props() -> settings:
    # How many examples is the Hypothesis profile's (tests/conftest.py), not the test's.
    return settings(
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )


AMOUNT = TypeAdapter(Amount)
CURRENCY = TypeAdapter(CurrencyCode)
CART_ID = TypeAdapter(CartId)
EVENT_ID = TypeAdapter(EventId)
IDEMPOTENCY_KEY = TypeAdapter(IdempotencyKey)
PROVIDER_ID = TypeAdapter(ProviderId)

RESOURCE_CHARS = string.ascii_letters + string.digits + "_.:-"
PROVIDER_CHARS = string.ascii_lowercase + string.digits + "_-"


def checkout_with(**data: Any) -> bytes:
    event = example_event("checkout.completed")
    event["data"].update(data)
    return json.dumps(event).encode()


def checkout(value: bytes) -> CheckoutCompleted:
    """The parsed checkout's data; fails the test if the value is rejected."""
    parsed = parse_event(value, "checkout.completed")
    assert not isinstance(parsed, Rejection), parsed
    assert isinstance(parsed.data, CheckoutCompleted)
    return parsed.data


def rejected(value: bytes) -> DeadLetterKind | None:
    result = parse_event(value, "checkout.completed")
    return result.kind if isinstance(result, Rejection) else None


# -- amounts ---------------------------------------------------------------------------


@props()
@given(amount=st.integers(min_value=0, max_value=MAX_AMOUNT))
def test_amounts_in_range_are_accepted_exactly(amount: int) -> None:
    assert AMOUNT.validate_python(amount) == amount
    data = checkout(checkout_with(amount=amount))
    assert data.amount == amount
    assert type(data.amount) is int


@props()
@given(
    amount=st.one_of(
        st.integers(max_value=-1), st.integers(min_value=MAX_AMOUNT + 1, max_value=2**200)
    )
)
def test_amounts_out_of_range_are_rejected(amount: int) -> None:
    with pytest.raises(ValidationError):
        AMOUNT.validate_python(amount)
    assert rejected(checkout_with(amount=amount)) == DeadLetterKind.SCHEMA_VIOLATION


@props()
@given(
    amount=st.one_of(
        st.floats(allow_nan=False, allow_infinity=False),
        st.integers(min_value=0, max_value=MAX_AMOUNT).map(float),  # 5000.0 is still a float
        st.booleans(),
        st.integers(min_value=0, max_value=MAX_AMOUNT).map(str),
        st.decimals(allow_nan=False, allow_infinity=False).map(str),
        st.none(),
    )
)
def test_floats_bools_and_numeric_strings_are_never_amounts(amount: Any) -> None:
    with pytest.raises(ValidationError):
        AMOUNT.validate_python(amount)
    assert rejected(checkout_with(amount=amount)) == DeadLetterKind.SCHEMA_VIOLATION


# -- currency codes --------------------------------------------------------------------


@props()
@given(
    code=st.sampled_from(sorted(ISO_4217_CODES)),
    upper=st.lists(st.booleans(), min_size=3, max_size=3),
)
def test_every_iso_code_in_any_case_is_accepted_lowercase(code: str, upper: list[bool]) -> None:
    variant = "".join(c.upper() if u else c for c, u in zip(code, upper, strict=True))
    assert CURRENCY.validate_python(variant) == code
    assert checkout(checkout_with(currency_code=variant)).currency_code == code


@props()
@given(code=st.text(alphabet=string.ascii_letters, min_size=3, max_size=3))
def test_unknown_three_letter_codes_are_rejected(code: str) -> None:
    if code.lower() in ISO_4217_CODES:
        assert CURRENCY.validate_python(code) == code.lower()
        return
    with pytest.raises(ValidationError):
        CURRENCY.validate_python(code)
    assert rejected(checkout_with(currency_code=code)) == DeadLetterKind.SCHEMA_VIOLATION


@props()
@given(
    code=st.one_of(
        st.text(max_size=10).filter(lambda c: len(c) != 3),
        st.text(min_size=3, max_size=3).filter(lambda c: not c.isascii() or not c.isalpha()),
        st.integers(),
        st.none(),
    )
)
def test_malformed_currency_codes_are_rejected(code: Any) -> None:
    with pytest.raises(ValidationError):
        CURRENCY.validate_python(code)
    assert rejected(checkout_with(currency_code=code)) == DeadLetterKind.SCHEMA_VIOLATION


# -- ids ---------------------------------------------------------------------------------


@props()
@given(cart_id=st.text(alphabet=RESOURCE_CHARS, min_size=1, max_size=128))
def test_cart_ids_of_the_charset_and_length_are_accepted(cart_id: str) -> None:
    assert CART_ID.validate_python(cart_id) == cart_id
    assert checkout(checkout_with(cart_id=cart_id)).cart_id == cart_id


@props()
@given(
    cart_id=st.one_of(
        st.just(""),
        st.text(alphabet=RESOURCE_CHARS, min_size=129, max_size=300),
        st.tuples(
            st.text(alphabet=RESOURCE_CHARS, max_size=60),
            # Not lone surrogates: "\ud800" is not Unicode, so the JSON parser already
            # refuses it as invalid JSON, before any schema is looked at.
            st.characters(exclude_categories=("Cs",)).filter(lambda c: c not in RESOURCE_CHARS),
            st.text(alphabet=RESOURCE_CHARS, max_size=60),
        ).map("".join),
    )
)
def test_cart_ids_outside_the_charset_or_length_are_rejected(cart_id: str) -> None:
    with pytest.raises(ValidationError):
        CART_ID.validate_python(cart_id)
    assert rejected(checkout_with(cart_id=cart_id)) == DeadLetterKind.SCHEMA_VIOLATION


@props()
@given(event_id=st.text(min_size=0, max_size=200))
def test_event_ids_are_any_text_of_1_to_128_chars(event_id: str) -> None:
    if 1 <= len(event_id) <= 128:
        assert EVENT_ID.validate_python(event_id) == event_id
        return
    with pytest.raises(ValidationError):
        EVENT_ID.validate_python(event_id)
    event = example_event("checkout.completed")
    event["id"] = event_id
    kind = parse_event(json.dumps(event).encode(), "checkout.completed")
    assert isinstance(kind, Rejection) and kind.kind == DeadLetterKind.INVALID_ENVELOPE


@props()
@given(key=st.text(min_size=0, max_size=300))
def test_idempotency_keys_are_any_text_of_1_to_255_chars(key: str) -> None:
    if 1 <= len(key) <= 255:
        assert IDEMPOTENCY_KEY.validate_python(key) == key
        assert rejected(checkout_with(idempotency_key=key)) is None
        return
    with pytest.raises(ValidationError):
        IDEMPOTENCY_KEY.validate_python(key)
    assert rejected(checkout_with(idempotency_key=key)) == DeadLetterKind.SCHEMA_VIOLATION


@props()
@given(provider_id=st.text(max_size=80))
def test_provider_ids_are_lowercase_slugs_of_1_to_64_chars(provider_id: str) -> None:
    valid = 1 <= len(provider_id) <= 64 and all(c in PROVIDER_CHARS for c in provider_id)
    if valid:
        assert PROVIDER_ID.validate_python(provider_id) == provider_id
    else:
        with pytest.raises(ValidationError):
            PROVIDER_ID.validate_python(provider_id)
