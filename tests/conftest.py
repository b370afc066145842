"""Shared fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from service.testing.infrastructure import (
    TestInfrastructure,
    ensure_contract_topics,
    ensure_contract_topics_sync,
    infrastructure_report,
    provide_test_infrastructure,
    unique_database_name,
    unique_topic_prefix,
)
from tests.support.real_servers import offer_real_servers

# `PAYMENTS_TEST_INFRA=kafka-jvm` / `ferretdb` (make test-real): servers this
# repository builds from tools/, so its suite offers them, not the runtime package.
offer_real_servers()

# --------------------------------------------------------------------------------------
# Infrastructure: one Kafka and one MongoDB per session (see service.testing.infrastructure
# for how they are chosen); tests isolate by topic prefix and database name.
# --------------------------------------------------------------------------------------


def pytest_report_header() -> list[str]:
    # Which broker and MongoDB-protocol server (and versions) this run proves things on.
    return infrastructure_report()


@pytest.fixture(scope="session")
def infrastructure() -> Iterator[TestInfrastructure]:
    with provide_test_infrastructure() as infra:
        ensure_contract_topics_sync(infra.kafka_bootstrap)
        yield infra


@pytest.fixture(scope="session")
def kafka_bootstrap(infrastructure: TestInfrastructure) -> str:
    return infrastructure.kafka_bootstrap


@pytest.fixture(scope="session")
def mongodb_url(infrastructure: TestInfrastructure) -> str:
    return infrastructure.mongodb_url


@pytest.fixture
def unique_prefix() -> str:
    return unique_topic_prefix()


@pytest.fixture
async def prefixed_topics(kafka_bootstrap: str, unique_prefix: str) -> str:
    """Create every contract topic under ``unique_prefix`` and return the prefix."""
    await ensure_contract_topics(kafka_bootstrap, unique_prefix)
    return unique_prefix


@pytest.fixture
def database_name() -> str:
    return unique_database_name()


# --------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def payments_infrastructure(infrastructure: TestInfrastructure) -> TestInfrastructure:
    """The `payments` pytest plugin's fixture, served from this session's servers.

    Downstream suites get theirs from the plugin; here it must not start a second pair.
    """
    return infrastructure
