"""The publisher port: send stored outbound events and wait for the broker's ack."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from service.domain.model import OutboxEvent


class PublisherUnavailable(Exception):
    """The broker could not be reached or did not acknowledge: the events stay stored
    and are sent again later (the relay), with their ids."""


class EventsRefused(PublisherUnavailable):
    """The broker refused these events themselves (too large, invalid), not for an
    outage: sending them again unchanged cannot succeed."""

    def __init__(self, event_ids: set[str], reason: str) -> None:
        super().__init__(reason)
        self.event_ids = event_ids


class EventPublisher(Protocol):
    async def publish(self, events: Sequence[OutboxEvent]) -> None:
        """Send all events (batched), then wait until the broker acknowledged each.

        Raises :class:`PublisherUnavailable` when any send failed (the caller then
        leaves them unsent for the relay), :class:`EventsRefused` when every failure
        was the broker refusing an event as such (the others were sent). No other
        exception leaves an adapter.
        """
        ...
