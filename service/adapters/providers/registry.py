"""The installed payment providers, built once from the settings.

Like Medusa's payment module, the installed providers are also written to a
`payment_providers` collection (one document per provider, `is_installed`), so
ops tools and the data itself say which providers existed when; a provider taken
out of `PAYMENTS_PROVIDERS` keeps its document with `is_installed: false`, because
its sessions and payments still refer to it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from service.adapters.driver_errors import store_errors
from service.ports.providers import PaymentProvider
from service.settings import Settings

from .manual import MANUAL_PROVIDER_ID, ManualProvider
from .options import ProviderConfigError
from .sandbox import SANDBOX_PROVIDER_ID, SandboxProvider

PROVIDERS_COLLECTION = "payment_providers"

ProviderFactory = Callable[[Mapping[str, Any], AsyncDatabase[dict[str, Any]]], PaymentProvider]
"""Builds a provider from its options and the service's database.

Factories run at start-up in plain (synchronous) code: they must not do I/O;
connect lazily on the first call instead.
"""


def _manual(options: Mapping[str, Any], database: AsyncDatabase[dict[str, Any]]) -> PaymentProvider:
    return ManualProvider(options)


def _sandbox(
    options: Mapping[str, Any], database: AsyncDatabase[dict[str, Any]]
) -> PaymentProvider:
    return SandboxProvider(database, options)


def _stripe(options: Mapping[str, Any], database: AsyncDatabase[dict[str, Any]]) -> PaymentProvider:
    # Imported here: the Stripe SDK is large and only needed when it is installed.
    from .stripe import StripeProvider

    return StripeProvider(options)


PROVIDER_FACTORIES: dict[str, ProviderFactory] = {
    MANUAL_PROVIDER_ID: _manual,
    SANDBOX_PROVIDER_ID: _sandbox,
    "stripe": _stripe,
}
"""Provider id → factory. Add a provider with :func:`register_provider_factory`."""


def register_provider_factory(
    provider_id: str, factory: ProviderFactory, *, replace: bool = False
) -> None:
    if provider_id in PROVIDER_FACTORIES and not replace:
        raise ValueError(f"a factory for provider {provider_id!r} is already registered")
    PROVIDER_FACTORIES[provider_id] = factory


class UnknownProviderError(ProviderConfigError):
    """`PAYMENTS_PROVIDERS` names a provider this build does not have."""


class ProviderRegistry:
    """The providers of `settings.providers`, in installation order."""

    def __init__(
        self,
        settings: Settings,
        database: AsyncDatabase[dict[str, Any]],
        *,
        factories: Mapping[str, ProviderFactory] | None = None,
    ) -> None:
        table = PROVIDER_FACTORIES if factories is None else factories
        self._settings = settings
        self._database = database
        unknown = [p for p in settings.providers if p not in table]
        if unknown:
            raise UnknownProviderError(
                f"PAYMENTS_PROVIDERS: unknown provider id(s) {', '.join(map(repr, unknown))}; "
                f"available: {', '.join(sorted(table))}"
            )
        repeated = sorted({p for p in settings.providers if settings.providers.count(p) > 1})
        if repeated:
            raise ProviderConfigError(
                f"PAYMENTS_PROVIDERS: provider id(s) listed more than once: {', '.join(repeated)}"
            )
        providers: dict[str, PaymentProvider] = {}
        for provider_id in settings.providers:
            options = settings.provider_options.get(provider_id) or {}
            provider = table[provider_id](options, database)
            if provider.id != provider_id:
                # Sessions store the id; a mismatch would route calls to the wrong provider.
                raise ProviderConfigError(
                    f"PAYMENTS_PROVIDERS: the factory for {provider_id!r} built a provider "
                    f"with id {provider.id!r}"
                )
            providers[provider_id] = provider
        self._providers = providers

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(self._providers)

    def get(self, provider_id: str) -> PaymentProvider | None:
        return self._providers.get(provider_id)

    def __contains__(self, provider_id: object) -> bool:
        return provider_id in self._providers

    def enabled_for_region(self, region_id: str) -> tuple[str, ...]:
        return self._settings.enabled_providers(region_id)

    def is_enabled(self, provider_id: str, region_id: str) -> bool:
        return provider_id in self.enabled_for_region(region_id)

    @store_errors
    async def record_installed(self) -> None:
        """Mark the configured providers installed and the others no longer installed.

        Written with insert-or-replace rather than ``$set``: the embedded nx-27017
        server stores booleans written by ``$set`` on an existing document as 0/1.
        """
        collection = self._database[PROVIDERS_COLLECTION]
        now = datetime.now(UTC)
        for provider_id in self._providers:
            await self._write(provider_id, True, now)
        async for document in collection.find({}):
            if document["_id"] not in self._providers and document.get("is_installed"):
                await self._write(document["_id"], False, now)

    async def _write(self, provider_id: str, installed: bool, now: datetime) -> None:
        collection = self._database[PROVIDERS_COLLECTION]
        try:
            await collection.insert_one(
                {
                    "_id": provider_id,
                    "is_installed": installed,
                    "created_at": now,
                    "updated_at": now,
                }
            )
        except DuplicateKeyError:
            existing = await collection.find_one({"_id": provider_id}) or {}
            existing.pop("_id", None)
            await collection.replace_one(
                {"_id": provider_id},
                {**existing, "is_installed": installed, "updated_at": now},
            )

    async def close(self) -> None:
        # Close every provider even if one fails, then report the first failure.
        error: BaseException | None = None
        for provider in self._providers.values():
            try:
                await provider.close()
            except Exception as exc:
                error = error or exc
        if error is not None:
            raise error
