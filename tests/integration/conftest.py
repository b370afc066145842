"""Fixtures shared by the integration tests (the session's servers are in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.localstripe import LocalStripe


@pytest.fixture(scope="module")
def localstripe() -> Iterator[LocalStripe]:
    """A localstripe server for the module's tests (Stripe's API, in memory)."""
    with LocalStripe() as server:
        yield server
