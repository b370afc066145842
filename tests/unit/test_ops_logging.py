"""Structured logging: one JSON object per line, context fields, redaction.

Logging is configured in-process into a buffer; every test restores the root
logger and structlog's configuration, so the rest of the suite is unaffected.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from service.observability.logging import configure_logging
from service.observability.redaction import (
    REDACTED,
    REDACTOR,
    Redactor,
    register_secrets,
    secret_like_values,
)

STRIPE_KEY = "sk_test_51H8xYzAbCdEfGhIjKlMnOpQr"
LIVE_KEY = "sk_live_4eC39HqLyjWDarjtT1zdp7dc"
RESTRICTED_KEY = "rk_live_51AbcdEFGhijKLmnop"
WEBHOOK_SECRET = "whsec_Gk3l9fQmZp2Xv8Rt"
CLIENT_SECRET = "pi_3MtwBwLkdIwHu7ix28a3tqPa_secret_YrKJUKribcBjcG8HVhfZluoGH"
PAN = "4242424242424242"
PAN_SPACED = "4000 0566 5566 5556"
PAN_DASHED = "5555-5555-5555-4444"


@pytest.fixture
def log_buffer() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    saved_structlog = structlog.get_config()
    buffer = io.StringIO()
    configure_logging("DEBUG", "json", stream=buffer)
    try:
        yield buffer
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved_handlers:
            root.addHandler(handler)
        root.setLevel(saved_level)
        structlog.configure(**saved_structlog)
        structlog.contextvars.clear_contextvars()
        REDACTOR.clear_secrets()


def _lines(buffer: io.StringIO) -> list[dict[str, Any]]:
    text = buffer.getvalue()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


# -- the redactor on its own --------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "kept", "gone"),
    [
        (f"key {STRIPE_KEY} here", "sk_test_[REDACTED]", STRIPE_KEY),
        (f"key={LIVE_KEY}", "sk_live_[REDACTED]", LIVE_KEY),
        (RESTRICTED_KEY, "rk_live_[REDACTED]", RESTRICTED_KEY),
        (f"secret {WEBHOOK_SECRET}.", "whsec_[REDACTED]", WEBHOOK_SECRET),
        (CLIENT_SECRET, "pi_3MtwBwLkdIwHu7ix28a3tqPa_secret_[REDACTED]", "YrKJUKribcBjcG8"),
        (f"card {PAN} ok", "card ****4242 ok", PAN),
        (f"card {PAN_SPACED}", "****5556", PAN_SPACED),
        (f"card {PAN_DASHED}!", "****4444!", PAN_DASHED),
        ("378282246310005", "****0005", "378282246310005"),  # 15-digit Amex
        ("mongodb://payments:hunter22@db:27017/x", "payments:[REDACTED]@db", "hunter22"),
        ("Authorization: Bearer abcdefghijklmnop", "Bearer [REDACTED]", "abcdefghijklmnop"),
    ],
)
def test_text_patterns_are_redacted(raw: str, kept: str, gone: str) -> None:
    redacted = Redactor().text(raw)
    assert kept in redacted
    assert gone not in redacted


@pytest.mark.parametrize(
    "text",
    [
        "offset 1234567 of partition 3",
        "2026-01-31T12:00:00+00:00",
        "evt_0123456789abcdef0123456789abcdef",
        "amount 500000000000",  # 12 digits: a (large) amount, not a card
        "cart_12345678901234567890x",  # digits glued to letters: an id
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert Redactor().text(text) == text


def test_values_are_redacted_recursively_and_by_key() -> None:
    redactor = Redactor()
    value = {
        "payment_data": {
            "card_number": "4111 1111 1111 1111",
            "cvc": "123",
            "note": f"paid with {PAN}",
            "nested": [{"api_key": "anything-at-all"}, f"token {STRIPE_KEY}"],
        },
        "password": 123456,
        "admin_signature_required": True,
        "amount": 4242424242424242,  # integers are amounts and offsets, not text
    }
    out = redactor.value(value, "data")
    assert out["payment_data"]["card_number"] == REDACTED
    assert out["payment_data"]["cvc"] == REDACTED
    assert out["payment_data"]["note"] == "paid with ****4242"
    assert out["payment_data"]["nested"][0]["api_key"] == REDACTED
    assert out["payment_data"]["nested"][1] == "token sk_test_[REDACTED]"
    assert out["password"] == REDACTED
    assert out["admin_signature_required"] is True
    assert out["amount"] == 4242424242424242


def test_payment_method_details_keep_only_type_and_last4() -> None:
    details = {
        "type": "card",
        "card": {
            "brand": "visa",
            "last4": "4242",
            "exp_month": 12,
            "exp_year": 2030,
            "fingerprint": "Xt5EWLLDS7FJjR1c",
        },
        "billing_details": {"name": "Jane Roe"},
    }
    out = Redactor().value({"payment_method_details": details}, "ctx")
    assert out == {"payment_method_details": {"type": "card", "last4": "4242"}}
    card = Redactor().value({"card": {"number": PAN, "last4": "4242", "cvc": "1"}}, "x")
    assert card == {"card": {"last4": "4242"}}


def test_registered_secrets_are_found_in_any_text() -> None:
    redactor = Redactor()
    redactor.add_secrets(["plain-looking-admin-key", None, "abc"])  # "abc": too short
    assert (
        redactor.text("hmac with plain-looking-admin-key failed") == f"hmac with {REDACTED} failed"
    )
    assert redactor.text("abc") == "abc"


def test_secret_like_values_of_provider_options() -> None:
    options = {
        "stripe": {"api_key": "whatever-value", "capture": True, "webhook": WEBHOOK_SECRET},
        "sandbox": {"delay_s": 0.1, "note": f"key {LIVE_KEY}"},
    }
    found = secret_like_values(options)
    assert "whatever-value" in found
    assert WEBHOOK_SECRET in found
    assert f"key {LIVE_KEY}" in found
    assert all(not isinstance(v, bool) for v in found)


# -- the configured pipeline ---------------------------------------------------------------


def test_stdlib_and_structlog_lines_are_json_with_context(log_buffer: io.StringIO) -> None:
    with structlog.contextvars.bound_contextvars(
        cart_id="cart_1", event_id="evt_1", topic="t.checkout.completed", partition=3, offset=17
    ):
        logging.getLogger("service.consumer").info("handled %s: %s", "checkout", "applied")
        structlog.get_logger("service.tool").warning("structured", payment_id="pay_1")
    logging.getLogger("aiokafka.consumer").warning("library line")
    first, second, third = _lines(log_buffer)
    assert first["event"] == "handled checkout: applied"
    assert first["level"] == "info"
    assert first["logger"] == "service.consumer"
    assert first["timestamp"].endswith("Z")
    for line in (first, second):
        assert (line["cart_id"], line["event_id"], line["partition"], line["offset"]) == (
            "cart_1",
            "evt_1",
            3,
            17,
        )
        assert line["topic"] == "t.checkout.completed"
    assert second["payment_id"] == "pay_1"
    assert second["level"] == "warning"
    assert third["logger"] == "aiokafka.consumer"
    assert "cart_id" not in third  # context does not leak past its block


def test_extra_fields_are_structured(log_buffer: io.StringIO) -> None:
    logging.getLogger("x").debug("handled", extra={"outcome": "applied", "seconds": 0.01})
    (line,) = _lines(log_buffer)
    assert line["outcome"] == "applied"
    assert line["seconds"] == 0.01
    assert line["level"] == "debug"


def test_nothing_secret_reaches_the_output(log_buffer: io.StringIO) -> None:
    register_secrets(["admin-hmac-secret-1"])
    log = logging.getLogger("service.consumer")
    log.warning(
        "dead-lettering: event type 'card %s key %s' does not match", PAN_SPACED, STRIPE_KEY
    )
    structlog.get_logger("x").info(
        "event",
        payment_data={"payment_method": "pm_card_visa", "number": PAN, "key": LIVE_KEY},
        context={"client_secret": CLIENT_SECRET, "note": "admin-hmac-secret-1"},
        url="mongodb://u:pa55word@db/x",
    )
    try:
        raise ValueError(f"provider said: card {PAN} rejected for {WEBHOOK_SECRET}")
    except ValueError:
        log.exception("provider call raised")
    output = log_buffer.getvalue()
    for secret in (
        PAN,
        PAN_SPACED,
        STRIPE_KEY,
        LIVE_KEY,
        WEBHOOK_SECRET,
        "YrKJUKribcBjcG8",
        "admin-hmac-secret-1",
        "pa55word",
    ):
        assert secret not in output, secret
    lines = _lines(log_buffer)
    assert "****5556" in lines[0]["event"]
    assert "sk_test_[REDACTED]" in lines[0]["event"]
    assert lines[1]["payment_data"]["number"] == "****4242"
    assert lines[1]["payment_data"]["payment_method"] == "pm_card_visa"
    assert lines[2]["exception"].startswith("Traceback")
    assert "****4242" in lines[2]["exception"]


def test_levels_filter_and_console_mode(log_buffer: io.StringIO) -> None:
    buffer = io.StringIO()
    configure_logging("INFO", "console", stream=buffer)
    logging.getLogger("x").debug("hidden per-message line")
    structlog.get_logger("x").debug("hidden too")
    logging.getLogger("x").info("visible with card %s", PAN)
    text = buffer.getvalue()
    assert "hidden" not in text
    assert "visible with card ****4242" in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text.splitlines()[0])
