"""Bad input is dead-lettered with the right kind, and the consumer goes on."""

from __future__ import annotations

import base64

import orjson
import pytest

from schemas.examples import example_event
from schemas.topics import ADMIN_COMMAND_TYPES, INBOUND_TOPICS
from service.testing import builders
from service.testing.harness import ServiceHarness, caused_by

# One started service for the module (tests/conftest.py `harness`): each test
# uses its own keys and carts.
pytestmark = [pytest.mark.integration, pytest.mark.harness()]


def _valid(event_type: str, n: int) -> tuple[bytes, str]:
    event = example_event(event_type)
    event["id"] = f"valid-{event_type}-{n}"
    return orjson.dumps(event), event["id"]


def _invalid_cases(event_type: str) -> list[tuple[str, bytes | None]]:
    good = example_event(event_type)
    wrong_type = {**good, "type": "cart.deleted"}
    bad_data = (
        {**good, "data": {**good["data"], "amount": 50.5}}
        if "amount" in good["data"]
        else {**good, "data": {}}
    )
    no_id = {k: v for k, v in good.items() if k != "id"}
    return [
        ("invalid_json", b"{not json"),
        ("invalid_envelope", orjson.dumps(no_id)),
        ("type_mismatch", orjson.dumps(wrong_type)),
        ("schema_violation", orjson.dumps(bad_data)),
        ("too_large", b"{" + b" " * (1024 * 1024 + 10) + b"}"),
    ]


async def test_each_inbound_topic_dead_letters_invalid_and_keeps_consuming(
    harness: ServiceHarness,
) -> None:
    expected: list[tuple[str, str]] = []
    for event_type in INBOUND_TOPICS:
        for n, (kind, value) in enumerate(_invalid_cases(event_type)):
            await harness.publish_raw(event_type, value, key=f"bad-{event_type}-{n}")
            expected.append((event_type, kind))
        # A valid event after the bad ones: the consumer must still process it.
        value, _event_id = _valid(event_type, 0)
        headers = []
        if event_type in ADMIN_COMMAND_TYPES:
            headers.append(builders.sign(value, *harness.admin_key))
        await harness.publish_raw(event_type, value, key="valid", headers=headers)

    for event_type, kind in expected:
        letter = await harness.await_event(
            "payments.dead_letter",
            predicate=lambda r, t=event_type, k=kind: (
                r.data.get("error", {}).get("kind") == k
                and r.data.get("source_topic") == harness.prefix + t
            ),
            timeout=30,
        )
        data = letter.data
        assert data["source_topic"] == harness.prefix + event_type
        assert isinstance(data["partition"], int) and isinstance(data["offset"], int)
        assert data["error"]["detail"]
        assert data["key"].startswith(f"bad-{event_type}")
        if kind != "too_large":
            original = (
                data["value"].encode()
                if "value" in data
                else base64.b64decode(data["value_base64"])
            )
            assert original == next(v for k, v in _invalid_cases(event_type) if k == kind)

    # The valid admin commands name an unknown payment: answered, not dead-lettered.
    for event_type in ADMIN_COMMAND_TYPES:
        failed = await harness.await_event(
            "payment.failed",
            predicate=lambda r, t=event_type: r.event.get("causationid") == f"valid-{t}-0",
        )
        assert failed.data["reason"] == "payment_not_found"
    # The valid checkout was applied: the example's cart was authorized.
    checkout = example_event("checkout.completed")
    await harness.await_event("payment.authorized", cart_id=checkout["data"]["cart_id"])


async def test_admin_commands_without_valid_signature_are_unauthorized(
    harness: ServiceHarness,
) -> None:
    value, command_id = _valid("admin.payment.capture", 1)
    other_value, _ = _valid("admin.payment.capture", 2)
    cases = {
        "unsigned": [],
        "tampered": [builders.sign(other_value, *harness.admin_key)],
        "unknown-key": [builders.sign(value, "nobody", "secret")],
        "wrong-secret": [builders.sign(value, harness.admin_key[0], "not-the-secret")],
    }
    for name, headers in cases.items():
        await harness.publish_raw("admin.payment.capture", value, key=name, headers=headers)
    for name in cases:
        letter = await harness.await_event(
            "payments.dead_letter", predicate=lambda r, n=name: r.data.get("key") == n
        )
        assert letter.data["error"]["kind"] == "unauthorized"
    # Nothing took effect: no answer to the command at all. A signed command sent
    # after them on the same partition (same key) is answered, so by then the
    # unsigned ones were handled too.
    last = "wrong-secret"
    signed, signed_id = _valid("admin.payment.capture", 3)
    await harness.publish_raw(
        "admin.payment.capture",
        signed,
        key=last,
        headers=[builders.sign(signed, *harness.admin_key)],
    )
    await harness.await_event("payment.failed", predicate=caused_by(signed_id), timeout=30)
    assert not harness.events("payment.failed", predicate=caused_by(command_id))
