"""Deterministic ids.

Ids derive from what caused them (the cart, the session's sequence number, the
inbound event id), so a decision made again after a lost race or a crash names
the same session, payment, capture and outbound event: a replay can never mint a
second id for the same effect.
"""

from __future__ import annotations

import hashlib


def _digest(*parts: str) -> str:
    raw = "\x1f".join(parts).encode()
    return hashlib.blake2b(raw, digest_size=13).hexdigest()


def collection_id(cart_id: str) -> str:
    return f"paycol_{_digest('collection', cart_id)}"


def session_id(collection_id: str, provider_id: str, seq: int) -> str:
    return f"payses_{_digest('session', collection_id, provider_id, str(seq))}"


def payment_id(session_id: str) -> str:
    return f"pay_{_digest('payment', session_id)}"


def capture_id(payment_id: str, command_id: str) -> str:
    return f"capt_{_digest('capture', payment_id, command_id)}"


def refund_id(payment_id: str, command_id: str) -> str:
    return f"ref_{_digest('refund', payment_id, command_id)}"


def event_id(causation_id: str, event_type: str, collection_id: str) -> str:
    return f"evt_{_digest('event', causation_id, event_type, collection_id)}"


def provider_key(collection_id: str, operation: str, key: str) -> str:
    """The idempotency key a provider sees for `operation` under our `key`.

    Our keys are unique only where they come from: a storefront's checkout key
    per cart, a command id per command. Two carts with the same checkout key, or
    a command id equal to another cart's checkout key, must not meet at the
    provider as one key (it would refuse the second as a reused key).
    """
    return f"{operation}_{_digest('provider-key', collection_id, operation, key)}"
