"""`payments send`: validated against the contract first; all or nothing."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from cli_testkit import end_offsets, invoke, json_of, kafka_args, ok

from service.testing import builders
from service.testing.harness import ServiceHarness

# A service of its own per test (tests/conftest.py `harness`, own=True): a test
# compares whole topics' end offsets, which another test's batched sends would
# skew on Tansu (README, "Infrastructure notes").
pytestmark = [pytest.mark.integration, pytest.mark.harness(own=True)]


def _event(event_type: str, data: dict[str, Any]) -> dict[str, Any]:
    return builders.envelope(event_type, data, source="/cli-test")


async def test_an_invalid_file_is_refused_and_nothing_is_sent(
    harness: ServiceHarness, tmp_path: Path
) -> None:
    h = harness
    cart = f"cart_{uuid.uuid4().hex[:12]}"
    good = _event("cart.updated", builders.cart_updated(cart, 5000))
    float_amount = _event("checkout.completed", builders.checkout_completed(cart, 5000))
    float_amount["data"]["amount"] = 50.5
    wrong_type = _event("cart.deleted", {"cart_id": cart})
    path = tmp_path / "events.json"
    path.write_text(json.dumps([good, float_amount, wrong_type]), encoding="utf-8")
    before = {t: await end_offsets(h, t) for t in ("cart.updated", "checkout.completed")}

    result = await invoke("send", str(path), *kafka_args(h))
    assert result.exit_code == 1
    assert "event 2: schema_violation: data.amount" in result.stderr
    assert "event 3: type 'cart.deleted' is not an inbound event type" in result.stderr
    assert "2 of 3 event(s) invalid; nothing was sent" in result.stderr

    as_json = await invoke("send", str(path), "--json", *kafka_args(h))
    assert as_json.exit_code == 1
    report = json.loads(as_json.stdout)
    assert report["sent"] == 0 and [i["position"] for i in report["invalid"]] == [
        "event 2",
        "event 3",
    ]

    not_json = tmp_path / "broken.jsonl"
    not_json.write_text(json.dumps(good) + "\n{oops\n", encoding="utf-8")
    broken = await invoke("send", str(not_json), *kafka_args(h))
    assert broken.exit_code == 1 and "event 2 (line 2): not JSON" in broken.stderr

    assert {t: await end_offsets(h, t) for t in before} == before
    await h.settle(quiet_s=1.0)
    assert await h.collection(cart) is None


async def test_json_lines_and_signed_commands_from_stdin_are_applied(
    harness: ServiceHarness, tmp_path: Path
) -> None:
    h = harness
    cart = f"cart_{uuid.uuid4().hex[:12]}"
    lines = tmp_path / "checkout.jsonl"
    cart_event = _event("cart.updated", builders.cart_updated(cart, 4200))
    checkout_event = _event("checkout.completed", builders.checkout_completed(cart, 4200))
    lines.write_text(
        "\n".join(json.dumps(e) for e in (cart_event, checkout_event)) + "\n", encoding="utf-8"
    )
    sent = json_of(await invoke("send", str(lines), "--json", *kafka_args(h)))
    assert sent["sent"] == 2
    assert [(e["id"], e["key"]) for e in sent["events"]] == [
        (cart_event["id"], cart),
        (checkout_event["id"], cart),
    ]
    authorized = await h.await_event("payment.authorized", cart_id=cart, timeout=30)
    payment_id = authorized.data["payment_id"]

    capture = _event("admin.payment.capture", builders.capture(payment_id, 4200))
    key_id, secret = h.admin_key
    signed = ok(
        await invoke(
            "send",
            "-",
            *kafka_args(h),
            input=json.dumps(capture),
            env={"PAYMENTS_ADMIN_KEY_ID": key_id, "PAYMENTS_ADMIN_KEY_SECRET": secret},
        )
    )
    assert f"key={payment_id} (signed)" in signed.stdout and "sent 1 event(s)" in signed.stdout
    captured = await h.await_event("payment.captured", cart_id=cart, timeout=30)
    assert captured.event["causationid"] == capture["id"]

    # Without a key the command goes out unsigned (with a warning) and is dead-lettered.
    refund = _event("admin.payment.refund", builders.refund(payment_id, 100))
    unsigned = ok(await invoke("send", "-", *kafka_args(h), input=json.dumps(refund)))
    assert "unsigned admin command" in unsigned.stderr
    letter = await h.await_event(
        "payments.dead_letter", predicate=lambda r: r.data.get("key") == payment_id, timeout=30
    )
    assert letter.data["error"]["kind"] == "unauthorized"
