"""Payment provider adapters: `manual`, `sandbox` and the registry that builds them."""

from .manual import MANUAL_PROVIDER_ID, ManualProvider
from .options import ProviderConfigError
from .registry import (
    PROVIDER_FACTORIES,
    PROVIDERS_COLLECTION,
    ProviderFactory,
    ProviderRegistry,
    UnknownProviderError,
    register_provider_factory,
)
from .sandbox import (
    IDEMPOTENCY_KEY_REUSE,
    LEDGER_COLLECTION,
    PAYMENT_METHODS,
    SANDBOX_PROVIDER_ID,
    STATE_COLLECTION,
    SandboxProvider,
)

__all__ = [
    "IDEMPOTENCY_KEY_REUSE",
    "LEDGER_COLLECTION",
    "MANUAL_PROVIDER_ID",
    "PAYMENT_METHODS",
    "PROVIDERS_COLLECTION",
    "PROVIDER_FACTORIES",
    "SANDBOX_PROVIDER_ID",
    "STATE_COLLECTION",
    "ManualProvider",
    "ProviderConfigError",
    "ProviderFactory",
    "ProviderRegistry",
    "SandboxProvider",
    "UnknownProviderError",
    "register_provider_factory",
]
