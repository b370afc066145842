"""Configuration from `PAYMENTS_*` environment variables (contract section 8).

Invalid settings stop start-up with a message that names the variable:
:func:`load_settings` turns pydantic's errors into :class:`SettingsError`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from schemas.topics import topic_for
from service.observability.redaction import redact_mapping, secret_like_values

ENV_PREFIX = "PAYMENTS_"

EVENT_ARCHIVE_TTL_S = 7 * 24 * 3600.0
"""The default of `event_archive_ttl_s` (a week), also the store adapter's own."""


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
    """The database holding the payment collections, the sandbox ledger and the
    provider registry."""
    topic_prefix: str = ""
    """Put before every topic name (`prod.` → `prod.cart.updated`), the DLQ's too."""
    consumer_group: str = "payments-service"
    """The Kafka consumer group; every instance of one deployment shares it."""
    topic_partitions: int = Field(default=8, ge=1, le=1024)
    """Partitions for topics the service creates (embedded or auto-create)."""
    create_topics: bool = True
    """Create missing topics at start-up with `topic_partitions` partitions. Turn it
    off where the platform creates topics (production)."""

    providers: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["manual", "sandbox"])
    """Installed providers, comma-separated (`manual,sandbox,stripe`)."""
    region_providers: dict[str, list[str]] = Field(default_factory=dict)
    """JSON, region id → provider ids enabled there; a region not listed gets every
    installed provider."""
    provider_options: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """JSON, provider id → its options (`{"sandbox": {"capture": true}}`); each
    provider validates its own (`ManualOptions`, `SandboxOptions`, `StripeOptions`).
    Secret: may hold API keys."""

    http_host: str = "0.0.0.0"
    """Address the HTTP server listens on (health, readiness, metrics, webhooks)."""
    http_port: int = Field(default=8080, ge=0, le=65535)
    """Port of the HTTP server; 0 picks a free one (tests)."""

    admin_keys: dict[str, SecretStr] = Field(default_factory=dict)
    """JSON, key id → HMAC secret that signs admin commands (`payments-signature`)."""
    admin_signature_required: bool = True
    """Admin commands move money; turning the check off is for development only."""

    provider_timeout_s: float = Field(default=10.0, gt=0)
    """Bound on one provider call; a call that runs over is an unknown outcome,
    answered by a status query before any retry."""
    provider_max_attempts: int = Field(default=4, ge=1, le=20)
    """Attempts of one provider call on transient failures, the first included."""
    retry_base_delay_s: float = Field(default=0.05, ge=0)
    """First retry delay of provider calls and processing retries (see the max)."""
    retry_max_delay_s: float = Field(default=2.0, ge=0)
    """The backoff of provider calls and processing retries (`service/retry.py`): the
    first retry waits the base plus up to the base at random, each next one twice
    as long, at most the max."""
    outage_retry_initial_s: float = Field(default=0.5, gt=0)
    """First wait while the broker or MongoDB is unreachable (see the max)."""
    outage_retry_max_delay_s: float = Field(default=5.0, gt=0)
    """The broker or MongoDB unreachable (at start-up, or failing a whole batch): the
    first wait, doubling up to the max, so the service resumes soon after the outage."""
    processing_max_attempts: int = Field(default=3, ge=1, le=20)
    """Attempts for an unexpected exception before the message is dead-lettered."""

    kafka_session_timeout_ms: int = Field(default=10_000, ge=1_000, le=300_000)
    """How long the consumer group waits for a silent member (a crashed instance)
    before its partitions go to the others; those partitions stall meanwhile."""
    kafka_heartbeat_interval_ms: int = Field(default=3_000, ge=100, le=60_000)
    """Consumer heartbeats; keep it well below the session timeout (a third)."""

    kafka_max_request_size: int = Field(default=1_048_576, ge=256 * 1024, le=100 * 1024 * 1024)
    """The producer's largest request (`max_request_size`); dead letters are cut to
    fit well below it. Keep it at most the broker's `message.max.bytes`."""
    kafka_idempotence: bool = False
    """The idempotent producer: a producer retry can then neither duplicate nor reorder
    a record. Turn it on for Apache Kafka (the JVM test broker runs with it); the
    embedded Tansu has no idempotent producer and would fail the service's start."""
    stall_threshold: int = Field(default=5, ge=1, le=1000)
    """A batch that failed this many times in a row is reported as a stall (an error
    log line, `payments_consumer_stalled`, and `/readyz` 503 with `progressing`)."""

    batch_max_records: int = Field(default=500, ge=1, le=100_000)
    """Records fetched and handled as one batch at most."""
    batch_timeout_ms: int = Field(default=50, ge=1)
    """How long one fetch of a batch waits for records when none are buffered."""
    kafka_fetch_max_wait_ms: int = Field(default=100, ge=0, le=60_000)
    """How long the broker may hold a fetch open when it has no new records. aiokafka
    keeps one fetch in flight per broker: a partition whose records were just handled
    is asked for again only once that fetch (long-polling the other partitions)
    returns, so this bounds how long a new record can sit unseen. Lower means less
    latency and more idle polling (64 idle partitions on Tansu at 10 ms: about a
    quarter of a core for the broker and a tenth for the service); Kafka's 500 ms
    default added about 100 ms at p50 in `make bench --rate`."""
    kafka_linger_ms: int = Field(default=0, ge=0, le=1_000)
    """The producer's wait for more records before sending. A batch's events are
    handed to the producer together, so they share a request without waiting."""
    max_concurrency: int = Field(default=256, ge=1)
    """Carts processed at once within one batch."""
    relay_interval_s: float = Field(default=2.0, gt=0)
    """How often the outbox relay looks for stored events nobody published."""
    relay_min_age_s: float = Field(default=10.0, ge=0)
    """The relay leaves events younger than this to the handler that stored them:
    under load a batch may take seconds between its write and its publish, and
    re-sending then only makes duplicates (same ids, but wasted work)."""
    event_archive_ttl_s: float = Field(default=EVENT_ARCHIVE_TTL_S, ge=0)
    """How long a published event is kept after it was sent (MongoDB collection
    `sent_events`, expired by a TTL index), so that `payments republish` can send it
    again; 0 keeps none (republish then finds only events not yet sent). A
    published event leaves its payment's document at once either way."""
    reconcile_interval_s: float = Field(default=5.0, gt=0)
    """How often the reconciler looks for unknown outcomes and expired leases."""
    reconcile_min_age_s: float = Field(default=5.0, ge=0)
    """A session or reserved operation younger than this is left to its handler."""
    audit_interval_s: float = Field(default=300.0, gt=0)
    """How often the provider audit sweep runs: it re-reads, from each payment's
    provider, the objects of payments active within `PAYMENTS_AUDIT_WINDOW_S` (the
    authorization, its refunds and disputes) and applies any difference as a fact
    (a dashboard refund whose webhook never came, a dispute, an expired hold)."""
    audit_window_s: float = Field(default=30 * 24 * 3600.0, gt=0)
    """Payments whose collection changed within this many seconds are audited (default
    30 days: past Stripe's 7-day authorization expiry and the usual refund window)."""
    audit_batch: int = Field(default=100, ge=1)
    """Payments audited per pass; the sweep goes round all of them, a batch per pass."""

    embedded_data_dir: str = ".data"
    """Where `payments run` with embedded servers keeps the MongoDB file and
    `endpoints.json` (which the CLI tools read)."""
    log_level: str = "INFO"
    """`DEBUG`, `INFO`, `WARNING` or `ERROR`; per-message lines are `DEBUG`."""
    log_format: Literal["auto", "json", "console"] = "auto"
    """`auto`: human-readable on a terminal, one JSON object per line otherwise."""

    shutdown_grace_s: float = Field(default=15.0, gt=0, le=600)
    """On SIGTERM, how long the batch in flight may take to finish before it is
    abandoned (it is then re-delivered to another instance: nothing is lost)."""

    # -- tracing (off unless an endpoint is given) -------------------------------------
    otlp_endpoint: str | None = None
    """OTLP/HTTP collector, e.g. `http://otel-collector:4318` (`/v1/traces` implied)."""
    otlp_headers: SecretStr | None = None
    """`key=value,…` headers for the collector (often an API token), never printed."""
    otel_service_name: str = "payments-service"
    """`service.name` of the spans."""
    otel_sample_ratio: float = Field(default=1.0, ge=0, le=1)
    """Share of traces sampled, 0 to 1."""

    # -- Kafka client security -----------------------------------------------------------
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    """How the Kafka clients connect; SASL needs the mechanism, user and password."""
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    """SASL mechanism, with `SASL_PLAINTEXT` or `SASL_SSL`."""
    kafka_sasl_username: str | None = None
    """SASL user."""
    kafka_sasl_password: SecretStr | None = None
    """SASL password, never printed."""
    kafka_ssl_cafile: str | None = None
    """CA bundle for the brokers' certificates (default: the system's)."""
    kafka_ssl_certfile: str | None = None
    """Client certificate for mutual TLS (with `kafka_ssl_keyfile`)."""
    kafka_ssl_keyfile: str | None = None
    """Private key of the client certificate."""
    kafka_ssl_key_password: SecretStr | None = None
    """Password of that key, never printed."""
    kafka_ssl_check_hostname: bool = True
    """Check that the broker's certificate names the host connected to."""

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

    @model_validator(mode="after")
    def _kafka_security_consistent(self) -> Settings:
        """A half-configured security setup would silently connect in plaintext."""
        sasl = self.kafka_security_protocol.startswith("SASL_")
        tls = self.kafka_security_protocol.endswith("SSL")
        if sasl:
            missing = [
                f"{ENV_PREFIX}{name.upper()}"
                for name in ("kafka_sasl_mechanism", "kafka_sasl_username", "kafka_sasl_password")
                if getattr(self, name) is None
            ]
            if missing:
                raise ValueError(
                    f"{ENV_PREFIX}KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} "
                    f"needs {', '.join(missing)}"
                )
        elif self.kafka_sasl_mechanism is not None:
            raise ValueError(
                f"{ENV_PREFIX}KAFKA_SASL_MECHANISM is set but "
                f"{ENV_PREFIX}KAFKA_SECURITY_PROTOCOL is {self.kafka_security_protocol}; "
                "use SASL_PLAINTEXT or SASL_SSL"
            )
        tls_files = (self.kafka_ssl_cafile, self.kafka_ssl_certfile, self.kafka_ssl_keyfile)
        if not tls and any(tls_files):
            raise ValueError(
                f"{ENV_PREFIX}KAFKA_SSL_* files are set but "
                f"{ENV_PREFIX}KAFKA_SECURITY_PROTOCOL is {self.kafka_security_protocol}; "
                "use SSL or SASL_SSL"
            )
        if self.kafka_ssl_keyfile and not self.kafka_ssl_certfile:
            raise ValueError(f"{ENV_PREFIX}KAFKA_SSL_KEYFILE needs {ENV_PREFIX}KAFKA_SSL_CERTFILE")
        return self

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        """repr()/str() without secrets: provider options may hold API keys."""
        for name, value in super().__repr_args__():
            if name == "provider_options":
                yield name, redact_mapping(dict(value))
            else:
                yield name, value

    def secret_values(self) -> list[str]:
        """Every configured secret, for the log redactor to look for in any text."""
        values: list[str] = [v.get_secret_value() for v in self.admin_keys.values()]
        for secret in (self.kafka_sasl_password, self.kafka_ssl_key_password, self.otlp_headers):
            if secret is not None:
                values.append(secret.get_secret_value())
        if self.otlp_headers is not None:
            for item in self.otlp_headers.get_secret_value().split(","):
                values.append(item.split("=", 1)[-1].strip())
        if self.mongodb_url is not None:
            url = self.mongodb_url.get_secret_value()
            password = urlsplit(url).password if "://" in url else None
            if password:
                values.append(password)
        values.extend(secret_like_values(self.provider_options))
        return values

    def public_summary(self) -> dict[str, Any]:
        """What the service runs with, safe to log at start-up."""
        mongo_host = None
        if self.mongodb_url is not None:
            parts = urlsplit(self.mongodb_url.get_secret_value())
            mongo_host = parts.hostname and f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}"
        return {
            "kafka_bootstrap_servers": self.kafka_bootstrap_servers,
            "kafka_security_protocol": self.kafka_security_protocol,
            "kafka_sasl_mechanism": self.kafka_sasl_mechanism,
            "mongodb": mongo_host,
            "mongodb_database": self.mongodb_database,
            "topic_prefix": self.topic_prefix,
            "consumer_group": self.consumer_group,
            "providers": list(self.providers),
            "region_providers": self.region_providers,
            "provider_options": redact_mapping(dict(self.provider_options)),
            "admin_key_ids": sorted(self.admin_keys),
            "admin_signature_required": self.admin_signature_required,
            "http_port": self.http_port,
            "tracing": bool(self.otlp_endpoint),
        }

    @property
    def uses_embedded(self) -> bool:
        return self.kafka_bootstrap_servers is None and self.mongodb_url is None

    def topic(self, event_type: str) -> str:
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
            if not error["loc"]:  # a cross-field check; its message names the variables
                lines.append(str(error["msg"]).removeprefix("Value error, "))
                continue
            field = str(error["loc"][0])
            lines.append(f"{ENV_PREFIX}{field.upper()}: {error['msg']}")
        raise SettingsError("invalid settings:\n  " + "\n  ".join(lines)) from exc
