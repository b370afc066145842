"""Shared fixtures, markers and Hypothesis profiles (docs/contribute/testing.md)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest
from hypothesis import HealthCheck, settings

from service.testing.harness import ServiceHarness
from service.testing.infrastructure import (
    TestInfrastructure,
    ensure_contract_topics,
    ensure_contract_topics_sync,
    infrastructure_report,
    provide_test_infrastructure,
    unique_database_name,
    unique_topic_prefix,
)
from service.testing.pool import HarnessPool
from tests.support.real_servers import offer_real_servers

# `PAYMENTS_TEST_INFRA=kafka-jvm` / `ferretdb` (make test-real): servers this
# repository builds from tools/, so its suite offers them, not the runtime package.
offer_real_servers()

# --------------------------------------------------------------------------------------
# Hypothesis: example counts come from a profile, never from a test. `dev` (the
# default) is quick and random, `ci` (.ci/run) is derandomized so a red CI run is
# a reproducible one, `prove` (`make prove`, `make fuzz`) runs long.
# `HYPOTHESIS_PROFILE=prove make test ARGS=tests/unit` or `--hypothesis-profile=prove`.
# --------------------------------------------------------------------------------------

_QUIET = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example]
settings.register_profile("dev", max_examples=40, deadline=None, suppress_health_check=_QUIET)
settings.register_profile(
    "ci",
    max_examples=100,
    deadline=None,
    derandomize=True,
    print_blob=True,
    suppress_health_check=_QUIET,
)
settings.register_profile("prove", max_examples=2000, deadline=None, suppress_health_check=_QUIET)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

# --------------------------------------------------------------------------------------
# Markers
# --------------------------------------------------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    for line in (
        "harness(**options): the `harness` fixture's ServiceHarness options (settings, "
        "mode, start_service); tests with equal options share one started harness per "
        "module; own=True gives the test a harness of its own",
        "packaging: builds the wheel or installs the project (once per CI run)",
        "store: proves store semantics (the FerretDB pass of `make test-real` runs these)",
    ):
        config.addinivalue_line("markers", line)


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


# --------------------------------------------------------------------------------------
# The service under test: one started harness per module and settings profile
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def harness_pool(kafka_bootstrap: str, mongodb_url: str) -> AsyncIterator[HarnessPool]:
    """The module's started harnesses, one per distinct `harness` marker."""
    pool = HarnessPool(kafka_bootstrap, mongodb_url)
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture
async def harness(
    request: pytest.FixtureRequest,
    harness_pool: HarnessPool,
    kafka_bootstrap: str,
    mongodb_url: str,
) -> AsyncIterator[ServiceHarness]:
    """A started `ServiceHarness`, configured by the closest `harness` marker.

    Shared by every test of the module with the same options (a group join per
    module, not per test): such tests use their own carts and ids. With
    ``own=True`` the test gets a harness of its own (it stops or reconfigures
    the service, or reads whole topics).
    """
    marker = request.node.get_closest_marker("harness")
    options = dict(marker.kwargs) if marker is not None else {}
    if options.pop("own", False):
        async with ServiceHarness(kafka_bootstrap, mongodb_url, **options) as own:
            yield own
        return
    yield await harness_pool.get(**options)
