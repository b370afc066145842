"""The 3-D Secure `action` carries the PaymentIntent's client secret: never in the logs.

It is published on `payment.requires_action` for the storefront (Stripe.js needs
it), and the service logs outcomes and outbound events; the redactor must hide it
whether it is logged as a field, inside a structure, or inside text.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from service.adapters.providers.stripe_mapping import intent_outcome
from service.observability.logging import configure_logging
from service.observability.redaction import REDACTOR
from tests.fixtures.stripe.kit import load


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
        REDACTOR.clear_secrets()


def test_requires_action_client_secret_is_redacted_everywhere(log_buffer: io.StringIO) -> None:
    pi = load("payment_intent_requires_action.json", session_id="ps_1", cart_id="cart_1")
    outcome = intent_outcome(pi)
    assert outcome.action is not None
    secret = outcome.action["client_secret"]
    assert secret == pi["client_secret"]
    secret_part = secret.split("_secret_")[1]

    structlog.get_logger("x").info("requires action", action=outcome.action)
    structlog.get_logger("x").info("outbound", data={"cart_id": "cart_1", "action": outcome.action})
    logging.getLogger("x").info("published %s", json.dumps({"action": outcome.action}))
    logging.getLogger("x").info("outcome %r", outcome)

    output = log_buffer.getvalue()
    assert secret_part not in output
    lines = [json.loads(line) for line in output.splitlines()]
    assert len(lines) == 4
    # What is not secret stays readable for operators.
    assert lines[0]["action"]["payment_intent_id"] == pi["id"]
    assert lines[0]["action"]["type"] == "redirect_to_url"
