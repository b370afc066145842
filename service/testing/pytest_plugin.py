"""pytest fixtures for suites that test against the payments service.

Installed with the package and registered as the `payments` pytest plugin (entry
point `pytest11`), so a downstream suite only needs `payments-service[embedded]`
and pytest-asyncio installed:

* `payments_infrastructure` (session): Kafka and MongoDB addresses. Taken from
  `PAYMENTS_TEST_KAFKA` / `PAYMENTS_TEST_MONGODB_URL` when set, testcontainers
  with `PAYMENTS_TEST_INFRA=docker`, else embedded servers started once per
  session. Unreachable infrastructure fails the tests; it never skips them.
* `payments_service_settings`: extra service settings (override it to configure
  providers, regions, ...); default none.
* `payments_service`: a started `ServiceHarness` per test, with its own topic
  prefix and database. `--payments-harness-mode=subprocess` (or the ini option
  `payments_harness_mode`) runs `payments run` in a child process instead of
  in-process.

Importing this module starts nothing and imports little: it is loaded into every
pytest run of an environment that has the package, including ones that never use
these fixtures. Fixture names all start with `payments_` so they cannot clash
with a suite's own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from service.testing.harness import ServiceHarness
    from service.testing.infrastructure import TestInfrastructure

try:
    import pytest_asyncio

    _async_fixture: Callable[[Callable[..., Any]], Any] = pytest_asyncio.fixture
except ImportError:  # pragma: no cover - without pytest-asyncio async fixtures cannot run
    _async_fixture = pytest.fixture

MODE_OPTION = "payments_harness_mode"
MODES = ("in-process", "subprocess")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("payments", "payments service harness")
    group.addoption(
        "--payments-harness-mode",
        dest=MODE_OPTION,
        choices=MODES,
        default=None,
        help="How `payments_service` runs the service: in-process (default) or "
        "subprocess (`payments run`).",
    )
    parser.addini(MODE_OPTION, "in-process (default) or subprocess", default="in-process")


def pytest_configure(config: pytest.Config) -> None:
    # Downstream suites mark their tests over the service as the README shows;
    # registered here so they get no "unknown marker" warning.
    config.addinivalue_line(
        "markers", "integration: needs the real broker and MongoDB-protocol server"
    )


def _harness_mode(config: pytest.Config) -> str:
    mode = config.getoption(MODE_OPTION) or config.getini(MODE_OPTION) or "in-process"
    if mode not in MODES:
        raise pytest.UsageError(f"{MODE_OPTION} must be one of {', '.join(MODES)}, not {mode!r}")
    return str(mode)


@pytest.fixture(scope="session")
def payments_infrastructure() -> Iterator[TestInfrastructure]:
    """Kafka and MongoDB for the session (see the module docstring for which)."""
    from service.testing.infrastructure import provide_test_infrastructure

    with provide_test_infrastructure() as infrastructure:
        yield infrastructure


@pytest.fixture
def payments_service_settings() -> dict[str, Any]:
    """Settings for `payments_service`, as `Settings` field names; override to change."""
    return {}


@_async_fixture
async def payments_service(
    request: pytest.FixtureRequest,
    payments_infrastructure: TestInfrastructure,
    payments_service_settings: dict[str, Any],
) -> AsyncIterator[ServiceHarness]:
    """A running service with its own topics and database, stopped after the test."""
    from service.testing.harness import ServiceHarness

    harness = ServiceHarness(
        payments_infrastructure.kafka_bootstrap,
        payments_infrastructure.mongodb_url,
        mode=_harness_mode(request.config),  # type: ignore[arg-type]
        **payments_service_settings,
    )
    async with harness:
        yield harness
