"""The unit of work: load an aggregate, decide, store with the version check, hand on.

Every handler, the reconciler included, goes through :meth:`UnitOfWork.run`: it
loads the collection, runs a decision on it, stores the result only if nobody
wrote since (the version check), and returns what was stored so the caller
publishes its new outbox events. A lost race reloads and decides again on the
fresh state. Provider calls made by a decision are remembered in
:class:`Answers`, so deciding again reuses their answers instead of asking
twice, and an answer is always applied to the latest state, never dropped.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

from service.domain.calls import ProviderCall
from service.domain.model import PaymentCollection
from service.domain.outcomes import ProviderOutcome
from service.ports.store import CollectionStore, ConcurrencyConflict, Loaded, OrphanOutcome

MAX_CONFLICT_RETRIES = 20

HandleStatus = Literal["applied", "duplicate", "ignored", "rejected"]


@dataclass(slots=True)
class HandleResult:
    """What one handled event produced: stored collections and orphan answers to publish.

    `status` is the typed outcome; `note` says why, for logs (a reason code when
    rejected, e.g. `amount_mismatch`).
    """

    status: HandleStatus
    saved: list[tuple[PaymentCollection, int]] = field(default_factory=list)
    orphans: list[OrphanOutcome] = field(default_factory=list)
    note: str = ""
    cart_id: str | None = None


class TooManyConflicts(Exception):
    """The aggregate kept changing under us; the message is retried later."""


@dataclass(slots=True)
class Step:
    """What a decision made of the loaded state.

    `collection` is the new state to store (None: store nothing). `republish`
    hands on a duplicate's stored events that are still unsent, with their ids.
    """

    status: HandleStatus
    collection: PaymentCollection | None = None
    note: str = ""
    republish: bool = False
    orphans: list[OrphanOutcome] = field(default_factory=list)


Decide = Callable[[Loaded | None], Awaitable[Step]]
Load = Callable[[], Awaitable[Loaded | None]]


class Answers:
    """Provider answers obtained while handling one event, by call.

    A decision made again after a lost race asks for the same calls (keys are
    deterministic): it gets these answers instead of a second round trip, and
    whatever the provider did is applied to the state that won.
    """

    def __init__(self) -> None:
        self._answers: dict[tuple[str, str, str], tuple[ProviderCall, ProviderOutcome]] = {}

    @staticmethod
    def _key(call: ProviderCall, method: str) -> tuple[str, str, str]:
        return (method, call.operation, call.idempotency_key)

    def get(self, call: ProviderCall, method: str) -> ProviderOutcome | None:
        found = self._answers.get(self._key(call, method))
        return None if found is None else found[1]

    def put(self, call: ProviderCall, method: str, outcome: ProviderOutcome) -> None:
        self._answers[self._key(call, method)] = (call, outcome)

    def of(self, operation: str) -> list[tuple[ProviderCall, ProviderOutcome]]:
        """The answers to calls (not status queries) of one operation."""
        return [
            answer
            for (method, op, _), answer in self._answers.items()
            if method == "call" and op == operation
        ]


class UnitOfWork:
    def __init__(self, store: CollectionStore, *, max_retries: int = MAX_CONFLICT_RETRIES) -> None:
        self.store = store
        self.max_retries = max_retries

    async def run(self, load: Load, decide: Decide, *, what: str) -> HandleResult:
        """Load, decide, save (version-checked); on a conflict, all again.

        `what` names the aggregate in the error raised when it keeps changing.
        """
        for _ in range(self.max_retries):
            loaded = await load()
            step = await decide(loaded)
            if step.collection is None:
                saved = (
                    [(loaded.collection, loaded.version)]
                    if step.republish and loaded is not None and loaded.collection.unsent_events
                    else []
                )
                cart_id = loaded.collection.cart_id if loaded is not None else None
                return HandleResult(
                    step.status, saved, orphans=step.orphans, note=step.note, cart_id=cart_id
                )
            try:
                version = await self.store.save(
                    step.collection, loaded.version if loaded is not None else None
                )
            except ConcurrencyConflict:
                continue
            return HandleResult(
                step.status,
                [(step.collection, version)],
                orphans=step.orphans,
                note=step.note,
                cart_id=step.collection.cart_id,
            )
        raise TooManyConflicts(what)
