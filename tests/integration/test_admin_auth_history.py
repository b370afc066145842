"""Admin commands over the real broker: who signed is recorded, and the dev switch.

The payment's history names, for every admin command, `requested_by` (what the
command says) and `key_id` (the key whose signature verified), so an audit can
tell which credential moved money. `PAYMENTS_ADMIN_SIGNATURE_REQUIRED=false`
(development only) lets unsigned commands through, with no key id recorded.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

from service.testing import builders
from service.testing.harness import ReceivedEvent, ServiceHarness

pytestmark = pytest.mark.integration

OPS_KEY = ("ops-2", "ops-2-secret")


def _cart() -> str:
    return f"cart_{uuid.uuid4().hex[:12]}"


def _caused_by(event_id: str) -> Callable[[ReceivedEvent], bool]:
    return lambda r: r.event.get("causationid") == event_id


async def _authorized_payment(harness: ServiceHarness, cart: str) -> str:
    await harness.publish("checkout.completed", builders.checkout_completed(cart, 5000))
    authorized = await harness.await_event("payment.authorized", cart_id=cart, timeout=30)
    return str(authorized.data["payment_id"])


async def test_history_records_the_signing_key_id_and_requested_by(
    kafka_bootstrap: str, mongodb_url: str
) -> None:
    async with ServiceHarness(
        kafka_bootstrap,
        mongodb_url,
        admin_keys={"harness": "harness-secret", OPS_KEY[0]: OPS_KEY[1]},
    ) as harness:
        cart = _cart()
        payment_id = await _authorized_payment(harness, cart)

        capture = builders.envelope(
            "admin.payment.capture", builders.capture(payment_id, 3000, requested_by="alice@ops")
        )
        value = builders.encode(capture)
        await harness.publish_raw(
            "admin.payment.capture", value, key=payment_id, headers=[builders.sign(value, *OPS_KEY)]
        )
        await harness.await_event("payment.captured", predicate=_caused_by(capture["id"]))
        refund_id = await harness.publish(  # signed with the harness key
            "admin.payment.refund", builders.refund(payment_id, 1000, requested_by="bob@support")
        )
        await harness.await_event("payment.refunded", predicate=_caused_by(refund_id))

        collection = await harness.collection(cart)
        assert collection is not None and collection.payment is not None
        by_command: dict[str, list[tuple[str | None, str | None, str]]] = {}
        for entry in collection.payment.history:
            by_command.setdefault(entry.command_id, []).append(
                (entry.requested_by, entry.key_id, entry.outcome)
            )
        assert by_command[capture["id"]], collection.payment.history
        assert all(
            (requested_by, key_id) == ("alice@ops", "ops-2")
            for requested_by, key_id, _ in by_command[capture["id"]]
        ), by_command[capture["id"]]
        assert ("alice@ops", "ops-2", "succeeded") in by_command[capture["id"]]
        assert ("bob@support", "harness", "succeeded") in by_command[refund_id]


async def test_signature_check_turned_off_accepts_unsigned_commands(
    kafka_bootstrap: str, mongodb_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The environment variable itself, as a developer would set it.
    monkeypatch.setenv("PAYMENTS_ADMIN_SIGNATURE_REQUIRED", "false")
    async with ServiceHarness(kafka_bootstrap, mongodb_url) as harness:
        assert harness.settings().admin_signature_required is False
        cart = _cart()
        payment_id = await _authorized_payment(harness, cart)
        capture_id = await harness.publish(
            "admin.payment.capture",
            builders.capture(payment_id, 2000, requested_by="dev@laptop"),
            sign=False,
        )
        captured = await harness.await_event("payment.captured", predicate=_caused_by(capture_id))
        assert captured.data["amount"] == 2000
        # Wrongly signed is accepted too, but the unverified key id is not recorded.
        bad = builders.envelope(
            "admin.payment.capture", builders.capture(payment_id, 500, requested_by="dev@laptop")
        )
        value = builders.encode(bad)
        await harness.publish_raw(
            "admin.payment.capture",
            value,
            key=payment_id,
            headers=[builders.sign(value, "harness", "not-the-secret")],
        )
        await harness.await_event("payment.captured", predicate=_caused_by(bad["id"]))
        assert not harness.events("payments.dead_letter")

        collection = await harness.collection(cart)
        assert collection is not None and collection.payment is not None
        entries = [e for e in collection.payment.history if e.command_id in (capture_id, bad["id"])]
        assert entries
        assert all(e.requested_by == "dev@laptop" and e.key_id is None for e in entries)
        assert collection.payment.captured_total == 2500
