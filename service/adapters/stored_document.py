"""A payment collection's stored document (schema 2), and what each write sends.

    {_id, schema: 2, cart_id, payment_id, version, outbox_at, reconcile, reconcile_at,
     attention, audited, updated_at, write_id, state: <the aggregate without its outbox>,
     outbox: {<event key>: <an unsent event, with its seq>}}

The top-level scalars are what queries find (the relay: `outbox_at`, set while events
are unsent; the reconciler: `reconcile`, `reconcile_at`; the gauges: `attention`; the
audit sweep: `audited`, `updated_at`). `write_id` tells a group commit which writes were
its own (the batch store).

The outbox is a map of the unsent events only, keyed by event id (:func:`event_key`),
so that a write adds an event with a `$set` of its own path and marking it sent
removes it with an `$unset`: no array operators, which nx-27017 gets wrong (`$push`
of sub-documents, `$pull` with a condition, `$set` of an element by index). Each
entry carries `seq`, [the version that stored it, its place in that write], the
order the events are published in (a map's order is not kept: MongoDB applies a
write's new fields in name order).

The logs of the aggregate (:data:`LOGS`: the inbox `processed`, the payment's
`history`), lists that only grow at the end and lose their oldest entries, are
stored as maps too, `{"i<n, 9 digits>": entry}` in order of n (:func:`log_key`), so
a save adds the new entries and removes the dropped ones instead of rewriting the
list (a window of 64 inbox entries would otherwise be 6 KB on every write). The
aggregate sees lists.

What a save sends (:func:`save_update`): the state's fields whose JSON changed since
the load, descending into nested models (`state.payment.captures`, not all of
`state.payment`), never into free-form dicts, whose keys may be anything; the log
entries added and removed; the new unsent events; the index fields that changed;
the version. Every value `$set` is a whole value at an object path, the one form
every server here stores right. A boolean on its own may come back as 0/1 from
nx-27017; state is validated on load (pydantic reads 0/1 as booleans), and queries
on `reconcile`/`attention` still match.

Schema 1 (before): no `schema`, `outbox_pending`, and the outbox as a list inside
`state`, sent events included. Such a document loads (its sent events left out of
the aggregate's outbox) and its next save writes it whole as schema 2.
"""

from __future__ import annotations

import hashlib
import re
import types
import typing
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from service.domain.model import OutboxEvent, PaymentCollection

SCHEMA = 2

LOGS: tuple[tuple[str, ...], ...] = (("processed",), ("payment", "history"))
"""Paths (in the state) of the lists stored as maps: see the module's doc."""

INDEX_FIELDS = (
    "payment_id",
    "outbox_at",
    "reconcile",
    "reconcile_at",
    "attention",
    "audited",
    "updated_at",
)

_SAFE_KEY = re.compile(r"[A-Za-z0-9_-]{1,200}")
_MISSING = object()


def event_key(event_id: str) -> str:
    """The outbox map's key of an event: its id when that is a plain name (ours are:
    `evt_<hex>`), else a digest of it, so a key can never be a path (`.`) or an
    operator (`$`). The event keeps its id in the entry."""
    if _SAFE_KEY.fullmatch(event_id):
        return event_id
    return "~" + hashlib.blake2b(event_id.encode(), digest_size=16).hexdigest()


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What a load read: the base of the next save's diff (opaque outside the adapters).

    `state` is the stored state as read, shared with nothing but the model validated
    from it; pydantic copies the containers of the model's fields, and values inside
    free-form dicts are replaced by the domain, never changed in place (the in-memory
    store checks that on every save).
    """

    schema: int
    state: dict[str, Any]
    """As stored (logs as maps)."""
    index: dict[str, Any]
    outbox: dict[str, dict[str, Any]]
    """Key → entry (with its seq) of the stored unsent events."""


def index_fields(collection: PaymentCollection) -> dict[str, Any]:
    unsent = [e.created_at for e in collection.unsent_events]
    return {
        "payment_id": collection.payment.id if collection.payment else None,
        # The oldest unsent event: the relay takes the longest waiting first.
        "outbox_at": min(unsent) if unsent else None,
        "reconcile": collection.needs_reconcile,
        # When the reconciler is due (leases, back-off): it takes the longest due first.
        "reconcile_at": collection.reconcile_due_at,
        # Operations a person must look at (`needs_attention`), for the gauge.
        "attention": bool(collection.needs_attention),
        # Money may be held at a provider for it: the audit sweep reads those.
        "audited": collection.audited,
        "updated_at": collection.updated_at,
    }


def entry(event: OutboxEvent, seq: list[int]) -> dict[str, Any]:
    stored = event.model_dump(mode="json")
    stored["seq"] = seq
    return stored


def new_document(collection: PaymentCollection, version: int = 1) -> dict[str, Any]:
    """The whole schema-2 document of a collection at `version` (an insert, or the
    rewrite of a document of another schema)."""
    return {
        "_id": collection.id,
        "schema": SCHEMA,
        "cart_id": collection.cart_id,
        "version": version,
        **index_fields(collection),
        "state": _encode_logs(collection.stored_state(), None),
        "outbox": {
            event_key(e.id): entry(e, [version, i]) for i, e in enumerate(collection.unsent_events)
        },
    }


def read_document(document: dict[str, Any]) -> tuple[PaymentCollection, int, Snapshot]:
    """The collection a stored document holds (either schema), validated, with what
    the next save needs to send only what changed.

    Always validated, even what this code wrote: building the models without
    validation was measured (`bench/load_cost.py`) and was no faster than pydantic's
    validator, so there is no trusted load to switch off in tests."""
    state = document["state"]
    schema = int(document.get("schema") or 1)
    outbox: dict[str, dict[str, Any]] = {}
    if schema == 1:
        collection = PaymentCollection.model_validate(state)
        # Sent events stay out: the outbox holds what is unsent (the upgrade drops them).
        collection.outbox = [e for e in collection.outbox if not e.sent]
    else:
        outbox = dict(
            sorted(
                (document.get("outbox") or {}).items(),
                key=lambda item: tuple(item[1].get("seq") or ()),
            )
        )
        collection = PaymentCollection.model_validate(
            {**decode_logs(state), "outbox": list(outbox.values())}
        )
    index = {name: document.get(name) for name in INDEX_FIELDS}
    snapshot = Snapshot(schema=schema, state=state, index=index, outbox=outbox)
    return collection, int(document["version"]), snapshot


@dataclass(slots=True)
class SaveUpdate:
    """One version-checked update, and the document it leaves (for the batch's next load)."""

    update: dict[str, dict[str, Any]]
    document: dict[str, Any]


def save_update(
    collection: PaymentCollection, snapshot: Snapshot | None, version: int
) -> SaveUpdate:
    """The update that stores `collection` as `version` over what `snapshot` read
    (None: nothing known of the stored document, so all of it is written)."""
    if snapshot is None or snapshot.schema != SCHEMA:
        document = new_document(collection, version)
        fields = {k: v for k, v in document.items() if k not in ("_id", "cart_id")}
        # `outbox_pending`: schema 1's flag, gone with it.
        return SaveUpdate({"$set": fields, "$unset": {"outbox_pending": ""}}, document)
    sets: dict[str, Any] = {}
    unsets: dict[str, Any] = {}
    state = _encode_logs(collection.stored_state(), snapshot.state)
    _diff(snapshot.state, state, (), PaymentCollection, sets, unsets)
    # The outbox: what is unsent now and not stored yet (new events, republished
    # copies) is added; what was stored and is no longer unsent leaves.
    outbox: dict[str, dict[str, Any]] = {}
    added = 0
    for event in collection.unsent_events:
        key = event_key(event.id)
        stored = snapshot.outbox.get(key)
        if stored is None:
            sets[f"outbox.{key}"] = outbox[key] = entry(event, [version, added])
            added += 1
        else:
            outbox[key] = stored
    for key in snapshot.outbox.keys() - outbox.keys():
        unsets[f"outbox.{key}"] = ""
    index = index_fields(collection)
    for name, value in index.items():
        if not _same(snapshot.index.get(name, _MISSING), value):
            sets[name] = value
    sets["version"] = version
    update: dict[str, dict[str, Any]] = {"$set": sets}
    if unsets:
        update["$unset"] = unsets
    document = {
        "_id": collection.id,
        "schema": SCHEMA,
        "cart_id": collection.cart_id,
        "version": version,
        **index,
        "state": state,
        "outbox": outbox,
    }
    return SaveUpdate(update, document)


def sent_update(
    collection: PaymentCollection, version: int, *, legacy: bool = True
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(filter, update) pairs marking the unsent events of `collection` as stored at
    `version` sent: exactly one of them matches the stored document.

    Still at `version`: the events leave, and nothing is left unsent (they were all of
    it). A newer version: they leave too (if that write did not store them again);
    its `outbox_at` stays, at worst older than its oldest event, and the relay clears
    it if nothing is left. Schema 1 at `version` (no `schema`; nx-27017 matches no
    `$ne` on a missing field in an update): its outbox list, all sent, is dropped;
    `legacy` False (no such document is left) spares that third update.
    """
    removed = {f"outbox.{event_key(e.id)}": "" for e in collection.unsent_events}
    updates: list[tuple[dict[str, Any], dict[str, Any]]] = [
        (
            {"_id": collection.id, "version": version, "schema": SCHEMA},
            {"$unset": removed, "$set": {"outbox_at": None}},
        ),
        ({"_id": collection.id, "version": {"$ne": version}}, {"$unset": removed}),
    ]
    if legacy:
        updates.append(
            (
                {"_id": collection.id, "version": version, "schema": {"$exists": False}},
                {"$set": {"state.outbox": [], "outbox_pending": False, "outbox_at": None}},
            )
        )
    return updates


def archive_entry(
    collection: PaymentCollection, event: OutboxEvent, sent_at: datetime
) -> dict[str, Any]:
    """A sent event in the archive (`sent_events`), for `payments republish`."""
    return {
        "_id": event.id,
        "key": event.key,
        "type": event.type,
        "collection_id": collection.id,
        "created_at": event.created_at,
        "sent_at": sent_at,
        "event": event.model_dump(mode="json"),
    }


def log_entries(value: Any) -> list[Any]:
    """A log's entries in order, from its stored map (or a list, as schema 1 and the
    first documents of schema 2 stored it)."""
    if isinstance(value, dict):
        return [value[key] for key in sorted(value)]
    return list(value or [])


def log_key(number: int) -> str:
    """The key of a log's entry: zero-padded, so the keys sort as the numbers do."""
    return f"i{number:09d}"


def _encode_logs(state: dict[str, Any], stored: dict[str, Any] | None) -> dict[str, Any]:
    """`state` (a fresh dump, changed in place) with each log as a map, numbered on
    from the stored one: entries still there keep their keys, new ones come after."""
    for path in LOGS:
        parent = _parent(state, path)
        if parent is None or not isinstance(parent.get(path[-1]), list):
            continue
        before = _parent(stored, path) if stored is not None else None
        old = before.get(path[-1]) if before is not None else None
        parent[path[-1]] = _log_map(parent[path[-1]], old if isinstance(old, dict) else {})
    return state


def _log_map(entries: list[Any], stored: dict[str, Any]) -> dict[str, Any]:
    keys = sorted(stored)
    values = [stored[k] for k in keys]
    following = int(keys[-1][1:]) + 1 if keys else 0
    # The entries kept are the stored ones from `start` on (the oldest were dropped),
    # followed by the new ones; none kept when nothing lines up.
    start = len(values)
    if entries and values:
        try:
            candidate = values.index(entries[0])
        except ValueError:
            candidate = len(values)
        if values[candidate:] == entries[: len(values) - candidate]:
            start = candidate
    kept = len(values) - start
    result = dict(zip(keys[start:], entries[:kept], strict=True))
    for offset, new in enumerate(entries[kept:]):
        result[log_key(following + offset)] = new
    return result


def decode_logs(state: dict[str, Any]) -> dict[str, Any]:
    """A shallow copy of a stored state with its logs as lists (for validation)."""
    decoded = dict(state)
    for path in LOGS:
        parent: dict[str, Any] | None = decoded
        for part in path[:-1]:
            child = parent.get(part) if parent is not None else None
            if not isinstance(child, dict):
                parent = None
                break
            parent[part] = parent = dict(child)
        if parent is not None and isinstance(parent.get(path[-1]), dict):
            parent[path[-1]] = log_entries(parent[path[-1]])
    return decoded


def _parent(state: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any] | None:
    parent: Any = state
    for part in path[:-1]:
        parent = parent.get(part) if isinstance(parent, dict) else None
    return parent if isinstance(parent, dict) else None


def stored_events(document: dict[str, Any]) -> list[OutboxEvent]:
    """Every event a document holds, in order: schema 2, the unsent ones; schema 1,
    its whole outbox list, sent ones included (for `payments republish`)."""
    if int(document.get("schema") or 1) == 1:
        return [OutboxEvent.model_validate(e) for e in document["state"].get("outbox", [])]
    entries = sorted((document.get("outbox") or {}).values(), key=lambda e: tuple(e["seq"]))
    return [OutboxEvent.model_validate(e) for e in entries]


def archived_event(entry: dict[str, Any]) -> OutboxEvent:
    """The event an archive entry keeps, as sent."""
    return OutboxEvent.model_validate({**entry["event"], "sent": True})


# -- the diff -----------------------------------------------------------------------


def _same(old: Any, new: Any) -> bool:
    """Whether a stored index value is `new` already (BSON keeps milliseconds, and a
    client without `tz_aware` reads naive UTC)."""
    if isinstance(old, datetime) and isinstance(new, datetime):
        return _millis(old) == _millis(new)
    return bool(old == new)


def _millis(value: datetime) -> datetime:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def _diff(
    old: dict[str, Any],
    new: dict[str, Any],
    path: tuple[str, ...],
    model: type[BaseModel],
    sets: dict[str, Any],
    unsets: dict[str, Any],
) -> None:
    """`$set` the fields of `new` that differ from `old`, descending into fields that
    hold a nested model on both sides, and into logs. Fields only in `old` are left:
    a newer version of the service may have written them (extra fields are ignored
    on load)."""
    nested = _nested_models(model)
    for name, value in new.items():
        before = old.get(name, _MISSING)
        if before is not _MISSING and before == value and type(before) is type(value):
            continue
        where = (*path, name)
        inner = nested.get(name)
        if where in LOGS and isinstance(before, dict) and isinstance(value, dict):
            prefix = _path(where)
            for key, entry in value.items():
                if before.get(key, _MISSING) != entry:
                    sets[f"{prefix}.{key}"] = entry
            for key in before.keys() - value.keys():
                unsets[f"{prefix}.{key}"] = ""
        elif (
            inner is not None
            and isinstance(before, dict)
            and isinstance(value, dict)
            and not _changes_a_boolean(before, value)
        ):
            _diff(before, value, where, inner, sets, unsets)
        else:
            sets[_path(where)] = value


def _path(where: tuple[str, ...]) -> str:
    return "state." + ".".join(where)


def _changes_a_boolean(old: dict[str, Any], new: dict[str, Any]) -> bool:
    # nx-27017 stores a boolean set on its own as 0/1: its object is set whole instead.
    return any(isinstance(v, bool) and old.get(k, _MISSING) != v for k, v in new.items())


_NESTED: dict[type[BaseModel], dict[str, type[BaseModel]]] = {}


def _nested_models(model: type[BaseModel]) -> dict[str, type[BaseModel]]:
    """The fields of `model` that hold one nested model (or None)."""
    found = _NESTED.get(model)
    if found is None:
        found = {}
        for name, field in model.model_fields.items():
            annotation = field.annotation
            if typing.get_origin(annotation) in (typing.Union, types.UnionType):
                members = [a for a in typing.get_args(annotation) if a is not type(None)]
                annotation = members[0] if len(members) == 1 else None
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                found[name] = annotation
        _NESTED[model] = found
    return found
