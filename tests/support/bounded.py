"""Promise 10 as an invariant: what only serves de-duplication and delivery does not
grow with traffic. The model tests check it after every step of every run."""

from __future__ import annotations

from service.domain.model import ATTEMPTS_KEPT, HISTORY_LIMIT, INBOX_WINDOW, PaymentCollection
from service.domain.provider_facts import PROVIDER_EVENT_WINDOW


def assert_bounded(collection: PaymentCollection) -> None:
    where = collection.cart_id
    assert len(collection.processed) <= INBOX_WINDOW, (where, len(collection.processed))
    assert len(collection.checkout_attempts) <= ATTEMPTS_KEPT, where
    assert len(collection.provider_events) <= PROVIDER_EVENT_WINDOW, where
    if collection.payment is not None:
        assert len(collection.payment.history) <= HISTORY_LIMIT, where
