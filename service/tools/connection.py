"""Where the tools connect: Kafka, MongoDB and the deployment's topic prefix.

Every command defaults to the service's own `PAYMENTS_*` settings, so an operator
on a service host needs no options at all; flags override single values.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from service.settings import Settings, SettingsError, load_settings

EMBEDDED_ENDPOINTS_FILE = "endpoints.json"
"""Written by `payments run` into the embedded data directory while it runs."""


class ToolError(Exception):
    """A tool cannot do what was asked; the message says why (the CLI exits non-zero)."""


@dataclass(frozen=True, slots=True)
class Connection:
    """Addresses and names one tool run talks to."""

    kafka_bootstrap: str | None
    mongodb_url: str | None
    database: str
    topic_prefix: str

    def require_kafka(self) -> str:
        if not self.kafka_bootstrap:
            raise ToolError(
                "no Kafka to talk to: set PAYMENTS_KAFKA_BOOTSTRAP_SERVERS or pass "
                "--bootstrap-servers"
            )
        return self.kafka_bootstrap

    def require_mongodb(self) -> str:
        if not self.mongodb_url:
            raise ToolError("no MongoDB to talk to: set PAYMENTS_MONGODB_URL or pass --mongodb-url")
        return self.mongodb_url

    def topic(self, name: str) -> str:
        """The deployed name of contract topic `name` (an event type or `payments.dlq`)."""
        from schemas.topics import topic_for

        return topic_for(name, self.topic_prefix)


def connection_from_settings(
    *,
    kafka_bootstrap: str | None = None,
    mongodb_url: str | None = None,
    database: str | None = None,
    topic_prefix: str | None = None,
    settings: Settings | None = None,
) -> Connection:
    """Build a connection from explicit values, falling back to the `PAYMENTS_*` settings."""
    if settings is None:
        try:
            settings = load_settings()
        except SettingsError as exc:
            raise ToolError(str(exc)) from exc
    settings_kafka = settings.kafka_bootstrap_servers
    settings_url = settings.mongodb_url.get_secret_value() if settings.mongodb_url else None
    if settings.uses_embedded:
        # `make run` without PAYMENTS_* servers: talk to the embedded ones it started.
        embedded = read_embedded_endpoints(Path(settings.embedded_data_dir))
        settings_kafka, settings_url = embedded.get("kafka"), embedded.get("mongodb")
    return Connection(
        kafka_bootstrap=kafka_bootstrap or settings_kafka,
        mongodb_url=mongodb_url or settings_url,
        database=database or settings.mongodb_database,
        topic_prefix=settings.topic_prefix if topic_prefix is None else topic_prefix,
    )


def write_embedded_endpoints(data_dir: Path, kafka: str, mongodb: str) -> Path:
    """Record where the embedded servers of a running `payments run` listen.

    Their ports are chosen at start-up; this lets the tools in another terminal
    find them without the operator copying addresses from the log.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / EMBEDDED_ENDPOINTS_FILE
    path.write_text(json.dumps({"kafka": kafka, "mongodb": mongodb}), encoding="utf-8")
    return path


def read_embedded_endpoints(data_dir: Path) -> dict[str, str]:
    try:
        loaded = json.loads((data_dir / EMBEDDED_ENDPOINTS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(loaded, dict):
        return {}
    return {k: v for k, v in loaded.items() if isinstance(k, str) and isinstance(v, str)}
