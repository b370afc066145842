"""Configuration from `PAYMENTS_*` environment variables (contract section 8).

Invalid settings stop start-up with a message that names the variable:
:func:`load_settings` turns pydantic's errors into :class:`SettingsError`.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ENV_PREFIX = "PAYMENTS_"


class SettingsError(Exception):
    """The environment holds an invalid setting; the message names the variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    kafka_bootstrap_servers: str | None = None
    """Comma-separated `host:port` list. Unset (with MongoDB unset too) means
    `payments run` starts the embedded broker and MongoDB-protocol server."""
    mongodb_url: SecretStr | None = None
    """May carry credentials and TLS options, so it never prints."""
    mongodb_database: str = "payments"
    topic_prefix: str = ""
    consumer_group: str = "payments-service"
    topic_partitions: int = Field(default=8, ge=1, le=1024)
    """Partitions for topics the service creates (embedded or auto-create)."""
    create_topics: bool = True

    providers: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["manual", "sandbox"])
    region_providers: dict[str, list[str]] = Field(default_factory=dict)
    provider_options: dict[str, dict[str, Any]] = Field(default_factory=dict)

    http_host: str = "0.0.0.0"
    http_port: int = Field(default=8080, ge=0, le=65535)

    admin_keys: dict[str, SecretStr] = Field(default_factory=dict)
    admin_signature_required: bool = True
    """Admin commands move money; turning the check off is for development only."""

    provider_timeout_s: float = Field(default=10.0, gt=0)
    provider_max_attempts: int = Field(default=4, ge=1, le=20)
    retry_base_delay_s: float = Field(default=0.05, ge=0)
    retry_max_delay_s: float = Field(default=2.0, ge=0)
    processing_max_attempts: int = Field(default=3, ge=1, le=20)
    """Attempts for an unexpected exception before the message is dead-lettered."""

    batch_max_records: int = Field(default=500, ge=1, le=100_000)
    batch_timeout_ms: int = Field(default=50, ge=1)
    max_concurrency: int = Field(default=256, ge=1)
    """Carts processed at once within one batch."""
    relay_interval_s: float = Field(default=2.0, gt=0)
    reconcile_interval_s: float = Field(default=5.0, gt=0)
    reconcile_min_age_s: float = Field(default=5.0, ge=0)
    """A session or reserved operation younger than this is left to its handler."""

    embedded_data_dir: str = ".data"
    log_level: str = "INFO"

    @field_validator("providers", mode="before")
    @classmethod
    def _split_providers(cls, value: object) -> object:
        if isinstance(value, str):
            return [p.strip() for p in value.split(",") if p.strip()]
        return value

    @field_validator("providers")
    @classmethod
    def _known_ids(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one provider must be installed")
        return value

    @property
    def uses_embedded(self) -> bool:
        return self.kafka_bootstrap_servers is None and self.mongodb_url is None

    def topic(self, event_type: str) -> str:
        from schemas.topics import topic_for

        return topic_for(event_type, self.topic_prefix)

    def enabled_providers(self, region_id: str) -> tuple[str, ...]:
        """Providers installed and enabled in `region_id`, in installation order.

        A region not listed in `PAYMENTS_REGION_PROVIDERS` gets every installed one.
        """
        if region_id not in self.region_providers:
            return tuple(self.providers)
        enabled = set(self.region_providers[region_id])
        return tuple(p for p in self.providers if p in enabled)


def load_settings(**overrides: Any) -> Settings:
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else "?"
            lines.append(f"{ENV_PREFIX}{field.upper()}: {error['msg']}")
        raise SettingsError("invalid settings:\n  " + "\n  ".join(lines)) from exc
