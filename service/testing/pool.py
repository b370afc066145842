"""Started harnesses shared by the tests that ask for the same settings.

Starting a `ServiceHarness` costs a consumer-group join (seconds on Tansu), so a
suite should not pay it per test. A pool keeps one started harness per settings
profile and hands it to every test that asks for that profile; the owner (a
module- or session-scoped fixture) stops them all at the end:

    pool = HarnessPool(kafka_bootstrap, mongodb_url)
    harness = await pool.get(region_providers={"eu": ["sandbox"]})
    ...
    await pool.close()

Tests that share a harness share its topics and database, so each must use its
own carts and ids (``builders.new_cart_id()``) and look only at its own events
(``harness.events(..., cart_id=...)``). A test that stops the service or changes
it mid-test needs a harness of its own. A shared harness whose service no longer
runs (a test stopped it, or it crashed) is replaced on the next `get`.
"""

from __future__ import annotations

from typing import Any

from service.testing.harness import ServiceHarness

__all__ = ["HarnessPool", "profile_key"]


def profile_key(options: dict[str, Any]) -> str:
    """A stable key for harness options (settings may hold dicts and lists)."""
    return repr(sorted((name, _freeze(value)) for name, value in options.items()))


def _freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple(sorted((str(k), _freeze(v)) for k, v in value.items()))
    if isinstance(value, list | tuple | set | frozenset):
        items = [_freeze(v) for v in value]
        return tuple(sorted(items, key=repr) if isinstance(value, set | frozenset) else items)
    return value


class HarnessPool:
    """One started `ServiceHarness` per distinct set of options, until `close()`."""

    def __init__(self, kafka_bootstrap: str, mongodb_url: str) -> None:
        self.kafka_bootstrap = kafka_bootstrap
        self.mongodb_url = mongodb_url
        self._harnesses: dict[str, ServiceHarness] = {}
        self.started = 0
        """How many harnesses this pool started (replacements included)."""

    async def get(self, **options: Any) -> ServiceHarness:
        """The started harness for `options` (`ServiceHarness` keyword arguments)."""
        key = profile_key(options)
        harness = self._harnesses.get(key)
        if harness is not None and not _service_alive(harness):
            del self._harnesses[key]
            await harness.stop()
            harness = None
        if harness is None:
            harness = ServiceHarness(self.kafka_bootstrap, self.mongodb_url, **options)
            await harness.start()
            self.started += 1
            self._harnesses[key] = harness
        return harness

    async def discard(self, harness: ServiceHarness) -> None:
        """Stop `harness` and forget it (the next `get` for its options starts another)."""
        for key, pooled in list(self._harnesses.items()):
            if pooled is harness:
                del self._harnesses[key]
        await harness.stop()

    async def close(self) -> None:
        harnesses, self._harnesses = list(self._harnesses.values()), {}
        for harness in harnesses:
            await harness.stop()


def _service_alive(harness: ServiceHarness) -> bool:
    if not harness.start_service:
        return True
    if harness.mode == "subprocess":
        return harness.process is not None and bool(harness.process.running)
    return harness.app is not None
