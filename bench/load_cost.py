"""What loading and saving one payment collection costs in CPU, on realistic documents.

    .venv/bin/python bench/load_cost.py [--repeat 2000] [--json]

The documents are made by the service itself (in memory, `tests/support/world.py`):
`full` after a cart update, a checkout, a capture and a refund (the `make bench`
full flow); `busy` after ten more captures and refunds. For each it times, in µs per
call (the best of five rounds, so a loaded machine reads high, never low):

- `validate`: `PaymentCollection.model_validate` of the stored state (what every
  load does, `read_document`);
- `trusted`: building the same models without validation, the fastest way found in
  Python (code generated per model class: no per-field dispatch, datetimes parsed,
  containers copied, as the load needs). Issue 23 asked for trusted loads only if
  faster than `validate`; this is the figure that decided (see below);
- `dump`: `stored_state()` (the save's `model_dump`, whole, as before and now);
- `diff`: `save_update` on a change of one field (the dump plus the comparison);
- `bytes`: the BSON size of the whole document, and of the update of that change.

The trusted build lives here, not in the service: pydantic's validator (Rust) is
as fast as the generated Python on these documents or faster, so the store always
validates (and needs no switch to validate in tests).
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import enum
import json
import sys
import timeit
import types
import typing
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bson
from pydantic import BaseModel

from service.adapters.stored_document import (
    decode_logs,
    new_document,
    read_document,
    save_update,
)
from service.domain.model import PaymentCollection
from tests.support.world import World


async def documents() -> dict[str, dict[str, Any]]:
    world = World()
    await world.cart("cart_1", 5000)
    await world.checkout("cart_1", 5000, "K1")
    collection = await world.collection("cart_1")
    assert collection.payment is not None
    payment_id = collection.payment.id
    await world.command("capture", payment_id, amount=3000)
    await world.command("refund", payment_id, amount=1000)
    made = {"full": copy.deepcopy(world.store.documents[collection.id])}
    for _ in range(10):
        await world.command("capture", payment_id, amount=100)
        await world.command("refund", payment_id, amount=50)
    made["busy"] = copy.deepcopy(world.store.documents[collection.id])
    return made


# -- the trusted build that was measured ----------------------------------------------


def trusted_builder(cls: type[BaseModel]) -> Callable[[dict[str, Any]], Any]:
    """A function building `cls` from its own `model_dump(mode="json")` unchecked."""
    namespace: dict[str, Any] = {
        "_new": object.__new__,
        "_set": object.__setattr__,
        "_datetime": datetime.fromisoformat,
        "_copy": lambda v: dict(v) if isinstance(v, dict) else list(v),
    }
    return namespace[_generate(cls, namespace, set())]  # type: ignore[no-any-return]


def _generate(cls: type[BaseModel], namespace: dict[str, Any], seen: set[str]) -> str:
    name = f"build_{cls.__name__}"
    if name in seen:
        return name
    seen.add(name)
    namespace[f"C_{cls.__name__}"] = cls
    namespace[f"F_{cls.__name__}"] = frozenset(cls.model_fields)
    values = []
    for field, info in cls.model_fields.items():
        if info.exclude:  # not in a dump: its default
            namespace[f"D_{cls.__name__}_{field}"] = info.default_factory or (
                lambda info=info: info.default
            )
            values.append(f'"{field}": D_{cls.__name__}_{field}()')
        else:
            values.append(
                f'"{field}": {_conversion(info.annotation, f"s[{field!r}]", namespace, seen)}'
            )
    fields = ", ".join(values)
    privates = []
    for index, (private, attribute) in enumerate(cls.__private_attributes__.items()):
        namespace[f"P_{cls.__name__}_{index}"] = attribute.default_factory
        privates.append(f'"{private}": P_{cls.__name__}_{index}()')
    private_dict = "{" + ", ".join(privates) + "}" if privates else "None"
    source = (
        f"def {name}(s):\n"
        f"    m = _new(C_{cls.__name__})\n"
        f'    _set(m, "__dict__", {{{fields}}})\n'
        f'    _set(m, "__pydantic_fields_set__", set(F_{cls.__name__}))\n'
        f'    _set(m, "__pydantic_extra__", None)\n'
        f'    _set(m, "__pydantic_private__", {private_dict})\n'
        f"    return m\n"
    )
    exec(source, namespace)
    return name


def _conversion(annotation: Any, source: str, namespace: dict[str, Any], seen: set[str]) -> str:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        (inner,) = [a for a in typing.get_args(annotation) if a is not type(None)]
        converted = _conversion(inner, "v", namespace, seen)
        return source if converted == "v" else f"(None if (v := {source}) is None else {converted})"
    if origin is typing.Literal:
        return source
    if origin is list:
        converted = _conversion(typing.get_args(annotation)[0], "x", namespace, seen)
        return f"list({source})" if converted == "x" else f"[{converted} for x in {source}]"
    if origin is dict or annotation is Any:
        return f"_copy({source})"
    if isinstance(annotation, type):
        if issubclass(annotation, BaseModel):
            return f"{_generate(annotation, namespace, seen)}({source})"
        if issubclass(annotation, enum.Enum):
            namespace[f"E_{annotation.__name__}"] = annotation
            return f"E_{annotation.__name__}({source})"
        if annotation is datetime:
            return f"_datetime({source})"
        if annotation in (bool, float):
            return f"{annotation.__name__}({source})"
        if annotation in (str, int):
            return source
    raise TypeError(f"no trusted conversion for {annotation!r}")


# -- the measurements ---------------------------------------------------------------


def micros(call: Callable[[], object], repeat: int) -> float:
    return round(min(timeit.repeat(call, number=repeat, repeat=5)) / repeat * 1e6, 1)


def measure(document: dict[str, Any], repeat: int) -> dict[str, Any]:
    trusted = trusted_builder(PaymentCollection)
    outbox = sorted(document["outbox"].values(), key=lambda e: tuple(e["seq"]))
    state = {**decode_logs(document["state"]), "outbox": outbox}
    assert trusted(state) == PaymentCollection.model_validate(state)
    collection, version, snapshot = read_document(copy.deepcopy(document))

    def changed() -> PaymentCollection:
        c, _, _ = read_document(copy.deepcopy(document))
        c.email = "someone@example.com"
        return c

    one_change = changed()
    update = save_update(one_change, snapshot, version + 1).update
    return {
        "state_json_bytes": len(json.dumps(document["state"])),
        "validate_us": micros(lambda: PaymentCollection.model_validate(state), repeat),
        "trusted_us": micros(lambda: trusted(state), repeat),
        "dump_us": micros(collection.stored_state, repeat),
        "diff_us": micros(lambda: save_update(one_change, snapshot, version + 1), repeat),
        "whole_document_bytes": len(bson.encode(new_document(collection, version))),
        "one_field_update_bytes": len(bson.encode(update)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    made = asyncio.run(documents())
    figures = {name: measure(document, args.repeat) for name, document in made.items()}
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        for name, row in figures.items():
            print(name, "  ".join(f"{k}={v}" for k, v in row.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
