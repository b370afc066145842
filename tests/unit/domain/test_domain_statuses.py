"""Every edge of both status tables, legal and illegal, and the "never backwards" rank order."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

import pytest

from service.domain.statuses import (
    COLLECTION_TRANSITIONS,
    SESSION_TRANSITIONS,
    CollectionStatus,
    IllegalTransition,
    SessionStatus,
    can_move_collection,
    can_move_session,
    collection_transition,
    session_transition,
)

C = CollectionStatus
S = SessionStatus

COLLECTION_PAIRS = list(itertools.product(CollectionStatus, CollectionStatus))
SESSION_PAIRS = list(itertools.product(SessionStatus, SessionStatus))

#: The rank order documented in statuses.py; `canceled` is terminal and handled apart.
COLLECTION_RANK: dict[CollectionStatus, int] = {
    C.NOT_PAID: 0,
    C.AWAITING: 1,
    C.FAILED: 1,
    C.PARTIALLY_AUTHORIZED: 2,
    C.AUTHORIZED: 3,
    C.PARTIALLY_CAPTURED: 4,
    C.COMPLETED: 5,
}
SESSION_RANK: dict[SessionStatus, int] = {
    S.PENDING: 0,
    S.REQUIRES_MORE: 1,
    S.ERROR: 1,
    S.AUTHORIZED: 2,
}


def _params(pairs: Iterable[tuple[str, str]]) -> list[Any]:
    return [pytest.param(a, b, id=f"{a}->{b}") for a, b in pairs]


def test_tables_cover_every_status() -> None:
    assert set(COLLECTION_TRANSITIONS) == set(CollectionStatus)
    assert set(SESSION_TRANSITIONS) == set(SessionStatus)
    for current, targets in COLLECTION_TRANSITIONS.items():
        assert current not in targets, "self edges are implicit, not listed"
    for s_current, s_targets in SESSION_TRANSITIONS.items():
        assert s_current not in s_targets


@pytest.mark.parametrize(("current", "target"), _params(COLLECTION_PAIRS))
def test_collection_pair(current: CollectionStatus, target: CollectionStatus) -> None:
    legal = current == target or target in COLLECTION_TRANSITIONS[current]
    assert can_move_collection(current, target) is legal
    if legal:
        assert collection_transition(current, target) == target
    else:
        with pytest.raises(IllegalTransition) as info:
            collection_transition(current, target)
        assert info.value.what == "collection"
        assert (info.value.current, info.value.target) == (current, target)


@pytest.mark.parametrize(("current", "target"), _params(SESSION_PAIRS))
def test_session_pair(current: SessionStatus, target: SessionStatus) -> None:
    legal = current == target or target in SESSION_TRANSITIONS[current]
    assert can_move_session(current, target) is legal
    if legal:
        assert session_transition(current, target) == target
    else:
        with pytest.raises(IllegalTransition) as info:
            session_transition(current, target)
        assert info.value.what == "session"
        assert (info.value.current, info.value.target) == (current, target)


@pytest.mark.parametrize("terminal", [C.COMPLETED, C.CANCELED])
def test_terminal_collection_statuses_have_no_exits(terminal: CollectionStatus) -> None:
    assert COLLECTION_TRANSITIONS[terminal] == frozenset()
    for target in CollectionStatus:
        assert can_move_collection(terminal, target) is (target == terminal)


def test_canceled_session_has_no_exits() -> None:
    assert SESSION_TRANSITIONS[S.CANCELED] == frozenset()
    for target in SessionStatus:
        assert can_move_session(S.CANCELED, target) is (target == S.CANCELED)


def test_staying_put_is_always_allowed() -> None:
    for c in CollectionStatus:
        assert collection_transition(c, c) == c
    for s in SessionStatus:
        assert session_transition(s, s) == s


@pytest.mark.parametrize(
    ("current", "target"),
    _params((c, t) for c, targets in COLLECTION_TRANSITIONS.items() for t in sorted(targets)),
)
def test_no_collection_edge_goes_backwards(
    current: CollectionStatus, target: CollectionStatus
) -> None:
    assert current != C.CANCELED
    if target == C.CANCELED:
        return  # canceled is terminal and reachable only forwards
    assert COLLECTION_RANK[target] >= COLLECTION_RANK[current]


@pytest.mark.parametrize(
    ("current", "target"),
    _params((c, t) for c, targets in SESSION_TRANSITIONS.items() for t in sorted(targets)),
)
def test_no_session_edge_goes_backwards(current: SessionStatus, target: SessionStatus) -> None:
    assert current != S.CANCELED
    if target == S.CANCELED:
        return
    assert SESSION_RANK[target] >= SESSION_RANK[current]


def test_session_canceled_is_reachable_from_every_other_status() -> None:
    for s in SessionStatus:
        assert can_move_session(s, S.CANCELED)


@pytest.mark.parametrize(
    ("current", "target"),
    _params(
        [
            (C.AUTHORIZED, C.AWAITING),
            (C.COMPLETED, C.PARTIALLY_CAPTURED),
            (C.PARTIALLY_CAPTURED, C.AUTHORIZED),
            (C.PARTIALLY_CAPTURED, C.CANCELED),
            (C.COMPLETED, C.CANCELED),
            (C.CANCELED, C.AUTHORIZED),
            (C.AUTHORIZED, C.FAILED),
            (C.AWAITING, C.NOT_PAID),
        ]
    ),
)
def test_known_backward_collection_edges_are_refused(
    current: CollectionStatus, target: CollectionStatus
) -> None:
    with pytest.raises(IllegalTransition, match="illegal collection transition"):
        collection_transition(current, target)


@pytest.mark.parametrize(
    ("current", "target"),
    _params(
        [
            (S.AUTHORIZED, S.PENDING),
            (S.AUTHORIZED, S.ERROR),
            (S.AUTHORIZED, S.REQUIRES_MORE),
            (S.ERROR, S.PENDING),
            (S.CANCELED, S.AUTHORIZED),
        ]
    ),
)
def test_known_backward_session_edges_are_refused(
    current: SessionStatus, target: SessionStatus
) -> None:
    with pytest.raises(IllegalTransition, match="illegal session transition"):
        session_transition(current, target)
