"""Money booked through the aggregate (`service/domain/bookings.py`) is booked the same
whichever path moves it: a command, or the provider reporting what it did."""

from __future__ import annotations

from domain_testkit import (
    LATER,
    authorized_collection,
    cancel,
    data_of,
    new_events,
    only_event,
    payment_id_of,
    run_command,
    validate_outbox,
)

from service.domain.model import PaymentCollection
from service.domain.statuses import CollectionStatus, SessionStatus
from tests.unit.domain.domain_testkit import apply_notification


def _canceled_state(collection: PaymentCollection) -> tuple[object, ...]:
    payment = collection.payment
    assert payment is not None
    session = collection.session_by_id(payment.session_id)
    assert session is not None
    return collection.status, session.status, payment.canceled_at


def test_a_cancel_books_the_same_by_command_and_by_the_provider() -> None:
    authorized = authorized_collection()

    _, by_command = run_command(authorized, cancel("cmd_cancel", payment_id_of(authorized)))
    by_provider = authorized.model_copy(deep=True)
    assert by_provider.payment is not None
    assert apply_notification(
        by_provider,
        event_id="evt_expired",
        meaning="canceled",
        session_id=by_provider.payment.session_id,
        provider_id="sandbox",
        now=LATER,
    )

    expected = (CollectionStatus.CANCELED, SessionStatus.CANCELED, LATER)
    assert _canceled_state(by_command) == _canceled_state(by_provider) == expected
    from_command = only_event(new_events(authorized, by_command), "payment.canceled")
    from_provider = only_event(new_events(authorized, by_provider), "payment.canceled")
    assert data_of(from_command) == data_of(from_provider)
    assert (from_command.causation_id, from_provider.causation_id) == ("cmd_cancel", "evt_expired")
    for collection, event in ((by_command, from_command), (by_provider, from_provider)):
        assert collection.payment is not None
        assert collection.payment.canceled_event_id == event.id
        validate_outbox(collection)
