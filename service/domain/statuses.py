"""Statuses of Medusa's payment module and the one table of legal transitions.

A status "never moves backwards": every change of a collection or session status
goes through :func:`collection_transition` / :func:`session_transition`, which
refuse any edge missing from the tables below. Staying in the same status is
always allowed (a no-op), so replays and repeated webhooks are harmless.
"""

from __future__ import annotations

from enum import StrEnum


class CollectionStatus(StrEnum):
    NOT_PAID = "not_paid"
    AWAITING = "awaiting"
    AUTHORIZED = "authorized"
    PARTIALLY_AUTHORIZED = "partially_authorized"
    CANCELED = "canceled"
    FAILED = "failed"
    PARTIALLY_CAPTURED = "partially_captured"
    COMPLETED = "completed"


class SessionStatus(StrEnum):
    PENDING = "pending"
    REQUIRES_MORE = "requires_more"
    AUTHORIZED = "authorized"
    ERROR = "error"
    CANCELED = "canceled"


_C = CollectionStatus
_S = SessionStatus

#: Legal collection edges. `awaiting` and `failed` are one rank: a declined
#: authorization fails the collection, and the customer may try again (another
#: card, or the same idempotency key after 3-D Secure), so `failed` → `awaiting`
#: is a retry, not a step back. Nothing leaves `completed` or `canceled`.
COLLECTION_TRANSITIONS: dict[CollectionStatus, frozenset[CollectionStatus]] = {
    _C.NOT_PAID: frozenset({_C.AWAITING, _C.AUTHORIZED, _C.FAILED, _C.CANCELED}),
    _C.AWAITING: frozenset({_C.AUTHORIZED, _C.PARTIALLY_AUTHORIZED, _C.FAILED, _C.CANCELED}),
    _C.FAILED: frozenset({_C.AWAITING, _C.AUTHORIZED, _C.PARTIALLY_AUTHORIZED, _C.CANCELED}),
    _C.PARTIALLY_AUTHORIZED: frozenset(
        {_C.AUTHORIZED, _C.PARTIALLY_CAPTURED, _C.COMPLETED, _C.CANCELED}
    ),
    _C.AUTHORIZED: frozenset({_C.PARTIALLY_CAPTURED, _C.COMPLETED, _C.CANCELED}),
    _C.PARTIALLY_CAPTURED: frozenset({_C.COMPLETED}),
    _C.COMPLETED: frozenset(),
    _C.CANCELED: frozenset(),
}

#: Legal session edges. `requires_more` and `error` are one rank (a retried
#: authorization may land in either); `authorized` only ends in `canceled`
#: (the payment was voided); `canceled` is final.
SESSION_TRANSITIONS: dict[SessionStatus, frozenset[SessionStatus]] = {
    _S.PENDING: frozenset({_S.REQUIRES_MORE, _S.AUTHORIZED, _S.ERROR, _S.CANCELED}),
    _S.REQUIRES_MORE: frozenset({_S.AUTHORIZED, _S.ERROR, _S.CANCELED}),
    _S.ERROR: frozenset({_S.REQUIRES_MORE, _S.AUTHORIZED, _S.CANCELED}),
    _S.AUTHORIZED: frozenset({_S.CANCELED}),
    _S.CANCELED: frozenset(),
}


class IllegalTransition(Exception):
    """A decision tried to move a status along an edge the tables forbid."""

    def __init__(self, what: str, current: str, target: str) -> None:
        super().__init__(f"illegal {what} transition {current!r} -> {target!r}")
        self.what = what
        self.current = current
        self.target = target


def can_move_collection(current: CollectionStatus, target: CollectionStatus) -> bool:
    return current == target or target in COLLECTION_TRANSITIONS[current]


def can_move_session(current: SessionStatus, target: SessionStatus) -> bool:
    return current == target or target in SESSION_TRANSITIONS[current]


def collection_transition(current: CollectionStatus, target: CollectionStatus) -> CollectionStatus:
    if not can_move_collection(current, target):
        raise IllegalTransition("collection", current, target)
    return target


def session_transition(current: SessionStatus, target: SessionStatus) -> SessionStatus:
    if not can_move_session(current, target):
        raise IllegalTransition("session", current, target)
    return target
