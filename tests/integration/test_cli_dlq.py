"""`payments dlq`: list and show dead letters, re-drive them once the cause is fixed."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from cli_testkit import end_offsets, invoke, json_of, kafka_args, ok

from service.testing import builders
from service.testing.harness import ServiceHarness
from service.tools.kafka_io import read_ranges, resolve_ranges, throwaway_consumer

pytestmark = pytest.mark.integration

ROTATED_KEY = ("ops-2025", "rotated-secret")
"""A signing key the operators started using before the service was told about it."""


@pytest.fixture
async def harness(kafka_bootstrap: str, mongodb_url: str) -> AsyncIterator[ServiceHarness]:
    async with ServiceHarness(kafka_bootstrap, mongodb_url) as h:
        yield h


async def _authorized_payment(h: ServiceHarness) -> tuple[str, str]:
    cart = f"cart_{uuid.uuid4().hex[:12]}"
    await h.publish("cart.updated", builders.cart_updated(cart, 5000))
    await h.publish(
        "checkout.completed", builders.checkout_completed(cart, 5000, payment_method="pm_card_visa")
    )
    authorized = await h.await_event("payment.authorized", cart_id=cart, timeout=30)
    return cart, str(authorized.data["payment_id"])


async def _records_after(h: ServiceHarness, event_type: str, ends: dict[int, int]) -> list[Any]:
    topic = h.prefix + event_type
    async with throwaway_consumer(h.kafka_bootstrap) as consumer:
        ranges = await resolve_ranges(consumer, topic)
        ranges = [r.__class__(r.partition, ends.get(r.partition, 0), r.end) for r in ranges]
        return [record async for record in read_ranges(consumer, topic, ranges)]


async def test_poison_command_is_dead_lettered_fixed_redriven_and_applied_once(
    harness: ServiceHarness,
) -> None:
    h = harness
    cart, payment_id = await _authorized_payment(h)

    # A capture signed with a key the service does not know yet: dead-lettered.
    command = builders.envelope("admin.payment.capture", builders.capture(payment_id, 2000))
    value = builders.encode(command)
    headers = [
        builders.sign(value, *ROTATED_KEY),
        ("traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
    ]
    await h.publish_raw("admin.payment.capture", value, key=payment_id, headers=headers)
    letter = await h.await_event(
        "payments.dead_letter", predicate=lambda r: r.data.get("key") == payment_id, timeout=30
    )
    assert letter.data["error"]["kind"] == "unauthorized"

    # list: the filters find it, and only it
    listed = json_of(
        await invoke(
            "dlq",
            "list",
            "--kind",
            "unauthorized",
            "--source-topic",
            "admin.payment.capture",
            "--cart-id",
            payment_id,
            "--since",
            "10m",
            "--json",
            *kafka_args(h),
        )
    )
    assert [e["id"] for e in listed] == [letter.id]
    assert listed[0]["source_topic"] == h.prefix + "admin.payment.capture"
    for excluding in (["--kind", "invalid_json"], ["--until", "1h"], ["--cart-id", "other"]):
        assert json_of(await invoke("dlq", "list", *excluding, "--json", *kafka_args(h))) == []
    human = ok(await invoke("dlq", "list", *kafka_args(h)))
    assert letter.id in human.stdout and "1 dead letter(s)" in human.stdout

    # show: the original record, headers included
    shown = json_of(await invoke("dlq", "show", letter.id, "--json", *kafka_args(h)))
    assert shown["event"]["data"]["value"] == value.decode()
    assert set(shown["event"]["data"]["headers"]) == {"payments-signature", "traceparent"}
    assert "unauthorized" in ok(await invoke("dlq", "show", letter.id, *kafka_args(h))).stdout

    # dry run: nothing written
    before = await end_offsets(h, "admin.payment.capture")
    dry = json_of(await invoke("dlq", "redrive", letter.id, "--dry-run", "--json", *kafka_args(h)))
    assert dry["dry_run"] is True and dry["sent"] == 0 and dry["items"][0]["skipped"] is None
    assert await end_offsets(h, "admin.payment.capture") == before

    # The fix: the service learns the rotated key. Then re-drive.
    await h.stop_app()
    await h.start_app(admin_keys=dict([h.admin_key, ROTATED_KEY]))
    redriven = json_of(await invoke("dlq", "redrive", letter.id, "--json", *kafka_args(h)))
    assert redriven["sent"] == 1 and "re-drove 1 dead letter(s)" in redriven["summary"]
    captured = await h.await_event("payment.captured", cart_id=cart, timeout=30)
    assert captured.event["causationid"] == command["id"]
    assert captured.data["amount"] == 2000

    # The record went back byte for byte: key, value, headers, original partition.
    (copy,) = await _records_after(h, "admin.payment.capture", before)
    assert copy.key == payment_id.encode() and copy.value == value
    assert list(copy.headers) == [(name, raw) for name, raw in headers]
    assert copy.partition == letter.data["partition"]

    # Re-driving again is harmless: the command id de-duplicates.
    again = json_of(await invoke("dlq", "redrive", letter.id, "--json", *kafka_args(h)))
    assert again["sent"] == 1
    await h.settle(quiet_s=2.0)
    assert {e.id for e in h.events("payment.captured", cart_id=cart)} == {captured.id}
    assert len(await h.ledger(operation="capture")) == 1
    collection = await h.collection(cart)
    assert collection is not None and collection.payment is not None
    assert [c.amount for c in collection.payment.captures] == [2000]


async def test_redrive_all_uses_the_filters_and_ids_must_exist(harness: ServiceHarness) -> None:
    h = harness
    cart = f"cart_{uuid.uuid4().hex[:12]}"
    await h.publish_raw("cart.updated", b"{not json", key=cart)
    await h.publish_raw("checkout.completed", b"[1, 2]", key=cart)
    for kind in ("invalid_json", "invalid_envelope"):
        await h.await_event(
            "payments.dead_letter",
            predicate=lambda r, k=kind: r.data.get("error", {}).get("kind") == k,
            timeout=30,
        )
    before = await end_offsets(h, "checkout.completed")
    result = json_of(
        await invoke("dlq", "redrive", "--all", "--kind", "invalid_json", "--json", *kafka_args(h))
    )
    assert [i["topic"] for i in result["items"]] == [h.prefix + "cart.updated"], result
    assert result["sent"] == 1
    # The checkout letter was not chosen; the re-driven one is rejected again, as it must be.
    assert await end_offsets(h, "checkout.completed") == before
    await h.await_event(
        "payments.dead_letter",
        predicate=lambda r: r.data.get("error", {}).get("kind") == "invalid_json",
        count=2,
        timeout=30,
    )

    unknown = await invoke("dlq", "show", "no-such-letter", *kafka_args(h))
    assert unknown.exit_code == 1 and "no dead letter with id no-such-letter" in unknown.stderr
    neither = await invoke("dlq", "redrive", *kafka_args(h))
    assert neither.exit_code == 2


async def test_connection_defaults_come_from_payments_settings(
    kafka_bootstrap: str, prefixed_topics: str
) -> None:
    """The installed console script, configured only by PAYMENTS_* variables."""
    script = os.path.join(os.path.dirname(sys.executable), "payments")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYMENTS_")}

    def run(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [script, *args], env={**env, **extra}, capture_output=True, text=True, timeout=120
        )

    missing = await asyncio.to_thread(run, "dlq", "list")
    assert missing.returncode == 1 and "PAYMENTS_KAFKA_BOOTSTRAP_SERVERS" in missing.stderr

    configured = {
        "PAYMENTS_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "PAYMENTS_TOPIC_PREFIX": prefixed_topics,
    }
    empty = await asyncio.to_thread(run, "dlq", "list", "--json", **configured)
    assert empty.returncode == 0, empty.stderr
    assert json.loads(empty.stdout) == []

    # A prefix without topics: a clear error, not a hang or a traceback.
    configured["PAYMENTS_TOPIC_PREFIX"] = "nowhere."
    absent = await asyncio.to_thread(run, "dlq", "list", **configured)
    assert absent.returncode == 1
    assert "topic 'nowhere.payments.dlq' does not exist" in absent.stderr
