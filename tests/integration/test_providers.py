"""The sandbox and manual providers and the registry, over a real MongoDB-protocol server.

The sandbox ledger is what the harnesses count to prove nothing was charged twice,
so these tests check the ledger documents as much as the answers.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from service.adapters.providers import (
    IDEMPOTENCY_KEY_REUSE,
    LEDGER_COLLECTION,
    PROVIDER_FACTORIES,
    PROVIDERS_COLLECTION,
    STATE_COLLECTION,
    ManualProvider,
    ProviderConfigError,
    ProviderRegistry,
    SandboxProvider,
    UnknownProviderError,
)
from service.domain.calls import CallOperation, ProviderCall
from service.domain.outcomes import OutcomeKind
from service.ports.providers import PaymentProvider
from service.settings import Settings
from tests.support.call_builders import provider_call

# `store`: also proven on FerretDB (`make test-store`): it exercises store semantics.
pytestmark = [pytest.mark.integration, pytest.mark.store]

Database = AsyncDatabase[dict[str, Any]]


@pytest.fixture
async def database(mongodb_url: str, database_name: str) -> AsyncIterator[Database]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongodb_url, tz_aware=True)
    try:
        yield client[database_name]
    finally:
        await client.drop_database(database_name)
        await client.close()


@pytest.fixture
def sandbox(database: Database) -> SandboxProvider:
    return SandboxProvider(database)


def call(
    operation: CallOperation = "authorize",
    *,
    key: str | None = None,
    session_id: str = "ps_1",
    amount: int = 5000,
    payment_method: str | None = None,
    payment_id: str | None = None,
    **payment_data: Any,
) -> ProviderCall:
    if payment_method is not None:
        payment_data["payment_method"] = payment_method
    return ProviderCall(
        operation=operation,
        provider_id="sandbox",
        idempotency_key=key or f"key_{uuid.uuid4().hex}",
        session_id=session_id,
        amount=amount,
        currency_code="usd",
        cart_id="cart_1",
        payment_id=payment_id,
        payment_data=payment_data,
    )


async def authorizations(database: Database) -> int:
    return await database[LEDGER_COLLECTION].count_documents(
        {"operation": "authorize", "outcome": "authorized"}
    )


async def ledger(database: Database) -> list[dict[str, Any]]:
    return [doc async for doc in database[LEDGER_COLLECTION].find({})]


# -- authorize: the payment methods of contract section 7 ----------------------------------


@pytest.mark.parametrize("payment_method", [None, "pm_card_visa"])
async def test_visa_or_no_method_authorizes_and_records_one_ledger_entry(
    sandbox: SandboxProvider, database: Database, payment_method: str | None
) -> None:
    outcome = await sandbox.authorize(call(key="k1", payment_method=payment_method))

    assert outcome.kind is OutcomeKind.SUCCEEDED
    assert not outcome.captured
    assert outcome.amount == 5000
    assert outcome.data["status"] == "authorized"
    [entry] = await ledger(database)
    assert entry["_id"] == "authorize:k1"
    assert {k: entry[k] for k in ("operation", "idempotency_key", "session_id", "outcome")} == {
        "operation": "authorize",
        "idempotency_key": "k1",
        "session_id": "ps_1",
        "outcome": "authorized",
    }
    assert entry["amount"] == 5000
    assert entry["currency_code"] == "usd"
    assert isinstance(entry["created_at"], datetime)


async def test_repeated_key_returns_first_result_without_a_second_charge(
    sandbox: SandboxProvider, database: Database
) -> None:
    first = await sandbox.authorize(call(key="k1", payment_method="pm_card_visa"))
    second = await sandbox.authorize(call(key="k1", payment_method="pm_card_visa"))

    assert second == first
    assert await authorizations(database) == 1
    assert len(await ledger(database)) == 1


async def test_a_new_key_is_a_new_authorization(
    sandbox: SandboxProvider, database: Database
) -> None:
    await sandbox.authorize(call(key="k1"))
    await sandbox.authorize(call(key="k2"))

    assert await authorizations(database) == 2


async def test_concurrent_same_key_authorizations_charge_once(
    sandbox: SandboxProvider, database: Database
) -> None:
    outcomes = await asyncio.gather(
        *(sandbox.authorize(call(key="k1", payment_method="pm_card_visa")) for _ in range(20))
    )

    assert {o.kind for o in outcomes} == {OutcomeKind.SUCCEEDED}
    assert len({repr(o) for o in outcomes}) == 1
    assert await authorizations(database) == 1
    assert len(await ledger(database)) == 1


async def test_declined_is_recorded_and_stays_declined(
    sandbox: SandboxProvider, database: Database
) -> None:
    outcome = await sandbox.authorize(call(key="k1", payment_method="pm_card_chargeDeclined"))

    assert outcome.kind is OutcomeKind.DECLINED
    assert outcome.code == "card_declined"
    assert "declined" in outcome.message
    [entry] = await ledger(database)
    assert entry["outcome"] == "declined"

    # Even a good card cannot turn a declined key into a charge.
    again = await sandbox.authorize(call(key="k1", payment_method="pm_card_visa"))
    assert again.kind is OutcomeKind.DECLINED
    assert await authorizations(database) == 0


async def test_three_d_secure_succeeded(sandbox: SandboxProvider, database: Database) -> None:
    method = "pm_card_authenticationRequired"
    first = await sandbox.authorize(call(key="k1", session_id="ps_3ds", payment_method=method))

    assert first.kind is OutcomeKind.REQUIRES_MORE
    assert first.action == {
        "type": "redirect_to_url",
        "url": "https://sandbox.invalid/3ds/ps_3ds",
    }
    assert await ledger(database) == []
    status = await sandbox.get_status(call(key="k1", session_id="ps_3ds"))
    assert status.kind is OutcomeKind.REQUIRES_MORE
    assert status.action == first.action
    # Re-sent without a result: still waiting, still nothing charged.
    again = await sandbox.authorize(call(key="k1", session_id="ps_3ds", payment_method=method))
    assert again.kind is OutcomeKind.REQUIRES_MORE

    done = await sandbox.authorize(
        call(key="k1", session_id="ps_3ds", payment_method=method, action_result="succeeded")
    )

    assert done.kind is OutcomeKind.SUCCEEDED
    assert await authorizations(database) == 1
    status = await sandbox.get_status(call(key="k1", session_id="ps_3ds"))
    assert status.kind is OutcomeKind.SUCCEEDED
    # The challenge is closed; the ledger answers for the key from now on.
    assert await database[STATE_COLLECTION].count_documents({"kind": "three_ds"}) == 0


async def test_three_d_secure_retry_may_carry_only_the_result(
    sandbox: SandboxProvider, database: Database
) -> None:
    await sandbox.authorize(call(key="k1", payment_method="pm_card_authenticationRequired"))

    done = await sandbox.authorize(call(key="k1", action_result="succeeded"))

    assert done.kind is OutcomeKind.SUCCEEDED
    assert done.data["payment_method"] == "pm_card_authenticationRequired"
    assert await authorizations(database) == 1


async def test_three_d_secure_failed_is_declined(
    sandbox: SandboxProvider, database: Database
) -> None:
    method = "pm_card_authenticationRequired"
    await sandbox.authorize(call(key="k1", payment_method=method))

    outcome = await sandbox.authorize(call(key="k1", payment_method=method, action_result="failed"))

    assert outcome.kind is OutcomeKind.DECLINED
    assert outcome.code == "authentication_failed"
    [entry] = await ledger(database)
    assert entry["outcome"] == "declined"
    assert (await sandbox.authorize(call(key="k1", action_result="succeeded"))).kind is (
        OutcomeKind.DECLINED
    )


async def test_provider_error_is_transient_on_every_call(
    sandbox: SandboxProvider, database: Database
) -> None:
    for _ in range(4):
        outcome = await sandbox.authorize(call(key="k1", payment_method="pm_card_providerError"))
        assert outcome.kind is OutcomeKind.TRANSIENT
        assert not outcome.is_final
    assert await ledger(database) == []


async def test_flaky_succeeds_on_the_third_call(
    sandbox: SandboxProvider, database: Database
) -> None:
    kinds = [
        (await sandbox.authorize(call(key="k1", payment_method="pm_card_flaky"))).kind
        for _ in range(4)
    ]

    assert kinds == [
        OutcomeKind.TRANSIENT,
        OutcomeKind.TRANSIENT,
        OutcomeKind.SUCCEEDED,
        OutcomeKind.SUCCEEDED,
    ]
    assert await authorizations(database) == 1
    # The counters live beside the ledger, not in it.
    assert len(await ledger(database)) == 1
    # Counted per key: a new key starts over.
    other = await sandbox.authorize(call(key="k2", payment_method="pm_card_flaky"))
    assert other.kind is OutcomeKind.TRANSIENT


async def test_flaky_under_concurrency_charges_once(
    sandbox: SandboxProvider, database: Database
) -> None:
    outcomes = await asyncio.gather(
        *(sandbox.authorize(call(key="k1", payment_method="pm_card_flaky")) for _ in range(10))
    )

    kinds = sorted(o.kind for o in outcomes)
    assert kinds.count(OutcomeKind.TRANSIENT) == 2
    assert kinds.count(OutcomeKind.SUCCEEDED) == 8
    assert await authorizations(database) == 1


async def test_lost_response_authorizes_but_answers_unknown(
    sandbox: SandboxProvider, database: Database
) -> None:
    first = await sandbox.authorize(call(key="k1", payment_method="pm_card_lostResponse"))

    assert first.kind is OutcomeKind.UNKNOWN
    assert "timed out" in first.message
    assert await authorizations(database) == 1

    status = await sandbox.get_status(call(key="k1"))
    assert status.kind is OutcomeKind.SUCCEEDED

    second = await sandbox.authorize(call(key="k1", payment_method="pm_card_lostResponse"))
    assert second.kind is OutcomeKind.SUCCEEDED
    assert second.data == status.data
    assert await authorizations(database) == 1


async def test_unknown_payment_method_is_invalid_data(
    sandbox: SandboxProvider, database: Database
) -> None:
    outcome = await sandbox.authorize(call(payment_method="pm_card_bogus"))

    assert outcome.kind is OutcomeKind.INVALID_DATA
    assert "unknown sandbox payment_method" in outcome.message
    assert await ledger(database) == []


async def test_payment_method_from_session_data_applies(
    sandbox: SandboxProvider, database: Database
) -> None:
    # cart.updated's payment_data reaches the session through update_data.
    updated = await sandbox.update_data(
        call("update_data", payment_method="pm_card_chargeDeclined")
    )
    checkout = provider_call("authorize", "sandbox", "k1", data=updated.data)

    assert (await sandbox.authorize(checkout)).kind is OutcomeKind.DECLINED


# -- idempotency keys ----------------------------------------------------------------------


async def test_key_reused_with_another_session_fails(
    sandbox: SandboxProvider, database: Database
) -> None:
    await sandbox.authorize(call(key="k1", session_id="ps_1"))

    outcome = await sandbox.authorize(call(key="k1", session_id="ps_2"))

    assert outcome.kind is OutcomeKind.FAILED
    assert outcome.code == IDEMPOTENCY_KEY_REUSE
    assert await authorizations(database) == 1


async def test_key_reuse_is_refused_before_anything_is_recorded(
    sandbox: SandboxProvider, database: Database
) -> None:
    # The first use only got transient errors, yet the key is bound to its session.
    first = await sandbox.authorize(
        call(key="k1", session_id="ps_1", payment_method="pm_card_flaky")
    )
    assert first.kind is OutcomeKind.TRANSIENT

    outcome = await sandbox.authorize(call(key="k1", session_id="ps_2"))

    assert outcome.code == IDEMPOTENCY_KEY_REUSE
    assert await ledger(database) == []


async def test_key_reused_with_another_amount_fails(sandbox: SandboxProvider) -> None:
    await sandbox.authorize(call(key="k1", amount=5000))

    outcome = await sandbox.authorize(call(key="k1", amount=6000))

    assert outcome.code == IDEMPOTENCY_KEY_REUSE


# -- capture, refund, cancel ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("operation", "recorded"),
    [("capture", "captured"), ("refund", "refunded"), ("cancel", "canceled")],
)
async def test_bookkeeping_operations_are_recorded_once(
    sandbox: SandboxProvider, database: Database, operation: CallOperation, recorded: str
) -> None:
    request = call(operation, key="cmd_1", amount=2000, payment_id="pay_1")

    first = await getattr(sandbox, operation)(request)
    second = await getattr(sandbox, operation)(request)
    concurrent = await asyncio.gather(*(getattr(sandbox, operation)(request) for _ in range(10)))

    assert first.kind is OutcomeKind.SUCCEEDED
    assert first.amount == 2000
    assert all(o == first for o in [second, *concurrent])
    [entry] = await ledger(database)
    assert entry["_id"] == f"{operation}:cmd_1"
    assert entry["operation"] == operation
    assert entry["outcome"] == recorded
    assert entry["amount"] == 2000
    assert entry["payment_id"] == "pay_1"
    assert (await sandbox.get_status(request)) == first


@pytest.mark.parametrize("operation", ["capture", "refund"])
async def test_capture_and_refund_keys_are_bound_to_amount_and_payment(
    sandbox: SandboxProvider, database: Database, operation: CallOperation
) -> None:
    method = getattr(sandbox, operation)
    await method(call(operation, key="cmd_1", amount=2000, payment_id="pay_1"))

    other_amount = await method(call(operation, key="cmd_1", amount=2500, payment_id="pay_1"))
    other_payment = await method(call(operation, key="cmd_1", amount=2000, payment_id="pay_2"))

    assert other_amount.code == IDEMPOTENCY_KEY_REUSE
    assert other_payment.code == IDEMPOTENCY_KEY_REUSE
    assert len(await ledger(database)) == 1


async def test_partial_captures_and_refunds_each_get_an_entry(
    sandbox: SandboxProvider, database: Database
) -> None:
    await sandbox.authorize(call(key="checkout_1"))
    await sandbox.capture(call("capture", key="cap_1", amount=3000, payment_id="pay_1"))
    await sandbox.capture(call("capture", key="cap_2", amount=2000, payment_id="pay_1"))
    await sandbox.refund(call("refund", key="ref_1", amount=1000, payment_id="pay_1"))

    entries = await ledger(database)
    assert sorted((e["operation"], e["amount"]) for e in entries) == [
        ("authorize", 5000),
        ("capture", 2000),
        ("capture", 3000),
        ("refund", 1000),
    ]


async def test_capture_on_authorize(database: Database) -> None:
    sandbox = SandboxProvider(database, {"capture": True})
    assert sandbox.capture_on_authorize

    outcome = await sandbox.authorize(call(key="k1"))
    again = await sandbox.authorize(call(key="k1"))

    assert outcome.kind is OutcomeKind.SUCCEEDED
    assert outcome.captured
    assert again == outcome
    entries = {e["_id"]: e for e in await ledger(database)}
    assert set(entries) == {"authorize:k1", "capture:k1"}
    assert entries["authorize:k1"]["outcome"] == "authorized"
    assert entries["capture:k1"]["outcome"] == "captured"
    assert entries["capture:k1"]["amount"] == 5000


async def test_capture_on_authorize_with_lost_response(database: Database) -> None:
    sandbox = SandboxProvider(database, {"capture": True})

    first = await sandbox.authorize(call(key="k1", payment_method="pm_card_lostResponse"))
    status = await sandbox.get_status(call(key="k1"))

    assert first.kind is OutcomeKind.UNKNOWN
    assert status.kind is OutcomeKind.SUCCEEDED
    assert status.captured
    assert await database[LEDGER_COLLECTION].count_documents({"outcome": "captured"}) == 1


async def test_declined_is_not_captured(database: Database) -> None:
    sandbox = SandboxProvider(database, {"capture": True})

    outcome = await sandbox.authorize(call(payment_method="pm_card_chargeDeclined"))

    assert outcome.kind is OutcomeKind.DECLINED
    assert await database[LEDGER_COLLECTION].count_documents({"operation": "capture"}) == 0


# -- get_status ----------------------------------------------------------------------------


async def test_status_of_an_unrecorded_call_is_transient(sandbox: SandboxProvider) -> None:
    operations: tuple[CallOperation, ...] = ("authorize", "capture", "refund", "cancel", "initiate")
    for operation in operations:
        outcome = await sandbox.get_status(call(operation, payment_id="pay_1"))
        assert outcome.kind is OutcomeKind.TRANSIENT, operation


async def test_status_of_a_decline(sandbox: SandboxProvider) -> None:
    await sandbox.authorize(call(key="k1", payment_method="pm_card_chargeDeclined"))

    status = await sandbox.get_status(call(key="k1"))

    assert status.kind is OutcomeKind.DECLINED
    assert status.code == "card_declined"


# -- fault injection -----------------------------------------------------------------------


async def test_fail_rate_one_never_acts(database: Database) -> None:
    sandbox = SandboxProvider(database, {"fail_rate": 1.0})

    outcome = await sandbox.authorize(call())

    assert outcome.kind is OutcomeKind.TRANSIENT
    assert await ledger(database) == []


async def test_lose_rate_one_acts_but_answers_unknown(database: Database) -> None:
    sandbox = SandboxProvider(database, {"lose_rate": 1.0})

    outcome = await sandbox.capture(call("capture", key="cap_1", payment_id="pay_1"))

    assert outcome.kind is OutcomeKind.UNKNOWN
    assert (await sandbox.get_status(call("capture", key="cap_1", payment_id="pay_1"))).kind is (
        OutcomeKind.SUCCEEDED
    )
    assert len(await ledger(database)) == 1


async def test_seeded_faults_are_reproducible(database: Database) -> None:
    options = {"fail_rate": 0.5, "seed": 7}
    runs = []
    for _ in range(2):
        sandbox = SandboxProvider(database, options)
        runs.append([(await sandbox.initiate(call("initiate"))).kind for _ in range(20)])

    assert runs[0] == runs[1]
    assert {OutcomeKind.TRANSIENT, OutcomeKind.SUCCEEDED} <= set(runs[0])


async def test_delay(database: Database) -> None:
    sandbox = SandboxProvider(database, {"delay_s": 0.2})
    loop = asyncio.get_running_loop()

    started = loop.time()
    await sandbox.initiate(call("initiate"))

    assert loop.time() - started >= 0.2


# -- session calls and webhooks ------------------------------------------------------------


async def test_session_calls_succeed_without_ledger_entries(
    sandbox: SandboxProvider, database: Database
) -> None:
    initiated = await sandbox.initiate(call("initiate", key="ps_1:initiate"))
    updated = await sandbox.update(call("update", amount=7000))
    deleted = await sandbox.delete(call("delete"))

    assert initiated.kind is OutcomeKind.SUCCEEDED
    assert initiated.data["id"].startswith("sbx_pi_")
    assert updated.data["amount"] == 7000
    assert deleted.kind is OutcomeKind.SUCCEEDED
    assert await sandbox.list_payment_methods("cus_1") == []
    assert await ledger(database) == []


def test_sandbox_has_no_webhooks(sandbox: SandboxProvider) -> None:
    from service.ports.providers import WebhookVerificationError

    with pytest.raises(WebhookVerificationError):
        sandbox.verify_webhook({}, b"{}", datetime.now())
    assert sandbox.interpret_webhook({}, "{}") is None


# -- registry ------------------------------------------------------------------------------


def settings(**values: Any) -> Settings:
    return Settings(**values)


async def installed(database: Database) -> dict[str, bool]:
    return {
        doc["_id"]: bool(doc["is_installed"])
        async for doc in database[PROVIDERS_COLLECTION].find({})
    }


async def test_registry_builds_the_configured_providers(database: Database) -> None:
    registry = ProviderRegistry(
        settings(
            providers=["manual", "sandbox"],
            provider_options={"sandbox": {"capture": True}},
        ),
        database,
    )

    manual, sandbox = registry.get("manual"), registry.get("sandbox")
    assert isinstance(manual, ManualProvider)
    assert isinstance(sandbox, SandboxProvider)
    assert isinstance(sandbox, PaymentProvider)
    assert sandbox.capture_on_authorize
    assert not manual.capture_on_authorize
    assert registry.get("stripe") is None
    assert registry.ids == ("manual", "sandbox")
    await registry.close()


async def test_registry_records_installed_and_uninstalled_providers(database: Database) -> None:
    await ProviderRegistry(settings(providers=["manual", "sandbox"]), database).record_installed()
    assert await installed(database) == {"manual": True, "sandbox": True}
    first = await database[PROVIDERS_COLLECTION].find_one({"_id": "sandbox"})

    await ProviderRegistry(settings(providers=["manual"]), database).record_installed()
    assert await installed(database) == {"manual": True, "sandbox": False}
    second = await database[PROVIDERS_COLLECTION].find_one({"_id": "sandbox"})
    assert first is not None and second is not None
    assert second["is_installed"] is False
    assert second["created_at"] == first["created_at"]
    assert second["updated_at"] >= first["updated_at"]

    await ProviderRegistry(settings(providers=["sandbox", "manual"]), database).record_installed()
    assert await installed(database) == {"manual": True, "sandbox": True}


def test_registry_rejects_an_unknown_provider(database: Database) -> None:
    with pytest.raises(UnknownProviderError, match=r"PAYMENTS_PROVIDERS.*'paypal'"):
        ProviderRegistry(settings(providers=["manual", "paypal"]), database)


def test_registry_rejects_bad_options(database: Database) -> None:
    with pytest.raises(ProviderConfigError, match=r"PAYMENTS_PROVIDER_OPTIONS.*sandbox\.capture"):
        ProviderRegistry(
            settings(providers=["sandbox"], provider_options={"sandbox": {"capture": "yes"}}),
            database,
        )


def test_registry_factory_table_is_extensible(database: Database) -> None:
    class Other(ManualProvider):
        def __init__(self) -> None:
            super().__init__({})
            self.id = "other"

    factories = {**PROVIDER_FACTORIES, "other": lambda options, db: Other()}
    registry = ProviderRegistry(settings(providers=["other"]), database, factories=factories)

    assert isinstance(registry.get("other"), Other)


def test_registry_region_enablement(database: Database) -> None:
    registry = ProviderRegistry(
        settings(
            providers=["manual", "sandbox"],
            region_providers={"reg_eu": ["sandbox"], "reg_none": []},
        ),
        database,
    )

    assert registry.enabled_for_region("reg_eu") == ("sandbox",)
    assert registry.enabled_for_region("reg_us") == ("manual", "sandbox")
    assert registry.enabled_for_region("reg_none") == ()
    assert registry.is_enabled("sandbox", "reg_eu")
    assert not registry.is_enabled("manual", "reg_eu")
