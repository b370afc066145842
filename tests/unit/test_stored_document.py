"""The stored document's writes (`service/adapters/stored_document.py`), without a server.

What a save sends: the fields that changed and nothing else, at the deepest nested
model that holds them, never into a free-form dict or as a lone boolean; the new
unsent events (a republished copy too) with the order they were made in; the events
no longer unsent removed. Applied to the stored document (by the in-memory store's
interpreter of `$set`/`$unset`), it leaves exactly the collection's state. The real
servers run the same writes in tests/integration/test_store_documents.py.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

from schemas.outbound import PaymentFailed
from service.adapters.stored_document import (
    SCHEMA,
    event_key,
    log_entries,
    log_key,
    new_document,
    read_document,
    save_update,
    sent_update,
)
from service.domain.capabilities import Capabilities
from service.domain.cart import new_collection
from service.domain.events import new_event
from service.domain.model import INBOX_WINDOW, HistoryEntry, Payment, PaymentCollection
from tests.support.memory import apply_update, matches

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def _payment() -> Payment:
    return Payment(
        id="pay_1",
        session_id="payses_1",
        provider_id="manual",
        amount=5000,
        currency_code="usd",
        authorized_at=T0,
        authorized_event_id="evt_auth",
    )


def _stored(collection: PaymentCollection, version: int = 1) -> dict[str, Any]:
    """The document as a store holds it (a copy: nothing shared with the model)."""
    document = copy.deepcopy(new_document(collection, version))
    collection.commit_recorded()
    return document


def _failed(collection: PaymentCollection, cause: str, at: datetime = T0) -> None:
    data = PaymentFailed.model_validate(
        {
            "cart_id": collection.cart_id,
            "collection_id": collection.id,
            "provider_id": "manual",
            "currency_code": "usd",
            "operation": "authorize",
            "reason": "declined",
            "message": "declined",
            "retryable": False,
        }
    )
    new_event(collection, data, "payment.failed", cause, at)


def _save(document: dict[str, Any], change: Any) -> tuple[dict[str, Any], PaymentCollection, Any]:
    """Load `document`, apply `change`, save: the update and what it leaves stored."""
    collection, version, snapshot = read_document(copy.deepcopy(document))
    change(collection)
    write = save_update(collection, snapshot, version + 1)
    stored = apply_update(document, write.update)
    assert read_document(copy.deepcopy(stored))[0].stored_state() == collection.stored_state()
    assert stored == write.document
    return write.update, collection, stored


def _paid() -> dict[str, Any]:
    collection = new_collection("cart_1", "eu", "usd", 5000, T0)
    collection.payment = _payment()
    return _stored(collection)


def test_a_field_of_a_nested_model_is_set_alone() -> None:
    def change(c: PaymentCollection) -> None:
        assert c.payment is not None
        c.payment.released_amount = 100
        c.amount = 4000

    update, _, _ = _save(_paid(), change)
    assert update == {
        "$set": {"state.payment.released_amount": 100, "state.amount": 4000, "version": 2}
    }


def test_a_free_form_dict_is_set_whole() -> None:
    document = _paid()
    document["state"]["context"] = {"a": {"b": 1}, "c": 2}

    def change(c: PaymentCollection) -> None:
        c.context = {**c.context, "a": {"b": 2}}

    update, _, _ = _save(document, change)
    assert update["$set"]["state.context"] == {"a": {"b": 2}, "c": 2}
    assert not [k for k in update["$set"] if k.startswith("state.context.")]


def test_a_model_whose_boolean_changed_is_set_whole() -> None:
    def change(c: PaymentCollection) -> None:
        assert c.payment is not None
        c.payment.capabilities = Capabilities(multicapture=False)

    update, _, _ = _save(_paid(), change)
    assert update["$set"]["state.payment.capabilities"]["multicapture"] is False
    assert not [k for k in update["$set"] if k.startswith("state.payment.capabilities.")]


def test_nothing_changed_sends_the_version_only() -> None:
    update, _, _ = _save(_paid(), lambda c: None)
    assert update == {"$set": {"version": 2}}


def test_new_events_are_added_in_the_order_they_were_made() -> None:
    def first(c: PaymentCollection) -> None:
        _failed(c, "cause_1")
        _failed(c, "cause_2")

    update, collection, stored = _save(_paid(), first)
    ids = [e.id for e in collection.recorded]
    assert [k for k in update["$set"] if k.startswith("outbox.")] == [
        f"outbox.{event_key(i)}" for i in ids
    ]
    assert update["$set"]["outbox_at"] == T0

    _, later, stored = _save(stored, lambda c: _failed(c, "cause_3", T0 - timedelta(days=1)))
    # Made later, though dated earlier: the order is the order of the writes.
    ids.append(later.recorded[0].id)
    assert [e.id for e in read_document(stored)[0].outbox] == ids


def test_events_no_longer_unsent_leave_with_the_next_save() -> None:
    _, collection, stored = _save(_paid(), lambda c: _failed(c, "cause_1"))
    (event,) = collection.recorded

    def sent(c: PaymentCollection) -> None:
        c.outbox[0].sent = True

    update, _, stored = _save(stored, sent)
    assert update["$unset"] == {f"outbox.{event_key(event.id)}": ""}
    assert stored["outbox"] == {} and update["$set"]["outbox_at"] is None


def test_a_republished_copy_is_stored_again() -> None:
    _, collection, stored = _save(_paid(), lambda c: _failed(c, "cause_1"))
    (event,) = collection.recorded
    # Marked sent: gone from the document.
    (where, change), *_ = sent_update(collection, 2)
    assert matches(stored, where)
    stored = apply_update(stored, change)
    assert stored["outbox"] == {} and stored["outbox_at"] is None

    update, again, stored = _save(stored, lambda c: c.republish(event))
    assert [e.id for e in again.recorded] == [event.id]
    assert f"outbox.{event_key(event.id)}" in update["$set"]
    assert stored["outbox"][event_key(event.id)]["seq"] == [3, 0]


def test_fields_the_model_does_not_know_are_left_and_new_ones_set() -> None:
    document = _paid()
    document["state"]["written_by_a_newer_version"] = 1
    del document["state"]["provider_events"]  # written by an older one

    collection, version, snapshot = read_document(copy.deepcopy(document))
    write = save_update(collection, snapshot, version + 1)
    assert write.update == {"$set": {"state.provider_events": [], "version": 2}}
    assert apply_update(document, write.update)["state"]["written_by_a_newer_version"] == 1


def test_an_event_id_that_is_no_plain_name_gets_a_key_that_is_no_path() -> None:
    assert event_key("evt_0a99f86e97584dc235b16281e7") == "evt_0a99f86e97584dc235b16281e7"
    for odd in ("evt.1", "$evt", "", "a" * 300, "evt 1"):
        key = event_key(odd)
        assert key.startswith("~") and "." not in key and "$" not in key
    assert event_key("evt.1") != event_key("evt.2")


def test_without_a_snapshot_everything_is_written() -> None:
    collection, version, _ = read_document(_paid())
    write = save_update(collection, None, version + 1)
    assert write.update["$set"]["state"] == write.document["state"]
    assert read_document(write.document)[0].stored_state() == collection.stored_state()
    assert write.update["$set"]["schema"] == SCHEMA


def test_a_schema_1_document_loads_without_its_sent_events() -> None:
    collection = new_collection("cart_1", "eu", "usd", 5000, T0)
    _failed(collection, "cause_1")
    _failed(collection, "cause_2")
    collection.commit_recorded()
    collection.outbox[0].sent = True
    state = collection.model_dump(mode="json")
    document = {"_id": collection.id, "cart_id": "cart_1", "version": 7, "state": state}
    document["outbox_pending"] = True

    loaded, version, snapshot = read_document(copy.deepcopy(document))
    assert version == 7 and snapshot.schema == 1
    assert [e.id for e in loaded.outbox] == [collection.outbox[1].id]

    write = save_update(loaded, snapshot, 8)
    stored = apply_update(document, write.update)
    assert stored["schema"] == SCHEMA and "outbox_pending" not in stored
    assert "outbox" not in stored["state"] and list(stored["outbox"]) == [
        event_key(collection.outbox[1].id)
    ]
    # Marking a schema-1 document sent: the one update that matches it.
    (change,) = [c for w, c in sent_update(loaded, 7) if matches(document, w)]
    assert apply_update(document, change)["state"]["outbox"] == []


def _remember(c: PaymentCollection, *numbers: int) -> None:
    for n in numbers:
        c.remember(f"evt_in_{n}", "cart.updated", T0)


def test_a_log_entry_added_is_the_one_thing_sent() -> None:
    _, _, stored = _save(_paid(), lambda c: _remember(c, 0, 1))
    update, _, stored = _save(stored, lambda c: _remember(c, 2))
    assert update["$set"] == {
        f"state.processed.{log_key(2)}": update["$set"][f"state.processed.{log_key(2)}"],
        "version": 3,
    }
    assert update["$set"][f"state.processed.{log_key(2)}"]["id"] == "evt_in_2"
    assert [e["id"] for e in log_entries(stored["state"]["processed"])] == [
        "evt_in_0",
        "evt_in_1",
        "evt_in_2",
    ]


def test_a_log_past_its_window_loses_its_oldest_entries() -> None:
    _, _, stored = _save(_paid(), lambda c: _remember(c, *range(INBOX_WINDOW)))
    update, collection, stored = _save(stored, lambda c: _remember(c, 100, 101))
    assert set(update["$set"]) == {
        f"state.processed.{log_key(64)}",
        f"state.processed.{log_key(65)}",
        "version",
    }
    assert set(update["$unset"]) == {
        f"state.processed.{log_key(0)}",
        f"state.processed.{log_key(1)}",
    }
    assert len(stored["state"]["processed"]) == INBOX_WINDOW
    assert [p.id for p in collection.processed][-2:] == ["evt_in_100", "evt_in_101"]


def test_the_payments_history_is_a_log_too() -> None:
    def log(c: PaymentCollection) -> None:
        assert c.payment is not None
        c.payment.log(HistoryEntry(at=T0, action="capture", command_id="cmd_1", outcome="ok"))

    _, _, stored = _save(_paid(), log)
    update, _, stored = _save(stored, log)
    assert set(update["$set"]) == {f"state.payment.history.{log_key(1)}", "version"}
    assert list(stored["state"]["payment"]["history"]) == [log_key(0), log_key(1)]


def test_a_log_entry_changed_in_place_renumbers_the_log() -> None:
    _, _, stored = _save(_paid(), lambda c: _remember(c, 0, 1))

    def change(c: PaymentCollection) -> None:
        c.processed[0].fingerprint = "changed"

    update, _, stored = _save(stored, change)
    assert set(update["$set"]) == {
        f"state.processed.{log_key(2)}",
        f"state.processed.{log_key(3)}",
        "version",
    }
    assert set(update["$unset"]) == {
        f"state.processed.{log_key(0)}",
        f"state.processed.{log_key(1)}",
    }
