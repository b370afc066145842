"""The sandbox provider's MongoDB commands per operation (issue 15).

Counted with PyMongo's command monitoring against the real MongoDB-protocol
server: a capture, refund or cancel is one insert of its ledger entry (a
repeated call reads it back), an authorization its key's claim and its ledger
entry; and the answers stay those of an idempotent provider (the repeated call
answers the same, other parameters under the key are refused).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from service.adapters.providers import IDEMPOTENCY_KEY_REUSE, LEDGER_COLLECTION, SandboxProvider
from service.domain.calls import CallOperation, ProviderCall
from service.domain.outcomes import OutcomeKind
from service.testing.builders import new_id
from tests.integration.test_store_batch_commands import Commands
from tests.support.call_builders import provider_call

pytestmark = pytest.mark.integration


@pytest.fixture
async def counted(mongodb_url: str) -> AsyncIterator[tuple[SandboxProvider, Commands, Any]]:
    commands = Commands()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        mongodb_url, tz_aware=True, event_listeners=[commands]
    )
    name = new_id("sandbox_commands")
    database = client[name]
    try:
        yield SandboxProvider(database), commands, database
    finally:
        await client.drop_database(name)
        await client.close()


def _call(operation: CallOperation, key: str, amount: int = 2000) -> ProviderCall:
    return provider_call(operation, "sandbox", key, amount, payment_id="pay_1")


@pytest.mark.parametrize("operation", ["capture", "refund", "cancel"])
async def test_a_bookkeeping_operation_is_one_insert(
    counted: tuple[SandboxProvider, Commands, Any], operation: CallOperation
) -> None:
    sandbox, commands, database = counted
    method = getattr(sandbox, operation)

    first = await method(_call(operation, "cmd_1"))
    assert commands.names == ["insert"]

    commands.names.clear()
    again = await method(_call(operation, "cmd_1"))
    assert commands.names == ["insert", "find"]  # the duplicate key, then the stored entry
    refused = await method(_call(operation, "cmd_1", amount=2500))

    assert first.kind is OutcomeKind.SUCCEEDED and again == first
    if operation != "cancel":  # a cancel's key is not bound to an amount
        assert refused.code == IDEMPOTENCY_KEY_REUSE
    assert await database[LEDGER_COLLECTION].count_documents({}) == 1


async def test_an_authorization_is_its_claim_and_its_ledger_entry(
    counted: tuple[SandboxProvider, Commands, Any],
) -> None:
    sandbox, commands, database = counted

    first = await sandbox.authorize(_call("authorize", "auth_1", 5000))
    assert commands.names == ["insert", "insert"]

    commands.names.clear()
    again = await sandbox.authorize(_call("authorize", "auth_1", 5000))
    refused = await sandbox.authorize(_call("authorize", "auth_1", 6000))

    assert first.kind is OutcomeKind.SUCCEEDED and again == first
    assert refused.code == IDEMPOTENCY_KEY_REUSE
    assert await database[LEDGER_COLLECTION].count_documents({"operation": "authorize"}) == 1
