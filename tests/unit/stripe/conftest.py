"""The Stripe adapter's unit tests run it over FaithfulStripe (Stripe's documented
behaviour, in process), scripted per test; `provider` is the adapter as a merchant
configures it by default, `multicapture` the same with multicapture on."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.fixtures.stripe.faithful import FaithfulStripe, stripe_provider
from tests.fixtures.stripe.kit import ScriptedStripe


@pytest.fixture
def scripted() -> ScriptedStripe:
    return ScriptedStripe()


@pytest.fixture
def stripe(scripted: ScriptedStripe) -> FaithfulStripe:
    return FaithfulStripe.serve(scripted)


@pytest.fixture
async def provider(scripted: ScriptedStripe, stripe: FaithfulStripe) -> AsyncIterator[Any]:
    built = stripe_provider(scripted)
    yield built
    await built.close()


@pytest.fixture
async def multicapture(scripted: ScriptedStripe, stripe: FaithfulStripe) -> AsyncIterator[Any]:
    built = stripe_provider(scripted, multicapture=True)
    yield built
    await built.close()
