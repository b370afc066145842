"""Driver errors stop at the adapters: each adapter maps them to its port's errors.

An unreachable server (PyMongo's `ConnectionFailure`: connection refused or lost,
timeouts, no server selectable) is the port's *unavailable* error, an outage the
service waits out; any other driver error (`PyMongoError`, or BSON refusing a
document) is the port's *failed* error. The Kafka publisher maps aiokafka's and
FastStream's likewise (`kafka_publisher.py`). `tests/unit/test_port_errors.py` checks
that no driver exception leaves an adapter.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

from bson.errors import BSONError
from pymongo.errors import ConnectionFailure, PyMongoError

from service.ports.providers import ProviderUnavailable
from service.ports.store import StoreError, StoreUnavailable

P = ParamSpec("P")
R = TypeVar("R")
AsyncMethod = Callable[P, Coroutine[Any, Any, R]]


def describe(exc: BaseException) -> str:
    """`Type: message` of a driver's exception, even one whose `__str__` fails (some
    of aiokafka's base classes read attributes only their subclasses set)."""
    try:
        return f"{type(exc).__name__}: {exc}"
    except Exception:
        return type(exc).__name__


def mapping(
    unavailable: type[Exception], failed: type[Exception]
) -> Callable[[AsyncMethod[P, R]], AsyncMethod[P, R]]:
    """A decorator for an adapter's async methods: driver errors become port errors."""

    def decorate(
        method: AsyncMethod[P, R],
    ) -> AsyncMethod[P, R]:
        @functools.wraps(method)
        async def mapped(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return await method(*args, **kwargs)
            except ConnectionFailure as exc:
                raise unavailable(describe(exc)) from exc
            except (PyMongoError, BSONError) as exc:
                raise failed(describe(exc)) from exc

        return mapped

    return decorate


def store_errors(
    method: AsyncMethod[P, R],
) -> AsyncMethod[P, R]:
    """For the store adapter: :class:`StoreUnavailable`, else :class:`StoreError`."""
    return mapping(StoreUnavailable, StoreError)(method)


def provider_errors(
    method: AsyncMethod[P, R],
) -> AsyncMethod[P, R]:
    """For a provider kept in MongoDB (the sandbox): :class:`ProviderUnavailable`."""
    return mapping(ProviderUnavailable, ProviderUnavailable)(method)
