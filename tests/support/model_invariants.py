"""Invariants both stateful model tests check after every step (the generic processor's,
`tests/unit/model/test_payment_model.py`, and Stripe's, `test_stripe_model.py`): what
is on the wire, and promise 10."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from hypothesis.stateful import RuleBasedStateMachine, invariant

from service.domain.model import PaymentCollection
from tests.support.bounded import assert_bounded
from tests.support.world import World


class WireInvariants(RuleBasedStateMachine):
    """A model test's base: it sets `world` and `payloads` (event id → first payload
    published) and says which collections exist."""

    world: World
    payloads: dict[str, Any]

    def collections(self) -> list[PaymentCollection]:
        raise NotImplementedError

    @invariant()
    def state_is_bounded(self) -> None:
        for collection in self.collections():
            assert_bounded(collection)

    @invariant()
    def event_ids_are_stable(self) -> None:
        for event in self.world.publisher.published:
            first = self.payloads.setdefault(event.id, event.payload)
            assert first == event.payload, f"event {event.id} published with another payload"

    @invariant()
    def one_answer_per_cause(self) -> None:
        seen: dict[tuple[str, str], set[str]] = defaultdict(set)
        for event in self.world.publisher.published:
            if event.type != "payment.failed":
                seen[(event.causation_id, event.type)].add(event.id)
        for (cause, kind), event_ids in seen.items():
            assert len(event_ids) == 1, f"{cause} caused {len(event_ids)} {kind} events"
