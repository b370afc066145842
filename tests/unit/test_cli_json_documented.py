"""`docs/operate/cli.md` documents the `--json` output of every `payments` command, by key.

Each command's section of the page holds a table whose
header starts with "key of `<command> --json`" and whose rows name one key each,
backticked in the first column: `name` for a top-level key, `parent.name` inside an
object, `parent[].name` inside each element of an array. The tests run the real
commands through the CLI, with the `service.tools` functions that would talk to
Kafka or MongoDB replaced by ones returning the tools' own result objects built
from small values, and check that each documented object has exactly the
documented keys, and each value a documented type. `send` needs no replacement:
`--dry-run` and an invalid event never reach the broker.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from schemas.dead_letter import DeadLetter, DeadLetterError, DeadLetterKind
from service.domain.model import (
    Dispute,
    OutboxEvent,
    Payment,
    PaymentCollection,
    PendingOperation,
)
from service.entrypoints.cli import app
from service.tools import demo as demo_tool
from service.tools import dlq as dlq_tool
from service.tools import inspection as inspection_tool
from service.tools import replay as replay_tool
from service.tools import republish as republish_tool
from service.tools.kafka_io import PartitionRange

PAGE = Path(__file__).resolve().parents[2] / "docs" / "operate" / "cli.md"
TABLE = re.compile(
    r"^\| key of (?P<label>.+?) \| type \| meaning \|\n\|---\|---\|---\|\n(?P<rows>(?:\|.*\|\n?)+)",
    re.M,
)
ROW = re.compile(r"^\| `(?P<path>[^`]+)` \| (?P<types>[^|]+?) \|", re.M)
COMMAND = re.compile(r"`([a-z][a-z ]*?) --json`")
JSON_TYPES = frozenset({"string", "integer", "number", "boolean", "object", "array", "null"})

PREFIX = "prod."
NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
CONNECTION = ["--bootstrap-servers", "localhost:1", "--topic-prefix", PREFIX]
MONGO = ["--mongodb-url", "mongodb://localhost:1", "--database", "payments_docs"]


# -- what the page says --------------------------------------------------------------


def _cli_section() -> str:
    return PAGE.read_text(encoding="utf-8")


def _types(cell: str) -> frozenset[str]:
    # "string or null", "array" — the first word of each alternative is the JSON type.
    names = frozenset(alt.split()[0] for alt in re.split(r"\s+or\s+", cell.strip()))
    assert names <= JSON_TYPES, f"unknown JSON type in {cell!r}"
    return names


def documented_tables() -> dict[str, dict[str, frozenset[str]]]:
    """Table label (what follows "key of") -> documented key path -> JSON types."""
    tables: dict[str, dict[str, frozenset[str]]] = {}
    for match in TABLE.finditer(_cli_section()):
        label = match["label"]
        assert label not in tables, f"two tables labelled {label!r}"
        rows = {m["path"]: _types(m["types"]) for m in ROW.finditer(match["rows"])}
        assert rows, f"table {label!r} documents no key"
        tables[label] = rows
    return tables


# -- what the commands print -----------------------------------------------------------


def _letter(number: int, kind: DeadLetterKind) -> dlq_tool.DeadLetterEntry:
    letter = DeadLetter(
        source_topic=PREFIX + "checkout.completed",
        partition=2,
        offset=40 + number,
        key="cart_docs",
        value='{"not": "an event"}',
        headers={"content-type": "application/cloudevents+json"},
        error=DeadLetterError(kind=kind, detail="data.amount: field required"),
        failed_at=NOW,
    )
    letter_id = f"evt_letter_{number}"
    return dlq_tool.DeadLetterEntry(
        id=letter_id,
        dlq_partition=0,
        dlq_offset=number,
        subject="cart_docs",
        letter=letter,
        event={"id": letter_id, "type": "payments.dead_letter", "data": {}},
    )


LETTERS = [
    _letter(1, DeadLetterKind.SCHEMA_VIOLATION),
    _letter(2, DeadLetterKind.TOO_LARGE),
]


def _outbox_event() -> OutboxEvent:
    return OutboxEvent(
        id="evt_out_1",
        type="payment.authorized",
        key="cart_docs",
        payload={"id": "evt_out_1", "type": "payment.authorized"},
        causation_id="evt_checkout_1",
        created_at=NOW,
    )


def _collection() -> PaymentCollection:
    payment = Payment(
        id="pay_docs",
        session_id="ps_docs",
        provider_id="sandbox",
        amount=5000,
        currency_code="usd",
        authorized_at=NOW,
        authorized_event_id="evt_out_1",
        disputes=[
            Dispute(
                id="dp_docs",
                amount=5000,
                status="open",
                provider_status="needs_response",
                reason="fraudulent",
                opened_at=NOW,
                updated_at=NOW,
            )
        ],
        pending=[
            PendingOperation(
                operation="capture",
                command_id="cmd_docs",
                amount=2000,
                provider_key="capture_docs",
                started_at=NOW,
                attention="capture cmd_docs: the provider cannot tell what became of it",
            )
        ],
    )
    return PaymentCollection(
        id="pc_docs",
        cart_id="cart_docs",
        region_id="eu",
        currency_code="usd",
        amount=5000,
        payment=payment,
        outbox=[_outbox_event()],
        created_at=NOW,
        updated_at=NOW,
    )


def _async(value: Any) -> Callable[..., Any]:
    """A stand-in for a tool coroutine function: whatever it is given, it returns `value`."""

    async def tool(*args: Any, **kwargs: Any) -> Any:
        return value

    return tool


def _fake_dlq(monkeypatch: pytest.MonkeyPatch) -> None:
    scan = dlq_tool.DeadLetterScan(list(LETTERS))
    redriven = dlq_tool.RedriveResult(
        [
            dlq_tool.RedriveItem(LETTERS[0], LETTERS[0].letter.source_topic, 2),
            dlq_tool.RedriveItem(
                LETTERS[1],
                LETTERS[1].letter.source_topic,
                None,
                skipped=dlq_tool.NOT_REDRIVABLE[DeadLetterKind.TOO_LARGE],
            ),
        ],
        dry_run=False,
    )
    monkeypatch.setattr(dlq_tool, "read_dead_letters", _async(scan))
    monkeypatch.setattr(dlq_tool, "list_dead_letters", _async(scan))
    monkeypatch.setattr(dlq_tool, "redrive", _async(redriven))


def _fake_replay(monkeypatch: pytest.MonkeyPatch) -> None:
    result = replay_tool.ReplayResult(
        topic=PREFIX + "checkout.completed",
        ranges=[PartitionRange(0, 3, 7), PartitionRange(1, 5, 5)],
        read=4,
        matched=1,
        sent=1,
        dry_run=False,
    )
    monkeypatch.setattr(replay_tool, "replay", _async(result))


def _fake_republish(monkeypatch: pytest.MonkeyPatch) -> None:
    result = republish_tool.RepublishResult([_outbox_event()], dry_run=True)
    monkeypatch.setattr(republish_tool, "republish", _async(result))


def _fake_inspect(monkeypatch: pytest.MonkeyPatch) -> None:
    found = inspection_tool.Inspection("payment", "pay_docs", 3, _collection())
    monkeypatch.setattr(inspection_tool, "inspect", _async(found))


def _fake_demo(monkeypatch: pytest.MonkeyPatch) -> None:
    scenario = demo_tool.SCENARIOS[1]
    answer = demo_tool.DemoEvent(
        scenario.name,
        PREFIX + "payment.failed",
        {"id": "evt_out_2", "type": "payment.failed", "data": {"reason": "declined"}},
    )
    run = demo_tool.ScenarioRun(
        scenario, "cart_demo_docs", "idem_docs", events=[answer], outcome="passed"
    )
    monkeypatch.setattr(demo_tool, "run_demo", _async(demo_tool.DemoResult([run])))


def _fake_resolve(monkeypatch: pytest.MonkeyPatch) -> None:
    from service.tools import resolve as resolve_tool
    from service.unit_of_work import HandleResult

    collection = _collection()
    collection.outbox = [_outbox_event()]
    found = resolve_tool.Resolution(
        "pay_docs",
        "cmd_docs",
        True,
        "ops@example.com",
        HandleResult("applied", saved=[(collection, 4)]),
    )
    monkeypatch.setattr(resolve_tool, "resolve", _async(found))


def _no_fake(monkeypatch: pytest.MonkeyPatch) -> None:
    pass


VALID_EVENT = json.dumps(
    {
        "specversion": "1.0",
        "id": "evt-cart-docs",
        "source": "/ops",
        "type": "cart.updated",
        "data": {"cart_id": "cart_docs", "region_id": "eu", "currency_code": "EUR", "amount": 42},
    }
)


@dataclass(frozen=True)
class Case:
    """One command line whose `--json` output a table of the page documents."""

    label: str
    args: list[str]
    fake: Callable[[pytest.MonkeyPatch], None] = _no_fake
    stdin: str | None = None
    exit_code: int = 0
    is_array: bool = False
    """The output is an array of documented objects (else one documented object)."""


DLQ_ENTRY = "`dlq list --json` items, `dlq show --json`"
INSPECT = "`inspect cart --json`, `inspect payment --json`"
CASES = {
    "dlq list": Case(DLQ_ENTRY, ["dlq", "list", *CONNECTION], _fake_dlq, is_array=True),
    "dlq show": Case(DLQ_ENTRY, ["dlq", "show", LETTERS[0].id, *CONNECTION], _fake_dlq),
    "dlq redrive": Case(
        "`dlq redrive --json`", ["dlq", "redrive", "--all", *CONNECTION], _fake_dlq
    ),
    "replay": Case("`replay --json`", ["replay", "checkout.completed", *CONNECTION], _fake_replay),
    "republish": Case(
        "`republish --json`",
        ["republish", "--cart-id", "cart_docs", "--dry-run", *CONNECTION, *MONGO],
        _fake_republish,
    ),
    "inspect cart": Case(INSPECT, ["inspect", "cart", "cart_docs", *MONGO], _fake_inspect),
    "inspect payment": Case(INSPECT, ["inspect", "payment", "pay_docs", *MONGO], _fake_inspect),
    "resolve": Case(
        "`resolve --json`",
        ["resolve", "pay_docs", "cmd_docs", "--happened", "--by", "ops@example.com", *MONGO],
        _fake_resolve,
    ),
    "send": Case("`send --json`", ["send", "-", "--dry-run", *CONNECTION], stdin=VALID_EVENT),
    "send, an event invalid": Case(
        "`send --json` with an invalid event",
        ["send", "-", *CONNECTION],
        stdin=VALID_EVENT + "\n{not json\n",
        exit_code=1,
    ),
    "demo": Case("`demo --json`", ["demo", *CONNECTION], _fake_demo),
}


def _run(case: Case, monkeypatch: pytest.MonkeyPatch) -> Any:
    case.fake(monkeypatch)
    result = CliRunner().invoke(app, [*case.args, "--json"], input=case.stdin)
    assert result.exit_code == case.exit_code, (
        f"exit {result.exit_code}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}\n"
        f"exception: {result.exception!r}"
    )
    return json.loads(result.stdout)


# -- comparing them ------------------------------------------------------------------


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    assert isinstance(value, dict), f"not JSON: {value!r}"
    return "object"


def _values_at(roots: list[Any], path: str) -> list[Any]:
    """Every value at `path` (`a.b`, `a[].b`) under the given objects."""
    values = roots
    for segment in path.split(".") if path else []:
        name = segment.removesuffix("[]")
        values = [v[name] for v in values if isinstance(v, dict) and name in v]
        if segment.endswith("[]"):
            values = [item for v in values if isinstance(v, list) for item in v]
    return values


def _parent(path: str) -> str:
    return path.rpartition(".")[0]


def _name(path: str) -> str:
    return path.rpartition(".")[2].removesuffix("[]")


def _problems(documented: dict[str, frozenset[str]], roots: list[Any]) -> Iterator[str]:
    """How the output differs from the table (nothing when they agree)."""
    children: dict[str, set[str]] = {}
    for path in documented:
        children.setdefault(_parent(path), set()).add(_name(path))
    for parent, names in children.items():
        objects = _values_at(roots, parent)
        if not objects:
            yield f"{parent or 'top level'}: the output has no such object to compare"
        for obj in objects:
            if not isinstance(obj, dict):
                yield f"{parent or 'top level'}: documented as an object, got {obj!r}"
            elif set(obj) != names:
                missing, extra = sorted(names - set(obj)), sorted(set(obj) - names)
                yield f"{parent or 'top level'}: documented only {missing}, undocumented {extra}"
    for path, types in documented.items():
        values = _values_at(roots, path)
        if not values:
            yield f"{path}: no value in the output (give the test's fake one)"
        for value in values:
            if _json_type(value) not in types:
                yield f"{path}: documented as {sorted(types)}, got {_json_type(value)}"


@pytest.mark.parametrize("command", list(CASES))
def test_the_page_documents_the_json_output_of(
    command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    case = CASES[command]
    tables = documented_tables()
    assert case.label in tables, f"no table 'key of {case.label}'; found {list(tables)}"
    output = _run(case, monkeypatch)
    if case.is_array:
        assert isinstance(output, list) and output, f"expected a non-empty array: {output!r}"
        roots = output
    else:
        assert isinstance(output, dict), f"expected an object: {output!r}"
        roots = [output]
    problems = list(_problems(tables[case.label], roots))
    assert not problems, f"table 'key of {case.label}' vs. the output:\n" + "\n".join(problems)


def _json_commands() -> set[str]:
    """Every command of the `payments` CLI that takes `--json`, as `dlq list`."""
    found: set[str] = set()

    def walk(command: Any, path: tuple[str, ...]) -> None:
        # Duck-typed: Typer's groups are not always `click.Group` instances.
        subcommands = getattr(command, "commands", None)
        if subcommands is not None:
            for name, sub in subcommands.items():
                walk(sub, (*path, name))
        elif any("--json" in getattr(p, "opts", ()) for p in command.params):
            found.add(" ".join(path))

    walk(typer.main.get_command(app), ())
    return found


def test_every_json_command_has_a_table_and_every_table_is_checked() -> None:
    tables = documented_tables()
    in_tables = {command for label in tables for command in COMMAND.findall(label)}
    checked = {case.label for case in CASES.values()}
    assert _json_commands(), "found no command taking --json"
    assert _json_commands() <= in_tables
    assert _json_commands() <= {name.partition(",")[0] for name in CASES}
    assert set(tables) == checked


@pytest.mark.parametrize(
    ("given", "prefix", "matches"),
    [
        ("checkout.completed", PREFIX, True),
        (PREFIX + "checkout.completed", PREFIX, True),
        (PREFIX + "checkout.completed", "", True),
        ("checkout.completed", "", False),
        ("checkout.completed", "staging.", False),
        ("completed", PREFIX, False),
        ("prod.checkout", PREFIX, False),
        ("cart.updated", PREFIX, False),
    ],
)
def test_source_topic_filter_takes_the_plain_or_the_full_name(
    given: str, prefix: str, matches: bool
) -> None:
    # As the page's `payments dlq` section says: a letter's `source_topic` is the
    # full name; `--source-topic` matches it as given or behind the prefix in use.
    letter = LETTERS[0]
    assert letter.to_json()["source_topic"] == PREFIX + "checkout.completed"
    assert dlq_tool.DeadLetterFilter(source_topic=given).matches(letter, prefix) is matches
