"""Webhooks in: verify over HTTP, then hand the raw request to Kafka.

The HTTP side does as little as possible (verify, publish, answer) so a
provider's retry policy is never fighting our processing time; the consumer of
`payment.provider_webhook` applies it with every promise of the other events.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from schemas.inbound import ProviderWebhook
from schemas.outbound_event import event_payload
from service.domain.events import outbox_entry
from service.ports.providers import InstalledProviders, WebhookVerificationError
from service.ports.publisher import EventPublisher

log = logging.getLogger(__name__)


def webhook_event_id(provider_id: str, body: bytes) -> str:
    """Same delivery, same id: a provider re-sending a webhook de-duplicates."""
    return (
        "whk_" + hashlib.blake2b(provider_id.encode() + b"\x1f" + body, digest_size=16).hexdigest()
    )


def _utcnow() -> datetime:
    return datetime.now(UTC)


class WebhookIntake:
    """`POST /webhooks/{provider_id}`: verify, then publish to `payment.provider_webhook`
    (keyed by the provider id) through the publisher port, as every event goes out."""

    def __init__(
        self,
        providers: InstalledProviders,
        publisher: EventPublisher,
        *,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.providers = providers
        self.publisher = publisher
        self.clock = clock

    async def receive(
        self, provider_id: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, Any]]:
        provider = self.providers.get(provider_id)
        if provider is None:
            return 404, {"error": f"unknown provider {provider_id!r}"}
        now = self.clock()
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
        # A publish that fails raises: the HTTP side answers 500 and the provider
        # delivers the webhook again (same body, same id).
        await self.publisher.publish(
            [outbox_entry(event, key=provider_id, causation_id=event["id"], now=now)]
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
