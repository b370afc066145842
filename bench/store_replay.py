"""The store limit: the service's MongoDB operations per checkout, without Kafka.

Two steps (subcommands; bench/run.py runs them as subprocesses):

``calibrate``
    Runs the service's own batch processor in-process (real `PaymentService`,
    `MongoCollectionStore`, sandbox provider; a publisher that does nothing) over a
    few carts, one cart per batch (`cart.updated` + `checkout.completed`), and
    captures every MongoDB command it issues, in order, through pymongo command
    monitoring. Commands issued inside a handler are the cart's chain; the others
    (before the handlers: prefetches; after: the bulk mark-sent) are batch-level.

``replay``
    Issues those commands again for N new carts with the same driver
    (`AsyncMongoClient`, through the same helpers: find_one, insert_one,
    replace_one, bulk_write…) and the same concurrency as the service: carts in
    batches, the carts of a batch concurrently (a semaphore of
    PAYMENTS_MAX_CONCURRENCY), one cart's commands in order, the batch-level
    commands of all carts of a batch merged into one (one `$in` find, one bulk
    write). Every id of the calibration cart is made unique per replayed cart.
    Reports checkouts/s and the commands it issued, for comparison with what the
    service issued.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bson
from pymongo import (
    AsyncMongoClient,
    DeleteMany,
    DeleteOne,
    ReplaceOne,
    ReturnDocument,
    UpdateMany,
    UpdateOne,
    monitoring,
)
from pymongo.errors import BulkWriteError, DuplicateKeyError

from bench.mongo_ops import CommandCounter, current_cart, in_group_write, per_checkout

#: Keys whose string values are ids to make unique per replayed cart.
ID_KEYS = frozenset(
    {"_id", "id", "cart_id", "payment_id", "collection_id", "session_id", "idempotency_key"}
)
DROPPED_KEYS = frozenset({"lsid", "txnNumber", "$db", "$clusterTime", "$readPreference"})
ARRAYS = {"insert": "documents", "update": "updates", "delete": "deletes"}


# -- calibration -------------------------------------------------------------------


class NullPublisher:
    async def publish(self, events: Any) -> None:
        return None


async def calibrate(args: argparse.Namespace) -> None:
    from bench.workload import build_carts
    from service.adapters.mongo_store import MongoStoreBatch
    from service.consumer import Record
    from service.entrypoints.app import PaymentsApp
    from service.handlers import PaymentService
    from service.settings import load_settings

    captured: list[tuple[str | None, str, dict[str, Any]]] = []
    counter = CommandCounter()
    counter.enabled = False
    counter.capture = lambda name, cmd: captured.append(
        (current_cart.get(), in_group_write.get(), name, cmd)
    )
    monitoring.register(counter)

    settings = load_settings(
        kafka_bootstrap_servers="127.0.0.1:9",  # never connected: no broker is started
        mongodb_url=args.mongodb_url,
        mongodb_database=args.database,
        topic_prefix="",
        http_port=0,
        admin_signature_required=False,
    )
    app = PaymentsApp(settings, serve_http=False)
    await app.store.create_indexes()
    await app.providers.record_installed()
    app.processor.publisher = NullPublisher()
    # The handlers of a batch run on a copy of the service bound to the batch's store
    # view (`PaymentService.using`), so the class is wrapped (this process only).
    for name in ("cart_updated", "checkout_completed"):
        handler = getattr(PaymentService, name)

        def wrap(handler: Callable[..., Any] = handler) -> Callable[..., Any]:
            async def attributed(self: Any, command: Any) -> Any:
                token = current_cart.set(command.cart_id)
                try:
                    return await handler(self, command)
                finally:
                    current_cart.reset(token)

            return attributed

        setattr(PaymentService, name, wrap())
    # A batch's store writes the saves of concurrent handlers together (group
    # commit); mark those commands so the replay groups them the same way. Each
    # batch makes its own store view, so the class is wrapped (this process only).
    group_writer = MongoStoreBatch._write_groups

    async def tagged(self: MongoStoreBatch) -> None:
        token = in_group_write.set(True)
        try:
            await group_writer(self)
        finally:
            in_group_write.reset(token)

    MongoStoreBatch._write_groups = tagged  # type: ignore[method-assign]

    # Both orders: the two topics are not ordered against each other, and under a
    # backlog the service often sees a cart's checkout before its cart update.
    carts = build_carts(args.run_id, 2 * args.carts, tag="k")
    templates = []
    offset = 0
    for index, cart in enumerate(carts):
        checkout_first = index % 2 == 1
        events = [("cart.updated", cart.updated), ("checkout.completed", cart.checkout)]
        if checkout_first:
            events.reverse()
        records = []
        for topic, value in events:
            records.append(Record(topic, 0, offset, cart.cart_id.encode(), value, ()))
            offset += 1
        captured.clear()
        counter.enabled = True
        await app.processor.process(records)
        counter.enabled = False
        chain, pre, post = [], [], []
        for owner, grouped, name, cmd in captured:
            cmd = {k: v for k, v in cmd.items() if k not in DROPPED_KEYS}
            if owner is not None:
                chain.append({"name": name, "cmd": cmd, "group": grouped})
            elif chain:
                post.append({"name": name, "cmd": cmd})
            else:
                pre.append({"name": name, "cmd": cmd})
        templates.append(
            {
                "cart_id": cart.cart_id,
                "checkout_first": checkout_first,
                "chain": chain,
                "pre": pre,
                "post": post,
            }
        )
    Path(args.out).write_bytes(bson.encode({"templates": templates}))  # noqa: ASYNC240
    counts = counter.snapshot()
    summary = {
        "carts": len(carts),
        "per_checkout": per_checkout(counts, len(carts)),
        "chains": {
            "cart_update_first": _chain_names(templates, False),
            "checkout_first": _chain_names(templates, True),
        },
        # What the driver sent, by command (pymongo command monitoring, no adapter counter).
        "store_commands": {key: values[0] for key, values in sorted(counts.items())},
    }
    print(json.dumps(summary))
    await app.mongo.close()


def _chain_names(templates: list[dict[str, Any]], checkout_first: bool) -> list[str]:
    for t in templates:
        if t["checkout_first"] == checkout_first:
            return [
                f"{part}: {item['name']} {item['cmd'].get(item['name'])}"
                + (" (group write)" if item.get("group") else "")
                for part in ("pre", "chain", "post")
                for item in t[part]
            ]
    return []


# -- templates ----------------------------------------------------------------------


def _collect_ids(value: Any, key: str | None, found: set[str]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _collect_ids(v, k, found)
    elif isinstance(value, list):
        for v in value:
            _collect_ids(v, key, found)
    elif isinstance(value, str) and key in ID_KEYS and len(value) >= 8:
        found.add(value)


class _Ids:
    """A string containing calibration ids; rendered with a per-cart suffix."""

    __slots__ = ("parts",)

    def __init__(self, text: str, ids: list[str]) -> None:
        # Split the text into constant pieces and ids, longest ids first.
        parts: list[tuple[bool, str]] = [(False, text)]
        for ident in ids:
            nxt: list[tuple[bool, str]] = []
            for is_id, piece in parts:
                if is_id or ident not in piece:
                    nxt.append((is_id, piece))
                    continue
                pieces = piece.split(ident)
                for i, p in enumerate(pieces):
                    if i:
                        nxt.append((True, ident))
                    if p:
                        nxt.append((False, p))
            parts = nxt
        self.parts = parts

    def render(self, suffix: str) -> str:
        return "".join(p + suffix if is_id else p for is_id, p in self.parts)


def _compile(value: Any, ids: list[str]) -> Any:
    if isinstance(value, dict):
        return {k: _compile(v, ids) for k, v in value.items()}
    if isinstance(value, list):
        return [_compile(v, ids) for v in value]
    if isinstance(value, str) and any(i in value for i in ids):
        return _Ids(value, ids)
    return value


def _render(value: Any, suffix: str) -> Any:
    if isinstance(value, dict):
        return {k: _render(v, suffix) for k, v in value.items()}
    if isinstance(value, list):
        return [_render(v, suffix) for v in value]
    if isinstance(value, _Ids):
        return value.render(suffix)
    return value


def compile_templates(raw: list[dict[str, Any]]) -> list[dict[str, Any]]:
    compiled = []
    for template in raw:
        found: set[str] = set()
        for part in ("chain", "pre", "post"):
            for item in template[part]:
                _collect_ids(item["cmd"], None, found)
        found.add(template["cart_id"])
        ids = sorted(found, key=len, reverse=True)
        compiled.append(
            {
                "checkout_first": bool(template.get("checkout_first")),
                **{
                    part: [
                        (item["name"], _compile(item["cmd"], ids), bool(item.get("group")))
                        for item in template[part]
                    ]
                    for part in ("chain", "pre", "post")
                },
            }
        )
    return compiled


# -- issuing commands through the driver's helpers ----------------------------------


def _is_replacement(update: Any) -> bool:
    return isinstance(update, dict) and not any(k.startswith("$") for k in update)


def _write_model(statement: dict[str, Any]) -> Any:
    q, u, upsert = statement["q"], statement["u"], bool(statement.get("upsert", False))
    if _is_replacement(u):
        return ReplaceOne(q, u, upsert=upsert)
    if statement.get("multi"):
        return UpdateMany(q, u, upsert=upsert)
    return UpdateOne(q, u, upsert=upsert)


async def issue(db: Any, name: str, cmd: dict[str, Any]) -> None:
    collection = db[cmd[name]]
    try:
        if name == "find":
            flt = cmd.get("filter", {})
            if cmd.get("limit") == 1 or cmd.get("singleBatch"):
                await collection.find_one(flt, projection=cmd.get("projection"))
            else:
                cursor = collection.find(
                    flt,
                    projection=cmd.get("projection"),
                    limit=int(cmd.get("limit", 0)),
                    sort=list(cmd["sort"].items()) if cmd.get("sort") else None,
                )
                await cursor.to_list()
        elif name == "insert":
            documents = cmd["documents"]
            if len(documents) == 1:
                await collection.insert_one(documents[0])
            else:
                await collection.insert_many(documents, ordered=cmd.get("ordered", True))
        elif name == "update":
            statements = cmd["updates"]
            if len(statements) == 1:
                s = statements[0]
                if _is_replacement(s["u"]):
                    await collection.replace_one(s["q"], s["u"], upsert=bool(s.get("upsert")))
                elif s.get("multi"):
                    await collection.update_many(s["q"], s["u"], upsert=bool(s.get("upsert")))
                else:
                    await collection.update_one(s["q"], s["u"], upsert=bool(s.get("upsert")))
            else:
                await collection.bulk_write(
                    [_write_model(s) for s in statements], ordered=cmd.get("ordered", True)
                )
        elif name == "delete":
            statements = cmd["deletes"]
            models = [
                DeleteOne(s["q"]) if s.get("limit", 0) == 1 else DeleteMany(s["q"])
                for s in statements
            ]
            if len(models) == 1:
                if isinstance(models[0], DeleteOne):
                    await collection.delete_one(statements[0]["q"])
                else:
                    await collection.delete_many(statements[0]["q"])
            else:
                await collection.bulk_write(models, ordered=cmd.get("ordered", True))
        elif name == "findAndModify":
            await collection.find_one_and_update(
                cmd.get("query", {}),
                cmd["update"],
                upsert=bool(cmd.get("upsert")),
                return_document=ReturnDocument.AFTER if cmd.get("new") else ReturnDocument.BEFORE,
            )
        else:
            await db.command(cmd)
    except (DuplicateKeyError, BulkWriteError):
        pass  # as in the service: an expected outcome, not a failure


async def copy_indexes(source: Any, target: Any) -> None:
    """The service's indexes (as its start-up created them), on the replay database."""
    for name in await source.list_collection_names():
        async for index in await source[name].list_indexes():
            if index["name"] == "_id_":
                continue
            await target[name].create_index(
                list(index["key"].items()), unique=bool(index.get("unique", False))
            )


def _merge(commands: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
    """One command per position for the whole batch: arrays and `$in` lists joined."""
    if not commands:
        return []
    name, first = commands[0]
    field = ARRAYS.get(name)
    if field is not None:
        merged = dict(first)
        merged[field] = [s for _, c in commands for s in c[field]]
        return [(name, merged)]
    if name == "find":
        flt = first.get("filter", {})
        in_keys = [k for k, v in flt.items() if isinstance(v, dict) and "$in" in v]
        if in_keys and first.get("limit", 0) != 1:
            merged = dict(first)
            merged["filter"] = {
                **flt,
                **{
                    k: {"$in": [x for _, c in commands for x in c["filter"][k]["$in"]]}
                    for k in in_keys
                },
            }
            return [(name, merged)]
    return list(commands)


class GroupWriter:
    """The store's group commit, replayed: at most one group in flight; commands
    submitted meanwhile are merged by (command, collection) into the next one."""

    def __init__(self, db: Any) -> None:
        self.db = db
        self.pending: list[tuple[str, dict[str, Any], asyncio.Future[None]]] = []
        self.task: asyncio.Task[None] | None = None

    async def submit(self, name: str, cmd: dict[str, Any]) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pending.append((name, cmd, done))
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._run())
        await done

    async def _run(self) -> None:
        while self.pending:
            group, self.pending = self.pending, []
            by_kind: dict[tuple[str, str], list[tuple[str, dict[str, Any]]]] = {}
            for name, cmd, _ in group:
                by_kind.setdefault((name, cmd[name]), []).append((name, cmd))
            await asyncio.gather(*(self._issue(items) for items in by_kind.values()))
            for _, _, done in group:
                if not done.done():
                    done.set_result(None)

    async def _issue(self, items: list[tuple[str, dict[str, Any]]]) -> None:
        for name, cmd in _merge(items):
            await issue(self.db, name, cmd)


async def replay(args: argparse.Namespace) -> None:
    raw = bson.decode(Path(args.templates).read_bytes())["templates"]  # noqa: ASYNC240
    templates = compile_templates(raw)
    by_order = {
        flag: [t for t in templates if t["checkout_first"] == flag] or templates
        for flag in (False, True)
    }
    counter = CommandCounter()
    counter.enabled = False
    monitoring.register(counter)
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        args.mongodb_url, tz_aware=True, uuidRepresentation="standard"
    )
    db = client[args.database]
    await db.command("ping")
    await copy_indexes(client[args.indexes_from], db)
    semaphore = asyncio.Semaphore(args.concurrency)
    group_writer = GroupWriter(db)

    async def run_chain(chain: list[tuple[str, dict[str, Any], bool]]) -> None:
        async with semaphore:
            for name, cmd, grouped in chain:
                if grouped:
                    await group_writer.submit(name, cmd)
                else:
                    await issue(db, name, cmd)

    carts = list(range(args.start, args.start + args.n))
    counter.enabled = True
    last: tuple[dict[str, list[int]], dict[str, int]] = ({}, {})
    t_start = time.time()
    started = mark = time.perf_counter()
    for offset in range(0, len(carts), args.batch_carts):
        batch = carts[offset : offset + args.batch_carts]
        rendered = []
        for j in batch:
            # Spread the checkout-first carts evenly, in the service's proportion.
            first = int((j + 1) * args.checkout_first) > int(j * args.checkout_first)
            choices = by_order[first]
            template = choices[j % len(choices)]
            suffix = f"~{args.tag}{j}"
            rendered.append(
                {
                    part: [(n, _render(c, suffix), g) for n, c, g in template[part]]
                    for part in ("chain", "pre", "post")
                }
            )
        for position in range(len(rendered[0]["pre"])):
            for name, cmd in _merge([r["pre"][position][:2] for r in rendered]):
                await issue(db, name, cmd)
        await asyncio.gather(*(run_chain(r["chain"]) for r in rendered))
        for position in range(len(rendered[0]["post"])):
            for name, cmd in _merge([r["post"][position][:2] for r in rendered]):
                await issue(db, name, cmd)
        if args.progress:
            now = time.perf_counter()
            counts, micros = counter.snapshot(), dict(counter.micros)
            slow = {
                k: round(
                    (micros.get(k, 0) - last[1].get(k, 0)) / 1000 / (v[0] - last[0].get(k, [0])[0]),
                    2,
                )
                for k, v in counts.items()
                if v[0] > last[0].get(k, [0])[0]
            }
            print(
                f"{offset + len(batch)} {len(batch) / (now - mark):.0f}/s {slow}", file=sys.stderr
            )
            mark, last = now, (counts, micros)
    elapsed = time.perf_counter() - started
    t_end = time.time()
    counter.enabled = False
    await client.close()
    print(
        json.dumps(
            {
                "n": args.n,
                "elapsed_s": elapsed,
                "t_start": t_start,
                "t_end": t_end,
                "checkouts_per_s": args.n / elapsed,
                "counts": counter.snapshot(),
                "mean_ms": counter.mean_ms(),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="step", required=True)
    cal = sub.add_parser("calibrate")
    cal.add_argument("--mongodb-url", required=True)
    cal.add_argument("--database", required=True)
    cal.add_argument("--run-id", required=True)
    cal.add_argument("--carts", type=int, default=16, help="carts per order")
    cal.add_argument("--out", required=True)
    rep = sub.add_parser("replay")
    rep.add_argument("--mongodb-url", required=True)
    rep.add_argument("--database", required=True)
    rep.add_argument("--templates", required=True)
    rep.add_argument("--indexes-from", required=True, help="the calibration database")
    rep.add_argument("--n", type=int, required=True)
    rep.add_argument("--start", type=int, default=0)
    rep.add_argument("--tag", default="r")
    rep.add_argument("--batch-carts", type=int, default=250)
    rep.add_argument("--concurrency", type=int, default=256)
    rep.add_argument("--progress", action="store_true")
    rep.add_argument(
        "--checkout-first",
        type=float,
        default=0.0,
        help="share of carts whose checkout the service handled before their cart update",
    )
    args = parser.parse_args()
    asyncio.run(calibrate(args) if args.step == "calibrate" else replay(args))


if __name__ == "__main__":
    main()
