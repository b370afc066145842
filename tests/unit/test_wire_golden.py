"""The wire bytes, pinned: every scenario below goes through the real consumer (raw Kafka
records in, `BatchProcessor.process`) over the in-memory store and fake processors, and
what it publishes must equal `golden/wire.json`, byte for byte after canonical JSON.

A refactoring must leave this file unchanged. A deliberate wire change regenerates it
(`PAYMENTS_GOLDEN_UPDATE=1 pytest tests/unit/test_wire_golden.py`) and the diff is
reviewed with the contract page (docs/contract.md) in the same commit.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from schemas.topics import (
    ADMIN_PAYMENT_CANCEL,
    ADMIN_PAYMENT_CAPTURE,
    ADMIN_PAYMENT_REFUND,
    CART_UPDATED,
    CHECKOUT_COMPLETED,
    PAYMENT_PROVIDER_WEBHOOK,
    topic_for,
)
from service.consumer import Record
from service.domain import derived_ids as ids
from service.domain.capabilities import Capabilities
from service.testing import builders
from tests.support.memory import RecordingPublisher
from tests.support.world import World

GOLDEN = Path(__file__).parent / "golden" / "wire.json"
PREFIX = "gold."


class Script:
    """One scenario: records in through the consumer, what came out recorded."""

    def __init__(self, *providers: str, capture: bool = False) -> None:
        self.world = World(*(providers or ("fake",)), capture=capture)
        self.publisher = RecordingPublisher()
        self.processor = self.world.batch_processor(self.publisher, PREFIX)
        self.offset = 0

    async def records(self, *items: tuple[str, bytes | None, list[tuple[str, bytes]]]) -> None:
        batch = []
        for event_type, value, headers in items:
            self.offset += 1
            batch.append(
                Record(topic_for(event_type, PREFIX), 0, self.offset, b"k", value, tuple(headers))
            )
        await self.processor.process(batch)

    async def send(self, event_type: str, data: dict[str, Any], event_id: str) -> None:
        value = builders.encode(builders.envelope(event_type, data, event_id=event_id))
        await self.records((event_type, value, []))

    async def cart(self, cart: str, amount: int = 5000, eid: str = "", **extra: Any) -> None:
        await self.send(
            CART_UPDATED, builders.cart_updated(cart, amount, **extra), eid or f"cu-{cart}"
        )

    async def checkout(
        self, cart: str, amount: int = 5000, key: str = "k1", eid: str = "", **extra: Any
    ) -> None:
        extra.setdefault("provider_id", "fake")
        data = builders.checkout_completed(cart, amount, idempotency_key=key, **extra)
        await self.send(CHECKOUT_COMPLETED, data, eid or f"co-{cart}-{key}")

    async def command(self, kind: str, cart: str, eid: str, amount: int | None = None) -> None:
        payment = self.payment_id(cart)
        event_type = {
            "capture": ADMIN_PAYMENT_CAPTURE,
            "refund": ADMIN_PAYMENT_REFUND,
            "cancel": ADMIN_PAYMENT_CANCEL,
        }[kind]
        data = (
            builders.cancel(payment)
            if kind == "cancel"
            else builders.capture(payment, amount, note="golden")
        )
        await self.send(event_type, data, eid)

    async def webhook(self, meaning: str, cart: str, eid: str, **fields: Any) -> None:
        payload = json.dumps({"meaning": meaning, "cart_id": cart, **fields}, sort_keys=True)
        data = {
            "provider_id": "fake",
            "received_at": "2026-01-05T12:00:00Z",
            "headers": {},
            "payload": payload,
        }
        await self.send(PAYMENT_PROVIDER_WEBHOOK, data, eid)

    def payment_id(self, cart: str, provider: str = "fake", seq: int = 1) -> str:
        collection = ids.collection_id(cart)
        return ids.payment_id(ids.session_id(collection, provider, seq))

    def session_id(self, cart: str, provider: str = "fake", seq: int = 1) -> str:
        return ids.session_id(ids.collection_id(cart), provider, seq)

    async def reconcile(self, seconds: float = 600) -> None:
        self.world.advance(seconds=seconds)
        await self.world.reconcile()
        self.publisher.published.extend(
            e for e in self.world.publisher.published if e not in self.publisher.published
        )

    def output(self) -> list[Any]:
        return [
            json.loads(orjson.dumps(e.payload, option=orjson.OPT_SORT_KEYS))
            for e in self.publisher.published
        ]


Scenario = Callable[[Script], Any]
SCENARIOS: dict[str, tuple[dict[str, Any], Scenario]] = {}


def scenario(name: str, **options: Any) -> Callable[[Scenario], Scenario]:
    def register(fn: Scenario) -> Scenario:
        SCENARIOS[name] = (options, fn)
        return fn

    return register


# -- checkout ---------------------------------------------------------------------------


@scenario("authorize after cart")
async def _(s: Script) -> None:
    await s.cart("c1")
    await s.checkout("c1")


@scenario("authorize without cart")
async def _(s: Script) -> None:
    await s.checkout("c1")


@scenario("authorize zero amount")
async def _(s: Script) -> None:
    await s.cart("c1", 0)
    await s.checkout("c1", 0)


@scenario("checkout amount mismatch")
async def _(s: Script) -> None:
    await s.cart("c1", 5000)
    await s.checkout("c1", 4000)


@scenario("checkout currency mismatch")
async def _(s: Script) -> None:
    await s.cart("c1", 5000)
    await s.checkout("c1", 5000, currency_code="eur")


@scenario("checkout provider not available")
async def _(s: Script) -> None:
    await s.checkout("c1", provider_id="nope")


@scenario("checkout idempotency conflict")
async def _(s: Script) -> None:
    await s.checkout("c1", 5000, key="k1", payment_method="declined")
    await s.checkout("c1", 6000, key="k1", eid="co-2")


@scenario("checkout replay republishes")
async def _(s: Script) -> None:
    await s.checkout("c1")
    await s.checkout("c1", eid="co-again")
    await s.checkout("c1", key="k2", eid="co-new-key")


@scenario("checkout declined then retried")
async def _(s: Script) -> None:
    await s.cart("c1")
    await s.checkout("c1", key="k1", payment_method="declined")
    await s.checkout("c1", key="k2")


@scenario("checkout requires action then succeeds")
async def _(s: Script) -> None:
    await s.cart("c1")
    await s.checkout("c1", key="k1", payment_method="3ds")
    await s.checkout(
        "c1",
        key="k1",
        eid="co-3ds-done",
        payment_data={"payment_method": "3ds", "action_result": "succeeded"},
    )


@scenario("checkout transient failure")
async def _(s: Script) -> None:
    s.world.fake.inject("authorize", "transient", "transient")
    await s.checkout("c1")


@scenario("checkout lost answer settled by status")
async def _(s: Script) -> None:
    s.world.fake.inject("authorize", "lose")
    await s.checkout("c1")


@scenario("checkout unknown settled by reconciler")
async def _(s: Script) -> None:
    s.world.fake.inject("authorize", "lose", "lose")
    s.world.fake.inject("get_status", "status_fail", "status_fail", "status_fail")
    await s.checkout("c1")
    await s.reconcile()


@scenario("checkout collection canceled")
async def _(s: Script) -> None:
    await s.checkout("c1")
    await s.command("cancel", "c1", "cmd-cancel")
    await s.checkout("c1", key="k2", eid="co-after-cancel")


@scenario("checkout auto capture", capture=True)
async def _(s: Script) -> None:
    await s.cart("c1")
    await s.checkout("c1")


@scenario("two providers, second wins")
async def _(s: Script) -> None:
    s.world = World("fake", "auto")
    s.processor = s.world.batch_processor(s.publisher, PREFIX)
    await s.cart("c1")
    await s.checkout("c1", key="k1", provider_id="auto")


@scenario("cart updates: versions, frozen, sessions")
async def _(s: Script) -> None:
    await s.cart("c1", 5000, version=2)
    await s.cart("c1", 6000, eid="cu-stale", version=1)
    await s.cart(
        "c1",
        7000,
        eid="cu-v3",
        version=3,
        provider_id="fake",
        payment_data={"payment_method": "pm"},
    )
    await s.checkout("c1", 7000)
    await s.cart("c1", 8000, eid="cu-after")


# -- admin commands ------------------------------------------------------------------------


@scenario("capture full then refund partial twice")
async def _(s: Script) -> None:
    await s.checkout("c1")
    await s.command("capture", "c1", "cmd-cap")
    await s.command("refund", "c1", "cmd-r1", 1000)
    await s.command("refund", "c1", "cmd-r2", 1500)


@scenario("capture partial twice")
async def _(s: Script) -> None:
    await s.checkout("c1")
    await s.command("capture", "c1", "cmd-c1", 2000)
    await s.command("capture", "c1", "cmd-c2", 3000)


@scenario("capture exceeding")
async def _(s: Script) -> None:
    await s.checkout("c1")
    await s.command("capture", "c1", "cmd-c1", 6000)


@scenario("refund nothing captured and exceeding")
async def _(s: Script) -> None:
    await s.checkout("c1")
    await s.command("refund", "c1", "cmd-r0", 100)
    await s.command("capture", "c1", "cmd-c1", 2000)
    await s.command("refund", "c1", "cmd-r1", 2500)


@scenario("cancel then capture, repeated cancel")
async def _(s: Script) -> None:
    await s.checkout("c1")
    await s.command("cancel", "c1", "cmd-x1")
    await s.command("capture", "c1", "cmd-c1")
    await s.command("cancel", "c1", "cmd-x2")


@scenario("cancel after capture")
async def _(s: Script) -> None:
    await s.checkout("c1")
    await s.command("capture", "c1", "cmd-c1", 100)
    await s.command("cancel", "c1", "cmd-x1")


@scenario("command replayed and conflicting")
async def _(s: Script) -> None:
    await s.checkout("c1")
    await s.command("capture", "c1", "cmd-c1", 1000)
    await s.command("capture", "c1", "cmd-c1", 1000)
    await s.command("capture", "c1", "cmd-c1", 2000)
    await s.command("refund", "c1", "cmd-c1", 500)


@scenario("command for unknown payment, replayed")
async def _(s: Script) -> None:
    await s.send(ADMIN_PAYMENT_CAPTURE, builders.capture("pay_missing", 100), "cmd-orphan")
    await s.send(ADMIN_PAYMENT_CAPTURE, builders.capture("pay_missing", 100), "cmd-orphan")
    await s.send(ADMIN_PAYMENT_REFUND, builders.refund("pay_missing"), "cmd-orphan-2")


@scenario("command id reused across payments")
async def _(s: Script) -> None:
    await s.checkout("c1")
    await s.checkout("c2")
    await s.command("capture", "c1", "cmd-shared", 1000)
    await s.command("capture", "c2", "cmd-shared", 1000)


@scenario("capture transient and lost")
async def _(s: Script) -> None:
    await s.checkout("c1")
    s.world.fake.inject("capture", "transient", "transient")
    await s.command("capture", "c1", "cmd-c1", 1000)
    s.world.fake.inject("capture", "lose")
    await s.command("capture", "c1", "cmd-c2", 1000)


@scenario("refund unknown settled by reconciler")
async def _(s: Script) -> None:
    await s.checkout("c1")
    await s.command("capture", "c1", "cmd-c1")
    s.world.fake.inject("refund", "lose", "lose")
    s.world.fake.inject("get_status", "status_fail", "status_fail", "status_fail")
    await s.command("refund", "c1", "cmd-r1", 700)
    await s.reconcile()


@scenario("final partial capture releases the rest")
async def _(s: Script) -> None:
    s.world.fake.capabilities = Capabilities(multicapture=False, partial_capture_releases_rest=True)
    await s.checkout("c1")
    await s.command("capture", "c1", "cmd-c1", 2000)
    await s.command("capture", "c1", "cmd-c2", 1000)
    await s.command("cancel", "c1", "cmd-x1")


@scenario("command meets an operation in flight")
async def _(s: Script) -> None:
    await s.checkout("c1")
    attempts = s.world.caller.policy.max_attempts
    s.world.fake.inject("cancel", *["lose"] * attempts)
    s.world.fake.inject("get_status", *["status_fail"] * attempts)
    await s.command("cancel", "c1", "cmd-x1")  # unknown: still reserved
    await s.command("capture", "c1", "cmd-c1", 1000)
    await s.command("refund", "c1", "cmd-r1", 100)


@scenario("capture needs attention past the key window")
async def _(s: Script) -> None:
    s.world.fake.capabilities = Capabilities(idempotency_window_s=24 * 3600)
    await s.checkout("c1")
    attempts = s.world.caller.policy.max_attempts
    s.world.fake.inject("capture", *["lose"] * attempts)
    s.world.fake.inject("get_status", *["status_fail"] * (3 * attempts))
    await s.command("capture", "c1", "cmd-c1", 2000)
    await s.reconcile(25 * 3600)


# -- webhooks ------------------------------------------------------------------------------


@scenario("webhook authorizes a pending session")
async def _(s: Script) -> None:
    s.world.fake.inject("authorize", "lose", "lose")
    s.world.fake.inject("get_status", "status_fail", "status_fail", "status_fail")
    await s.checkout("c1")
    await s.webhook("authorized", "c1", "wh-1", session_id=s.session_id("c1"), amount=5000)
    await s.webhook("authorized", "c1", "wh-1")


@scenario("webhook captured outside, refunded outside, refund failed")
async def _(s: Script) -> None:
    await s.checkout("c1")
    sid = s.session_id("c1")
    await s.webhook("captured", "c1", "wh-cap", session_id=sid, amount=5000)
    await s.webhook(
        "refund_succeeded",
        "c1",
        "wh-ref",
        session_id=sid,
        amount=1000,
        data={"refund_id": "re_1", "reason": "requested_by_customer"},
    )
    await s.webhook(
        "refund_failed",
        "c1",
        "wh-ref-failed",
        session_id=sid,
        amount=1000,
        data={"refund_id": "re_1", "failure_reason": "lost_or_stolen_card"},
    )


@scenario("webhook dispute opened and lost")
async def _(s: Script) -> None:
    await s.checkout("c1")
    await s.command("capture", "c1", "cmd-c1")
    sid = s.session_id("c1")
    for eid, status in (("wh-d1", "open"), ("wh-d2", "open"), ("wh-d3", "lost")):
        await s.webhook(
            "disputed",
            "c1",
            eid,
            session_id=sid,
            amount=5000,
            data={
                "dispute_id": "dp_1",
                "status": status,
                "provider_status": status,
                "reason": "fraudulent",
            },
        )


@scenario("webhook canceled at provider")
async def _(s: Script) -> None:
    await s.checkout("c1")
    await s.webhook("canceled", "c1", "wh-x", session_id=s.session_id("c1"))


@scenario("webhook failed and requires more")
async def _(s: Script) -> None:
    s.world.fake.inject("authorize", "lose", "lose")
    s.world.fake.inject("get_status", "status_fail", "status_fail", "status_fail")
    await s.checkout("c1")
    await s.webhook("requires_more", "c1", "wh-3ds", session_id=s.session_id("c1"))
    await s.webhook("failed", "c1", "wh-fail", session_id=s.session_id("c1"), message="no")


# -- dead letters ---------------------------------------------------------------------------


@scenario("dead letters of every kind")
async def _(s: Script) -> None:
    await s.records(
        (CART_UPDATED, b"{not json", [("h", b"v")]),
        (CART_UPDATED, b'{"specversion": "1.0"}', []),
        (
            CART_UPDATED,
            builders.encode(builders.envelope(CHECKOUT_COMPLETED, {}, event_id="x")),
            [],
        ),
        (
            CART_UPDATED,
            builders.encode(builders.envelope(CART_UPDATED, {"cart_id": 1}, event_id="y")),
            [],
        ),
        (CART_UPDATED, None, []),
        (CART_UPDATED, b"x" * (1024 * 1024 + 10), []),
    )


@scenario("admin command unsigned")
async def _(s: Script) -> None:
    from service.admin_auth import AdminAuthenticator

    s.processor = s.world.batch_processor(
        s.publisher, PREFIX, AdminAuthenticator({"k": "secret"}, required=True)
    )
    await s.checkout("c1")
    data = builders.capture(s.payment_id("c1"), 100)
    value = builders.encode(builders.envelope(ADMIN_PAYMENT_CAPTURE, data, event_id="cmd-u"))
    await s.records((ADMIN_PAYMENT_CAPTURE, value, []))
    await s.records((ADMIN_PAYMENT_CAPTURE, value, [builders.sign(value, "k", "wrong")]))
    await s.records((ADMIN_PAYMENT_CAPTURE, value, [builders.sign(value, "k", "secret")]))


async def _run(name: str) -> list[Any]:
    options, play = SCENARIOS[name]
    script = Script(capture=options.get("capture", False))
    await play(script)
    return script.output()


def _golden() -> dict[str, Any]:
    return json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
async def test_the_wire_is_as_pinned(name: str) -> None:
    produced = await _run(name)
    assert produced, f"scenario {name!r} published nothing"
    if os.environ.get("PAYMENTS_GOLDEN_UPDATE"):
        golden = _golden()
        golden[name] = produced
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n")
        return
    assert produced == _golden().get(name), f"wire output of {name!r} changed"


def test_every_pinned_scenario_still_runs() -> None:
    assert set(_golden()) == set(SCENARIOS)
