"""The publisher port: send stored outbound events and wait for the broker's ack."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from service.domain.model import OutboxEvent


class EventsRefused(Exception):
    """The broker refused these events themselves (too large, invalid), not for an
    outage: sending them again unchanged cannot succeed."""

    def __init__(self, event_ids: set[str], reason: str) -> None:
        super().__init__(reason)
        self.event_ids = event_ids


class EventPublisher(Protocol):
    async def publish(self, events: Sequence[OutboxEvent]) -> None:
        """Send all events (batched), then wait until the broker acknowledged each.

        Raises when any send failed: the caller then leaves them unsent for the relay.
        Raises :class:`EventsRefused` when every failure was the broker refusing an
        event as such (the others were sent).
        """
        ...
