"""Paths the fuzzers and the broker suites only reach now and then, pinned by name.

With Hypothesis example counts from a profile (40 on a developer's machine) and
the fault workloads small in `make test`, these rarely drawn cases get a test of
their own, so what is proven does not depend on the draw: a boolean where an
event should be, a tombstone whose letter must be cut, a webhook from a provider
that is not installed, a webhook that races a command of ours, a refund failure
about a refund we never booked, a resumed command whose repeat fails transiently,
the relay loop at work, a server that ignores SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from schemas.dead_letter import (
    MIN_LETTER_BYTES,
    DeadLetterKind,
    build_dead_letter_data,
    encoded_size,
)
from schemas.inbound import ProviderWebhook
from schemas.parse import Rejection, parse_event
from service.embedded import _terminate
from tests.support.world import World, handle

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


class Crash(BaseException):
    """The process dies in the middle of a provider call."""


async def _crash() -> None:
    raise Crash


# -- schemas ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "kind"),
    [(b"true", "a boolean"), (b"[1]", "an array"), (b'"x"', "a string"), (b"7", "a number")],
)
def test_a_json_document_that_is_no_object_is_an_invalid_envelope(value: bytes, kind: str) -> None:
    rejected = parse_event(value, "cart.updated")
    assert isinstance(rejected, Rejection)
    assert rejected.kind == DeadLetterKind.INVALID_ENVELOPE
    assert rejected.detail.endswith(f"got {kind}")


def test_a_tombstone_whose_letter_must_be_cut_keeps_no_value() -> None:
    headers = [(f"h{n}", b"x" * 4000) for n in range(60)]
    letter = build_dead_letter_data(
        "t.cart.updated",
        0,
        7,
        b"k" * 5000,
        None,
        headers,
        DeadLetterKind.INVALID_JSON,
        "a tombstone",
        NOW,
        max_encoded_bytes=MIN_LETTER_BYTES,
    )
    assert letter.truncated is True
    assert letter.value is None and letter.value_base64 is None
    assert encoded_size(letter) <= MIN_LETTER_BYTES


# -- the service over the in-memory fakes ----------------------------------------------


def _webhook(world: World, provider_id: str, body: dict[str, Any]) -> ProviderWebhook:
    return ProviderWebhook.model_validate(
        {
            "provider_id": provider_id,
            "received_at": world.now.isoformat(),
            "headers": {},
            "payload": json.dumps(body),
        }
    )


async def _authorized(world: World, cart: str = "cart_1") -> str:
    await world.checkout(cart, 5000, f"idem_{cart}")
    (authorized,) = world.published("payment.authorized", cart)
    return str(authorized.payload["data"]["payment_id"])


@pytest.mark.asyncio
async def test_a_webhook_of_a_provider_not_installed_is_ignored() -> None:
    world = World()
    data = _webhook(world, "paypal", {"meaning": "canceled", "cart_id": "cart_1"})
    result = await handle(world.service, "wh_1", data)
    assert result.status == "ignored"
    assert "not installed" in result.note
    assert result.saved == [] and world.publisher.published == []


@pytest.mark.asyncio
async def test_a_cancel_at_the_provider_while_our_capture_is_in_flight_changes_nothing() -> None:
    world = World()
    payment_id = await _authorized(world)
    world.fake.on("capture", _crash)  # the capture is reserved, then the process dies
    with pytest.raises(Crash):
        await world.command("capture", payment_id, amount=1000, command_id="cap_1")
    hold_id = (await world.collection("cart_1")).payment.data["hold_id"]  # type: ignore[union-attr]
    body = {"meaning": "canceled", "cart_id": "cart_1", "data": {"hold_id": hold_id}}
    await world.deliver(await handle(world.service, "wh_1", _webhook(world, "fake", body)))
    collection = await world.collection("cart_1")
    assert collection.payment is not None and collection.payment.canceled_at is None
    assert [p.operation for p in collection.payment.pending] == ["capture"]
    assert world.published("payment.canceled") == []


@pytest.mark.asyncio
async def test_a_refund_failure_about_a_refund_we_never_booked_changes_nothing() -> None:
    world = World("fake", capture=True)
    payment_id = await _authorized(world)
    await world.command("refund", payment_id, amount=1000, command_id="ref_1")
    assert len(world.published("payment.refunded", "cart_1")) == 1
    body = {
        "meaning": "refund_failed",
        "cart_id": "cart_1",
        "amount": 999,
        "data": {"refund_id": "re_not_ours"},  # no provider key: not one of our calls
    }
    await world.deliver(await handle(world.service, "wh_1", _webhook(world, "fake", body)))
    collection = await world.collection("cart_1")
    assert collection.payment is not None
    assert [(r.command_id, r.amount) for r in collection.payment.refunds] == [("ref_1", 1000)]
    assert world.published("payment.failed", "cart_1") == []


@pytest.mark.asyncio
async def test_a_resumed_refund_whose_repeat_fails_transiently_is_left_to_the_reconciler() -> None:
    world = World("fake", capture=True)
    payment_id = await _authorized(world)
    world.fake.on("refund", _crash)  # reserved, then the process dies before the provider acts
    with pytest.raises(Crash):
        await world.command("refund", payment_id, amount=2000, command_id="ref_1")
    attempts = world.caller.policy.max_attempts
    world.fake.inject("refund", *["transient"] * attempts)

    # Redelivered: the provider has no record, the repeat fails transiently: unknown,
    # no answer yet (a transient error is no failure of a call that may be repeated).
    await world.command("refund", payment_id, amount=2000, command_id="ref_1")
    assert world.fake.count("refund") == 0
    assert world.published("payment.failed", "cart_1") == []
    assert world.published("payment.refunded", "cart_1") == []
    collection = await world.collection("cart_1")
    assert collection.payment is not None
    assert [p.operation for p in collection.payment.pending] == ["refund"]

    # The reconciler repeats it (same key) once the provider answers: refunded once.
    world.advance(minutes=5)
    await world.reconcile()
    assert world.fake.count("refund") == 1
    (refunded,) = world.published("payment.refunded", "cart_1")
    assert refunded.causation_id == "ref_1"


@pytest.mark.asyncio
async def test_a_resumed_refund_the_provider_never_saw_is_made_once_on_redelivery() -> None:
    world = World("fake", capture=True)
    payment_id = await _authorized(world)
    world.fake.on("refund", _crash)
    with pytest.raises(Crash):
        await world.command("refund", payment_id, amount=2000, command_id="ref_1")
    # Redelivered: the provider has no record, so the call is made again (same key).
    await world.command("refund", payment_id, amount=2000, command_id="ref_1")
    assert [amount for op, _, amount in world.fake.operations if op == "refund"] == [2000]
    (refunded,) = world.published("payment.refunded", "cart_1")
    assert refunded.causation_id == "ref_1"


@pytest.mark.asyncio
async def test_the_relay_loop_publishes_what_a_failed_publish_left_stored() -> None:
    world = World()
    world.publisher.fail_next = 1  # the consumer's publish fails: the event stays stored
    await world.checkout("cart_1", 5000, "K1")
    assert world.published("payment.authorized") == []
    world.advance(minutes=5)
    loop = asyncio.create_task(world.relay.run_forever(0.01, timedelta(seconds=5)))
    try:
        deadline = asyncio.get_running_loop().time() + 30
        while not world.published("payment.authorized", "cart_1"):
            assert asyncio.get_running_loop().time() < deadline, "the relay never published"
            await asyncio.sleep(0.01)
    finally:
        loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop
    assert world.relay.last_run_ok is not False


# -- the embedded servers' process plumbing --------------------------------------------


def test_a_server_that_ignores_sigterm_is_killed_after_its_grace() -> None:
    script = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ready', flush=True); time.sleep(120)"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        _terminate(proc, grace=0.2)
        assert proc.returncode == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.asyncio
async def test_a_webhook_about_a_cart_we_do_not_know_is_ignored() -> None:
    world = World()
    body = {"meaning": "canceled", "cart_id": "cart_unknown"}
    result = await handle(world.service, "wh_1", _webhook(world, "fake", body))
    assert result.status == "ignored"
    assert "no collection" in result.note
    assert world.publisher.published == []


@pytest.mark.asyncio
async def test_a_command_for_a_payment_whose_provider_was_uninstalled_fails() -> None:
    world = World()
    payment_id = await _authorized(world)
    world.registry.providers = {}  # the operator removed the provider from PAYMENTS_PROVIDERS
    await world.command("capture", payment_id, amount=1000, command_id="cap_1")
    (failed,) = world.published("payment.failed", "cart_1")
    assert failed.causation_id == "cap_1"
    assert failed.payload["data"]["operation"] == "capture"
    assert "not installed" in failed.payload["data"]["message"]
    assert world.fake.count("capture") == 0
