"""Single hostile records that once stopped every partition for good (issue 11).

Each was found by sending one message to a running service: the batch failed, was
fetched again, failed again, and after a rebalance the next instance stalled the
same way. Each must now be dead-lettered with its kind, and a checkout sent after
it must be authorized: the consumer goes on.
"""

from __future__ import annotations

import os

import orjson
import pytest
from cli_testkit import invoke, json_of, kafka_args

from service.admin_auth import SIGNATURE_HEADER
from service.testing import builders
from service.testing.harness import ServiceHarness

# One started service for the module (tests/conftest.py `harness`): each test
# uses its own keys and carts.
pytestmark = [pytest.mark.integration, pytest.mark.harness()]

#: The producer's limit the dead letter must fit under (aiokafka's default).
BROKER_MESSAGE_LIMIT = 1024 * 1024


async def _checkout_still_authorized(harness: ServiceHarness) -> None:
    cart_id = builders.new_cart_id()
    await harness.publish("checkout.completed", builders.checkout_completed(cart_id))
    await harness.await_event("payment.authorized", cart_id=cart_id, timeout=30)


async def _letter_for(harness: ServiceHarness, key: str, kind: str) -> dict[str, object]:
    letter = await harness.await_event(
        "payments.dead_letter", predicate=lambda r: r.key == key, timeout=30
    )
    assert letter.data["error"]["kind"] == kind, letter.data["error"]
    assert len(orjson.dumps(letter.event)) < BROKER_MESSAGE_LIMIT
    return letter.data


def _capture_command() -> bytes:
    event = builders.envelope("admin.payment.capture", builders.capture("pay_hostile"))
    return builders.encode(event)


async def test_regression_signature_with_non_ascii_text_is_unauthorized(
    harness: ServiceHarness,
) -> None:
    key_id = harness.admin_key[0]
    header = f"keyid={key_id},v1=éé".encode()
    await harness.publish_raw(
        "admin.payment.capture",
        _capture_command(),
        key="hostile-non-ascii",
        headers=[(SIGNATURE_HEADER, header)],
    )
    data = await _letter_for(harness, "hostile-non-ascii", "unauthorized")
    assert "signature" in str(data["error"]["detail"])  # type: ignore[index]
    await _checkout_still_authorized(harness)


async def test_regression_signature_with_bytes_that_are_not_utf8_is_unauthorized(
    harness: ServiceHarness,
) -> None:
    await harness.publish_raw(
        "admin.payment.capture",
        _capture_command(),
        key="hostile-not-utf8",
        headers=[(SIGNATURE_HEADER, b"keyid=acc,v1=\xff\xfe\x00")],
    )
    data = await _letter_for(harness, "hostile-not-utf8", "unauthorized")
    assert data["headers"][SIGNATURE_HEADER].startswith("base64:")  # type: ignore[index]
    await _checkout_still_authorized(harness)


async def test_regression_control_bytes_whose_letter_would_exceed_the_limit(
    harness: ServiceHarness,
) -> None:
    # JSON escapes each 0x01 as \u0001: six bytes per byte, ~1.08 MB uncut.
    await harness.publish_raw("cart.updated", b"\x01" * 180_000, key="hostile-escapes")
    data = await _letter_for(harness, "hostile-escapes", "invalid_json")
    assert data["truncated"] is True
    assert data["original_size"] == 180_000
    await _checkout_still_authorized(harness)

    # A cut letter holds only a prefix: re-driving it would send another message.
    letter = await harness.await_event(
        "payments.dead_letter", predicate=lambda r: r.key == "hostile-escapes"
    )
    result = json_of(
        await invoke("dlq", "redrive", letter.id, "--dry-run", "--json", *kafka_args(harness))
    )
    assert result["skipped"] == 1 and "cut copy" in result["items"][0]["skipped"]


async def test_regression_random_bytes_whose_base64_would_exceed_the_limit(
    harness: ServiceHarness,
) -> None:
    # Base64 makes 800 KB into ~1.07 MB uncut.
    await harness.publish_raw("checkout.completed", os.urandom(800_000), key="hostile-binary")
    data = await _letter_for(harness, "hostile-binary", "invalid_json")
    assert data["truncated"] is True
    assert data["original_size"] == 800_000
    await _checkout_still_authorized(harness)


async def test_regression_null_header_value_and_content_type_lies(
    harness: ServiceHarness,
) -> None:
    # A null header value and a content-type that promises JSON over bytes that are
    # not: both once reached the framework's own header and body decoding.
    await harness.publish_raw(
        "checkout.completed",
        b"\xff\xfe not json",
        key="hostile-headers",
        headers=[("content-type", b"application/json"), ("x-null", None)],  # type: ignore[list-item]
    )
    await _letter_for(harness, "hostile-headers", "invalid_json")
    await _checkout_still_authorized(harness)


async def test_the_three_messages_sent_to_payments_run_are_dead_lettered_and_it_goes_on(
    kafka_bootstrap: str, mongodb_url: str
) -> None:
    """The issue's three messages, to `payments run` itself (a child process)."""
    async with ServiceHarness(kafka_bootstrap, mongodb_url, mode="subprocess") as harness:
        key_id = harness.admin_key[0]
        hostile = [
            ("admin.payment.capture", _capture_command(), f"keyid={key_id},v1=éé".encode()),
            ("admin.payment.capture", _capture_command(), b"keyid=acc,v1=\xff\xfe\x00"),
            ("cart.updated", b"\x01" * 180_000, None),
            ("checkout.completed", os.urandom(800_000), None),
        ]
        kinds = ["unauthorized", "unauthorized", "invalid_json", "invalid_json"]
        for n, (topic, value, signature) in enumerate(hostile):
            headers = [] if signature is None else [(SIGNATURE_HEADER, signature)]
            await harness.publish_raw(topic, value, key=f"run-{n}", headers=headers)
            await _letter_for(harness, f"run-{n}", kinds[n])
            await _checkout_still_authorized(harness)
