"""The publisher port: send stored outbound events and wait for the broker's ack."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from service.domain.model import OutboxEvent


class EventPublisher(Protocol):
    async def publish(self, events: Sequence[OutboxEvent]) -> None:
        """Send all events (batched), then wait until the broker acknowledged each.

        Raises when any send failed: the caller then leaves them unsent for the relay.
        """
        ...
