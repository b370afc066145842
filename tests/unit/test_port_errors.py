"""No driver exception leaves an adapter: the ports speak in their own errors.

After httpx's "every exception is mapped" tests: each public method of each adapter
is called over a driver that raises, in turn, every exception class the driver
defines, and only the port's errors may come out. A new public method without an
entry here fails `test_every_public_method_is_exercised`.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import aiokafka.errors
import bson.errors
import pymongo.errors
import pytest

from service.adapters.kafka_publisher import KafkaEventPublisher
from service.adapters.mongo_store import MongoCollectionStore, MongoStoreBatch
from service.adapters.providers.sandbox import SandboxProvider
from service.domain.calls import ProviderCall
from service.domain.events import outbox_entry
from service.domain.model import PaymentCollection
from service.ports.providers import ProviderUnavailable
from service.ports.publisher import PublisherUnavailable
from service.ports.store import (
    ConcurrencyConflict,
    OrphanOutcome,
    StoreError,
    StoreUnavailable,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _subclasses(base: type[BaseException], module: Any) -> list[type[BaseException]]:
    return sorted(
        (cls for cls in vars(module).values() if isinstance(cls, type) and issubclass(cls, base)),
        key=lambda cls: cls.__name__,
    )


def _instance(cls: type[BaseException]) -> BaseException:
    """An instance of a driver's exception class, whatever its constructor wants."""
    for args in (("injected",), ({"writeErrors": []},), ("injected", 1, {}), ()):
        try:
            return cls(*args)
        except Exception:  # each driver class has its own constructor
            continue
    built = cls.__new__(cls)  # a constructor wanting driver internals: built bare
    built.args = ("injected",)
    return built


MONGO_ERRORS = _subclasses(pymongo.errors.PyMongoError, pymongo.errors) + _subclasses(
    bson.errors.BSONError, bson.errors
)
KAFKA_ERRORS = _subclasses(aiokafka.errors.KafkaError, aiokafka.errors)


class Raising:
    """A driver object every attribute of which raises `error` when called (or
    awaited, or iterated): a database, its collections, their cursors."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def __getattr__(self, name: str) -> Any:
        return self

    def __getitem__(self, name: str) -> Raising:
        return self

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise self.error

    def __aiter__(self) -> Iterator[Any]:
        raise self.error


def _collection() -> PaymentCollection:
    return PaymentCollection.for_cart("cart_1", "eu", "usd", 100, NOW)


def _call() -> ProviderCall:
    return ProviderCall(
        operation="authorize",
        provider_id="sandbox",
        idempotency_key="k",
        session_id="s",
        amount=100,
        currency_code="usd",
        cart_id="cart_1",
    )


STORE_CALLS: dict[str, Callable[[Any], Any]] = {
    "create_indexes": lambda s: s.create_indexes(),
    "load": lambda s: s.load("c"),
    "load_by_cart": lambda s: s.load_by_cart("c"),
    "load_by_payment": lambda s: s.load_by_payment("p"),
    "save": lambda s: s.save(_collection(), 3),
    "mark_sent": lambda s: s.mark_sent([(_collection(), 1)]),
    "pending_outbox": lambda s: s.pending_outbox(10),
    "needing_reconcile": lambda s: s.needing_reconcile(NOW, 10),
    "counts": lambda s: s.counts(NOW),
    "payments_active_since": lambda s: s.payments_active_since(NOW, "c", 10),
    "claim_command": lambda s: s.claim_command("cmd", "f"),
    "save_orphan": lambda s: s.save_orphan(
        OrphanOutcome(
            "cmd",
            [
                outbox_entry(
                    {"id": "e", "type": "payment.failed"}, key="k", causation_id="cmd", now=NOW
                )
            ],
        )
    ),
    "orphan": lambda s: s.orphan("cmd"),
    "mark_orphan_sent": lambda s: s.mark_orphan_sent("cmd"),
    "pending_orphans": lambda s: s.pending_orphans(10),
    "prefetch_by_cart": lambda s: s.prefetch_by_cart(["a", "b"]),
    "prefetch_by_payment": lambda s: s.prefetch_by_payment(["a", "b"]),
    "prefetch_commands": lambda s: s.prefetch_commands([("cmd", "f")]),
}

PROVIDER_CALLS: dict[str, Callable[[SandboxProvider], Any]] = {
    name: (lambda method: lambda p: getattr(p, method)(_call()))(name)
    for name in (
        "initiate",
        "update",
        "update_data",
        "delete",
        "retrieve",
        "payment_data",
        "authorize",
        "capture",
        "refund",
        "cancel",
        "get_status",
        "read_objects",
    )
} | {"list_payment_methods": lambda p: p.list_payment_methods("cus_1")}


def _public_async(cls: type) -> set[str]:
    return {
        name
        for name, member in inspect.getmembers(cls, inspect.iscoroutinefunction)
        if not name.startswith("_")
    }


def test_every_public_method_is_exercised() -> None:
    assert _public_async(MongoStoreBatch) == set(STORE_CALLS)
    assert _public_async(SandboxProvider) - {"close", "resolve_webhook"} == set(PROVIDER_CALLS)


def test_the_drivers_define_errors_to_map() -> None:
    assert len(MONGO_ERRORS) > 20 and len(KAFKA_ERRORS) > 30


@pytest.mark.parametrize("error", MONGO_ERRORS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("method", sorted(STORE_CALLS))
@pytest.mark.parametrize("view", [MongoCollectionStore, MongoStoreBatch], ids=["store", "batch"])
async def test_the_store_speaks_in_port_errors(
    view: type[MongoCollectionStore], method: str, error: type[BaseException]
) -> None:
    store = MongoCollectionStore(Raising(_instance(error)))  # type: ignore[arg-type]
    target = store if view is MongoCollectionStore else MongoStoreBatch(store)
    if not hasattr(target, method):
        return  # the store's own methods only; its batch's are exercised with the batch
    try:
        await STORE_CALLS[method](target)
    except (StoreUnavailable, StoreError, ConcurrencyConflict) as raised:
        if issubclass(error, pymongo.errors.ConnectionFailure):
            assert isinstance(raised, StoreUnavailable), raised
    # Some methods contain an error on purpose (a prefetch, a duplicate key): fine.


@pytest.mark.parametrize("error", MONGO_ERRORS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("method", sorted(PROVIDER_CALLS))
async def test_the_sandbox_speaks_in_port_errors(method: str, error: type[BaseException]) -> None:
    provider = SandboxProvider(Raising(_instance(error)), {})  # type: ignore[arg-type]
    with contextlib.suppress(ProviderUnavailable):
        await PROVIDER_CALLS[method](provider)


class RaisingBroker:
    def __init__(self, error: BaseException, *, on_send: bool) -> None:
        self.error = error
        self.on_send = on_send

    async def publish(self, *args: Any, **kwargs: Any) -> Any:
        if self.on_send:
            raise self.error
        future: Any = __import__("asyncio").get_running_loop().create_future()
        future.set_exception(self.error)
        return future


@pytest.mark.parametrize("on_send", [True, False], ids=["at-send", "at-ack"])
@pytest.mark.parametrize("error", [*KAFKA_ERRORS, TimeoutError, OSError], ids=lambda c: c.__name__)
async def test_the_publisher_speaks_in_port_errors(
    error: type[BaseException], on_send: bool
) -> None:
    publisher = KafkaEventPublisher(RaisingBroker(_instance(error), on_send=on_send), "p.")  # type: ignore[arg-type]
    event = outbox_entry({"id": "e", "type": "payment.failed"}, key="k", causation_id="c", now=NOW)
    with pytest.raises(PublisherUnavailable):  # EventsRefused is one
        await publisher.publish([event])
