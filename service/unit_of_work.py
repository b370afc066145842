"""The unit of work: every handler's one path from a loaded aggregate to a stored change.

    load → inbox check → decide → [store the reservation] → provider calls → settle → store

A handler says *what* (a :class:`Work`: how to load, what the event's inbox entry is,
the domain's decision and how to settle the answers); :meth:`UnitOfWork.run` does the
rest the same way for every event type:

- the inbox is checked **before** deciding, so a duplicate never reaches a decision
  and is answered with the stored events still unsent, under their ids;
- a decision changes the loaded aggregate in place and records its events; a decision
  that stores nothing leaves the object to be dropped, never stored or reused;
- a reservation is stored before its provider calls (a crash after the provider acted
  leaves a trace the reconciler settles), and the answers are applied to what is
  stored when they arrive;
- every save is version-checked: a lost race loads again and decides again, with the
  provider's answers already obtained (:class:`~service.domain.calls.Answers`), so
  deciding again never asks twice and never drops what was answered.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

from service.domain.calls import Answered, Answers, Ask
from service.domain.model import PaymentCollection
from service.domain.outcomes import ProviderOutcome
from service.domain.results import Decision
from service.ports.store import CollectionStore, ConcurrencyConflict, Loaded, OrphanOutcome

MAX_CONFLICT_RETRIES = 20

HandleStatus = Literal["applied", "duplicate", "ignored", "rejected", "waiting"]

Load = Callable[[], Awaitable[Loaded | None]]
Decide = Callable[[Loaded | None, Answers], Decision]
Settle = Callable[[PaymentCollection, Answered, Answers], Decision]
Seen = Callable[[PaymentCollection], bool]
AskProvider = Callable[[Ask], Awaitable[ProviderOutcome]]


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


@dataclass(frozen=True, slots=True)
class Work:
    """One message's work, as its handler describes it to the unit of work."""

    what: str
    """The aggregate's name in errors (a cart, payment or collection id)."""
    load: Load
    decide: Decide
    """The domain's decision on what is loaded (None: nothing stored yet)."""
    settle: Settle | None = None
    """Applies the answers to a `call` decision's questions to the collection."""
    seen: Seen | None = None
    """The inbox: whether the aggregate consumed this message already."""


def _status(decision: Decision) -> HandleStatus:
    if decision.kind in ("duplicate", "ignored"):
        return decision.kind
    if decision.kind == "wait":
        return "waiting"
    if decision.rejected or decision.kind == "orphan":
        return "rejected"
    return "applied" if decision.changed else "ignored"


class _Retry(Exception):
    """A save lost its race: load and decide again."""


class UnitOfWork:
    def __init__(
        self, store: CollectionStore, ask: AskProvider, *, max_retries: int = MAX_CONFLICT_RETRIES
    ) -> None:
        self.store = store
        self.ask = ask
        self.max_retries = max_retries

    async def run(self, work: Work) -> HandleResult:
        """Load, check the inbox, decide, call, settle, save; on a lost race, again."""
        answers = Answers()
        for _ in range(self.max_retries):
            loaded = await work.load()
            if loaded is not None and work.seen is not None and work.seen(loaded.collection):
                return self._duplicate(loaded)
            decision = work.decide(loaded, answers)
            try:
                return await self._carry_out(work, loaded, decision, answers)
            except _Retry:
                continue
        raise TooManyConflicts(work.what)

    async def _carry_out(
        self, work: Work, loaded: Loaded | None, decision: Decision, answers: Answers
    ) -> HandleResult:
        if decision.kind == "duplicate" and loaded is not None:
            return self._duplicate(loaded)
        if decision.kind in ("duplicate", "ignored", "wait"):
            return self._result(decision, loaded, [])
        if decision.kind == "orphan":
            return await self._orphan(decision)
        if decision.kind == "ask":
            await self._questions(decision, answers)
            raise _Retry  # decide again on a fresh load, with the answers
        if decision.kind == "settled":
            return self._result(decision, loaded, [await self._save(decision.stored, loaded)])
        if decision.reserve:
            await self._save(decision.stored, loaded)
        if decision.reserve or decision.settle_fresh:
            answered = await self._questions(decision, answers)
            return await self._settle_fresh(work, answered, answers)
        answered = await self._questions(decision, answers)
        return await self._settled(work, decision.stored, loaded, answered, answers)

    async def _settled(
        self,
        work: Work,
        collection: PaymentCollection,
        loaded: Loaded | None,
        answered: Answered,
        answers: Answers,
    ) -> HandleResult:
        assert work.settle is not None, f"{work.what}: a call decision needs a settle step"
        settled = work.settle(collection, answered, answers)
        if settled.kind == "ignored":
            return self._result(settled, loaded, [])
        return self._result(settled, loaded, [await self._save(collection, loaded)])

    async def _settle_fresh(self, work: Work, answered: Answered, answers: Answers) -> HandleResult:
        """Apply the answers to what is stored now (others may have written since the
        reservation); a lost race applies them again to the newer state."""
        for _ in range(self.max_retries):
            loaded = await work.load()
            if loaded is None:  # pragma: no cover - collections are never deleted
                break
            try:
                return await self._settled(work, loaded.collection, loaded, answered, answers)
            except _Retry:
                continue
        raise TooManyConflicts(work.what)

    async def _questions(self, decision: Decision, answers: Answers) -> Answered:
        """Put the decision's questions to the providers, each once per message."""
        answered: Answered = []
        while (ask := decision.next_ask(answered)) is not None:
            outcome = answers.get(ask)
            if outcome is None:
                outcome = await self.ask(ask)
                answers.put(ask, outcome)
            answered.append((ask.call, outcome))
        return answered

    async def _save(
        self, collection: PaymentCollection, loaded: Loaded | None
    ) -> tuple[PaymentCollection, int]:
        try:
            version = await self.store.save(
                collection,
                loaded.version if loaded is not None else None,
                loaded.snapshot if loaded is not None else None,
            )
        except ConcurrencyConflict:
            raise _Retry from None
        collection.commit_recorded()  # the object now is what is stored
        return collection, version

    async def _orphan(self, decision: Decision) -> HandleResult:
        """Store the answer to an event about no aggregate once, under its cause."""
        cause = decision.events[0].causation_id
        stored = await self.store.save_orphan(OrphanOutcome(cause, list(decision.events)))
        return HandleResult("rejected", orphans=[stored], note=decision.note or "orphan")

    @staticmethod
    def _duplicate(loaded: Loaded) -> HandleResult:
        # Events stored by the first delivery but never acknowledged by the broker
        # go out again now, with their stored ids.
        collection = loaded.collection
        saved = [(collection, loaded.version)] if collection.unsent_events else []
        return HandleResult(
            "duplicate", saved, note="already processed", cart_id=collection.cart_id
        )

    @staticmethod
    def _result(
        decision: Decision,
        loaded: Loaded | None,
        saved: list[tuple[PaymentCollection, int]],
    ) -> HandleResult:
        collection = saved[-1][0] if saved else loaded.collection if loaded else None
        return HandleResult(
            _status(decision),
            saved,
            note=decision.note,
            cart_id=collection.cart_id if collection is not None else None,
        )
