"""Creating the service's Kafka topics (`PAYMENTS_CREATE_TOPICS`), with aiokafka's admin client.

Used at start-up when topic creation is on, by the embedded setup (`make run`) and by
the test harness; the embedded servers themselves live in `service/embedded.py`,
which production code does not import.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from service.settings import Settings

_TOPIC_ALREADY_EXISTS = 36
"""The Kafka error code that means "the topic is there", which is all we want."""


async def ensure_topics(
    bootstrap_servers: str,
    topics: Iterable[str],
    partitions: int | None = None,
    *,
    replication_factor: int = 1,
    request_timeout_ms: int = 30_000,
    client_options: Mapping[str, Any] | None = None,
) -> None:
    """Create ``topics`` unless they exist; existing topics are left as they are.

    ``client_options`` are extra aiokafka client arguments (TLS / SASL security).
    """
    if partitions is None:  # the service's own default, declared once in Settings
        partitions = int(Settings.model_fields["topic_partitions"].default)
    names = list(dict.fromkeys(topics))  # duplicates make the whole request invalid
    if not names:
        return
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers,
        client_id="payments-ensure-topics",
        request_timeout_ms=request_timeout_ms,
        **(client_options or {}),
    )
    await admin.start()
    try:
        response = await admin.create_topics(
            [NewTopic(name, partitions, replication_factor) for name in names],
            timeout_ms=request_timeout_ms,
        )
    finally:
        await admin.close()
    failures = [
        f"{entry[0]}: error_code={entry[1]}" + (f" ({entry[2]})" if len(entry) > 2 else "")
        for entry in response.topic_errors
        if entry[1] not in (0, _TOPIC_ALREADY_EXISTS)
    ]
    if failures:
        raise RuntimeError(f"creating Kafka topics failed: {'; '.join(failures)}")
