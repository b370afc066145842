"""Webhooks in: verify over HTTP, then hand the raw request to Kafka.

The HTTP side does as little as possible (verify, publish, answer) so a
provider's retry policy is never fighting our processing time; the consumer of
`payment.provider_webhook` applies it with every promise of the other events.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import UTC, datetime
from typing import Any

from faststream.kafka import KafkaBroker

from schemas.envelope import CLOUDEVENTS_CONTENT_TYPE
from schemas.inbound import ProviderWebhook
from schemas.outbound_event import event_payload, event_value
from schemas.topics import PAYMENT_PROVIDER_WEBHOOK, topic_for
from service.ports.providers import InstalledProviders, WebhookVerificationError

log = logging.getLogger(__name__)


def webhook_event_id(provider_id: str, body: bytes) -> str:
    """Same delivery, same id: a provider re-sending a webhook de-duplicates."""
    return (
        "whk_" + hashlib.blake2b(provider_id.encode() + b"\x1f" + body, digest_size=16).hexdigest()
    )


class WebhookIntake:
    def __init__(self, providers: InstalledProviders, broker: KafkaBroker, prefix: str) -> None:
        self.providers = providers
        self.broker = broker
        self.prefix = prefix

    async def receive(
        self, provider_id: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, Any]]:
        provider = self.providers.get(provider_id)
        if provider is None:
            return 404, {"error": f"unknown provider {provider_id!r}"}
        now = datetime.now(UTC)
        try:
            provider.verify_webhook(headers, body, now)
        except WebhookVerificationError as exc:
            return 400, {"error": f"signature verification failed: {exc}"}
        try:
            payload = body.decode("utf-8")
        except UnicodeDecodeError:
            return 400, {"error": "body is not UTF-8"}
        data = ProviderWebhook(
            provider_id=provider_id,
            received_at=now,
            headers={k.lower(): v for k, v in headers.items()},
            payload=payload,
        )
        event = event_payload(
            data,
            event_id=webhook_event_id(provider_id, body),
            source=f"/webhooks/{provider_id}",
            time=now,
            subject=provider_id,
        )
        await self.broker.publish(
            event_value(event),
            topic_for(PAYMENT_PROVIDER_WEBHOOK, self.prefix),
            key=provider_id.encode(),
            headers={"content-type": CLOUDEVENTS_CONTENT_TYPE},
        )
        return 200, {"received": True, "id": event["id"]}


class WebhookVerifier:
    """Re-verifies a `payment.provider_webhook` event where it is applied.

    The topic is not proof: anything that can write to it could otherwise have a
    hand-made `payment_intent.succeeded` applied. The consumer calls this with the
    event's data and dead-letters it `unauthorized` when it returns a detail.

    * the provider is asked ``verify_stored_webhook``: Stripe checks the signature of
      the stored headers and raw payload with no timestamp tolerance (a redelivery
      or a dead letter sent back days later is still the provider's own message,
      and a replay of one is stopped by de-duplication, not by its age); by default
      a provider checks it with ``verify_webhook`` at the stored ``received_at``
      (the providers without webhooks, manual and sandbox, refuse every one);
    * a provider that is not installed is refused: nothing can verify the event,
      and as a dead letter it can be sent back once the provider is installed.
    """

    def __init__(self, providers: InstalledProviders) -> None:
        self.providers = providers

    def __call__(self, webhook: ProviderWebhook) -> str | None:
        provider = self.providers.get(webhook.provider_id)
        if provider is None:
            return f"provider {webhook.provider_id!r} is not installed; cannot verify its webhook"
        body = webhook.payload.encode("utf-8")
        try:
            provider.verify_stored_webhook(webhook.headers, body, webhook.received_at)
        except WebhookVerificationError as exc:
            return f"{webhook.provider_id} webhook signature does not verify: {exc}"
        return None
