"""The sandbox and manual providers on the issue-22 port: capabilities, the objects
their outcomes name, and (sandbox) what the audit reads back from the ledger.

The sandbox runs over a small in-memory stand-in for its two MongoDB collections
(only the calls it makes); its behaviour on a real server is proven in
tests/integration/test_providers.py.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from service.adapters.providers.manual import ManualProvider
from service.adapters.providers.sandbox import (
    AUTHORIZATION_ID,
    LEDGER_COLLECTION,
    PM_AUTHENTICATION_REQUIRED,
    PM_DECLINED,
    SandboxProvider,
    authorization_reference,
)
from service.domain.calls import CallOperation, ProviderCall
from service.domain.capabilities import LENIENT
from service.domain.outcomes import OutcomeKind
from tests.support.call_builders import provider_call


def _matches(document: dict[str, Any], query: dict[str, Any]) -> bool:
    return all(document.get(name) == value for name, value in query.items())


class MemoryCollection:
    """insert_one (unique `_id`), find_one, find, delete_one, find_one_and_update ($inc)."""

    def __init__(self) -> None:
        self.documents: dict[Any, dict[str, Any]] = {}

    async def insert_one(self, document: dict[str, Any]) -> None:
        if document["_id"] in self.documents:
            raise DuplicateKeyError("E11000 duplicate key")
        self.documents[document["_id"]] = copy.deepcopy(document)

    async def find_one(self, query: dict[str, Any]) -> dict[str, Any] | None:
        found = [d for d in self.documents.values() if _matches(d, query)]
        return copy.deepcopy(found[0]) if found else None

    async def _find(self, query: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        for document in list(self.documents.values()):
            if _matches(document, query):
                yield copy.deepcopy(document)

    def find(self, query: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        return self._find(query)

    async def delete_one(self, query: dict[str, Any]) -> None:
        for key, document in list(self.documents.items()):
            if _matches(document, query):
                del self.documents[key]
                return

    async def find_one_and_update(
        self,
        query: dict[str, Any],
        update: dict[str, Any],
        *,
        upsert: bool,
        return_document: bool,
    ) -> dict[str, Any] | None:
        assert return_document is ReturnDocument.AFTER and upsert
        document = self.documents.setdefault(query["_id"], dict(query))
        for name, step in update["$inc"].items():
            document[name] = document.get(name, 0) + step
        return copy.deepcopy(document)


class MemoryDatabase:
    def __init__(self) -> None:
        self.collections: dict[str, MemoryCollection] = {}

    def __getitem__(self, name: str) -> MemoryCollection:
        return self.collections.setdefault(name, MemoryCollection())


def call(
    operation: CallOperation, key: str, amount: int = 5000, provider: str = "sandbox", **values: Any
) -> ProviderCall:
    return provider_call(operation, provider, key, amount, **values)


@pytest.fixture
def database() -> MemoryDatabase:
    return MemoryDatabase()


@pytest.fixture
def sandbox(database: MemoryDatabase) -> SandboxProvider:
    return SandboxProvider(database, {})  # type: ignore[arg-type]


def test_both_declare_the_lenient_capabilities(sandbox: SandboxProvider) -> None:
    assert ManualProvider().capabilities == LENIENT
    assert sandbox.capabilities == LENIENT
    assert LENIENT.multicapture and not LENIENT.partial_capture_releases_rest
    assert not LENIENT.refunds_can_be_pending and LENIENT.idempotency_window_s is None


# -- manual --------------------------------------------------------------------------------


async def test_manual_names_the_session_and_each_refund_by_its_key() -> None:
    provider = ManualProvider()
    authorized = await provider.authorize(call("authorize", "auth_1", provider="manual"))
    captured = await provider.capture(call("capture", "cap_1", provider="manual"))
    canceled = await provider.cancel(call("cancel", "can_1", provider="manual"))
    refund = await provider.refund(call("refund", "ref_1", 1000, provider="manual"))
    other = await provider.refund(call("refund", "ref_2", 1000, provider="manual"))
    status = await provider.get_status(call("refund", "ref_1", 1000, provider="manual"))

    assert {authorized.reference, captured.reference, canceled.reference} == {"ps_1"}
    assert refund.reference == status.reference == "refund:ref_1"
    assert other.reference != refund.reference
    assert await provider.read_objects(call("capture", "x", provider="manual")) == []


# -- sandbox: references -------------------------------------------------------------------


async def test_sandbox_names_each_authorization_and_every_answer_about_it(
    sandbox: SandboxProvider,
) -> None:
    first = await sandbox.authorize(call("authorize", "auth_1"))
    replayed = await sandbox.authorize(call("authorize", "auth_1"))
    asked = await sandbox.get_status(call("authorize", "auth_1"))
    second = await sandbox.authorize(call("authorize", "auth_2"))

    assert first.kind is OutcomeKind.SUCCEEDED
    assert first.reference == authorization_reference("auth_1")
    assert first.data[AUTHORIZATION_ID] == first.reference
    assert replayed.reference == asked.reference == first.reference
    assert replayed.data == first.data, "replays answer with the same data"
    # Another key is another authorization record: another object.
    assert second.reference == authorization_reference("auth_2") != first.reference

    # The payment's calls carry its data: captures and cancels name its authorization.
    data = first.data
    captured = await sandbox.capture(call("capture", "cap_1", 2000, payment_id="pay_1", data=data))
    capture_status = await sandbox.get_status(
        call("capture", "cap_1", 2000, payment_id="pay_1", data={})
    )
    canceled = await sandbox.cancel(call("cancel", "can_1", payment_id="pay_1", data=data))
    refunded = await sandbox.refund(call("refund", "ref_1", 500, payment_id="pay_1", data=data))
    refund_status = await sandbox.get_status(call("refund", "ref_1", 500, payment_id="pay_1"))

    assert captured.reference == capture_status.reference == first.reference
    assert canceled.reference == first.reference
    assert refunded.reference is not None and refunded.reference.startswith("sbx_re_")
    assert refunded.reference == refunded.data["id"] == refund_status.reference


async def test_sandbox_names_a_challenge_and_a_decline_like_the_record_they_become(
    sandbox: SandboxProvider,
) -> None:
    challenge = await sandbox.authorize(
        call("authorize", "auth_3ds", payment_data={"payment_method": PM_AUTHENTICATION_REQUIRED})
    )
    asked = await sandbox.get_status(call("authorize", "auth_3ds"))
    finished = await sandbox.authorize(
        call("authorize", "auth_3ds", payment_data={"action_result": "succeeded"})
    )
    declined = await sandbox.authorize(
        call("authorize", "auth_no", payment_data={"payment_method": PM_DECLINED})
    )

    assert challenge.kind is OutcomeKind.REQUIRES_MORE and asked.kind is OutcomeKind.REQUIRES_MORE
    assert challenge.reference == asked.reference == finished.reference
    assert finished.reference == authorization_reference("auth_3ds")
    assert declined.kind is OutcomeKind.DECLINED
    assert declined.reference == authorization_reference("auth_no")


# -- sandbox: what the audit reads ---------------------------------------------------------


async def test_sandbox_reads_its_authorizations_captures_cancels_and_refunds(
    sandbox: SandboxProvider,
) -> None:
    payment = (await sandbox.authorize(call("authorize", "auth_1"))).data
    lost = (await sandbox.authorize(call("authorize", "auth_2", 4000))).data
    await sandbox.authorize(
        call("authorize", "auth_3", payment_data={"payment_method": PM_DECLINED})
    )
    await sandbox.capture(call("capture", "cap_1", 2000, payment_id="pay_1", data=payment))
    await sandbox.capture(call("capture", "cap_2", 1000, payment_id="pay_1", data=payment))
    await sandbox.refund(call("refund", "ref_1", 500, payment_id="pay_1", data=payment))
    await sandbox.cancel(call("cancel", "void_2", payment_id=None, data=lost))

    facts = await sandbox.read_objects(call("capture", "audit", payment_id="pay_1", data=payment))

    by_meaning = {(f.meaning, f.provider_reference): f for f in facts}
    captured = by_meaning[("captured", payment[AUTHORIZATION_ID])]
    assert (captured.amount, captured.capturable) == (3000, 2000)
    assert ("authorized", payment[AUTHORIZATION_ID]) not in by_meaning
    canceled = by_meaning[("canceled", lost[AUTHORIZATION_ID])]
    assert canceled.capturable == 0
    assert ("authorized", lost[AUTHORIZATION_ID]) not in by_meaning
    refund = by_meaning[("refund_succeeded", payment[AUTHORIZATION_ID])]
    assert refund.amount == 500
    assert refund.data["refund_id"].startswith("sbx_re_")
    assert refund.data["provider_key"] == "ref_1"
    assert len(facts) == 3, "a decline holds nothing: no fact"
    assert all(f.event_id is None for f in facts)
    assert {(f.cart_id, f.session_id) for f in facts} == {("cart_1", "ps_1")}


async def test_sandbox_reads_a_held_authorization_and_an_automatic_capture(
    database: MemoryDatabase,
) -> None:
    held = SandboxProvider(database, {})  # type: ignore[arg-type]
    payment = (await held.authorize(call("authorize", "auth_1"))).data

    (fact,) = await held.read_objects(call("capture", "audit", data=payment))
    assert (fact.meaning, fact.amount, fact.capturable) == ("authorized", 5000, 5000)

    automatic = SandboxProvider(database, {"capture": True})  # type: ignore[arg-type]
    other = (await automatic.authorize(call("authorize", "auth_auto", session_id="ps_2"))).data
    (fact,) = await automatic.read_objects(call("capture", "audit", session_id="ps_2", data=other))
    assert (fact.meaning, fact.amount, fact.capturable) == ("captured", 5000, 0)


async def test_operations_recorded_before_authorizations_were_named_count_for_the_payment(
    sandbox: SandboxProvider, database: MemoryDatabase
) -> None:
    payment = (await sandbox.authorize(call("authorize", "auth_1"))).data
    await sandbox.capture(call("capture", "cap_old", 1500, payment_id="pay_1", data={}))
    ledger = database[LEDGER_COLLECTION].documents
    assert AUTHORIZATION_ID not in ledger["capture:cap_old"]

    facts = await sandbox.read_objects(call("capture", "audit", data=payment))

    assert [(f.meaning, f.provider_reference, f.amount) for f in facts] == [
        ("captured", payment[AUTHORIZATION_ID], 1500)
    ]
