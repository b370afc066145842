"""The operator commands of `payments`: dlq, replay, republish, resolve, inspect, send, demo,
asyncapi. Each parses its options, calls its `service.tools` module and renders
the result; see the README section "Operating it" for examples.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Protocol

import orjson
import typer
from rich.syntax import Syntax
from rich.table import Table

from schemas.dead_letter import DeadLetterKind
from schemas.topics import CHECKOUT_COMPLETED, DLQ_TOPIC
from schemas.wire_time import wire_time
from service.entrypoints.cli_support import (
    BootstrapOption,
    DatabaseOption,
    DryRunOption,
    JsonOption,
    MongoOption,
    PrefixOption,
    SinceOption,
    UntilOption,
    connection,
    fail,
    guarded,
    print_json,
    progress_bar,
    run_tool,
    stdout,
)
from service.tools import dlq as dlq_tool
from service.tools.time_window import TimeWindow

dlq_app = typer.Typer(
    help="Dead letters on payments.dlq: list, show, re-drive.", no_args_is_help=True
)
inspect_app = typer.Typer(help="A cart's or a payment's stored state.", no_args_is_help=True)
asyncapi_app = typer.Typer(help="The AsyncAPI document of the service.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(dlq_app, name="dlq")
    app.add_typer(inspect_app, name="inspect")
    app.add_typer(asyncapi_app, name="asyncapi")
    app.command("replay")(replay)
    app.command("republish")(republish)
    app.command("resolve")(resolve)
    app.command("send")(send)
    app.command("demo")(demo)


def _window(since: str | None, until: str | None) -> TimeWindow:
    window: TimeWindow = guarded(lambda: TimeWindow.parse(since, until))
    return window


# -- dlq -------------------------------------------------------------------------------

SourceTopicOption = Annotated[
    str | None,
    typer.Option("--source-topic", help="Only letters from this topic (e.g. checkout.completed)."),
]
KindOption = Annotated[
    DeadLetterKind | None, typer.Option("--kind", help="Only letters of this error kind.")
]
CartOption = Annotated[
    str | None, typer.Option("--cart-id", help="Only letters whose key or subject is this cart.")
]


def _filter(
    source_topic: str | None,
    kind: DeadLetterKind | None,
    since: str | None,
    until: str | None,
    cart_id: str | None,
) -> dlq_tool.DeadLetterFilter:
    return dlq_tool.DeadLetterFilter(
        source_topic=source_topic, kind=kind, window=_window(since, until), cart_id=cart_id
    )


def _letters_table(entries: list[dlq_tool.DeadLetterEntry]) -> Table:
    table = Table(title_justify="left")
    # Ids are what an operator copies into `dlq show` / `dlq redrive`: never wrapped.
    table.add_column("id", no_wrap=True, min_width=max((len(e.id) for e in entries), default=2))
    for column in ("failed at", "kind", "source", "key", "detail"):
        table.add_column(column, overflow="fold", no_wrap=column in ("failed at", "kind"))
    for e in entries:
        detail = e.letter.error.detail
        table.add_row(
            e.id,
            wire_time(e.letter.failed_at, "seconds"),
            e.kind.value,
            f"{e.letter.source_topic}[{e.letter.partition}]@{e.letter.offset}",
            e.key_text or "",
            detail if len(detail) <= 120 else detail[:119] + "…",
        )
    return table


def _warn_unreadable(scan: dlq_tool.DeadLetterScan) -> None:
    if scan.unreadable:
        typer.echo(
            f"warning: {len(scan.unreadable)} record(s) on the DLQ are not dead letters: "
            + "; ".join(scan.unreadable[:5]),
            err=True,
        )


class _ToolResult(Protocol):
    def to_json(self) -> dict[str, Any]: ...
    def summary(self) -> str: ...


def _print_result(result: _ToolResult, as_json: bool, lines: Iterable[str]) -> None:
    """`--json`: the result's JSON document; otherwise its lines, then its summary."""
    if as_json:
        print_json(result.to_json())
        return
    console = stdout()
    for line in lines:
        console.print(line)
    console.print(result.summary())


@dlq_app.command("list")
def dlq_list(
    source_topic: SourceTopicOption = None,
    kind: KindOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
    cart_id: CartOption = None,
    as_json: JsonOption = False,
    bootstrap: BootstrapOption = None,
    prefix: PrefixOption = None,
) -> None:
    """List dead letters, oldest first, optionally filtered."""
    selection = _filter(source_topic, kind, since, until, cart_id)
    conn = connection(bootstrap, prefix=prefix)
    with progress_bar("reading the DLQ") as progress:
        scan = run_tool(dlq_tool.list_dead_letters(conn, selection, progress=progress))
    _warn_unreadable(scan)
    if as_json:
        print_json([e.to_json() for e in scan.entries])
        return
    console = stdout()
    if scan.entries:
        console.print(_letters_table(scan.entries))
    console.print(f"{len(scan.entries)} dead letter(s) on {conn.topic(DLQ_TOPIC)}")


@dlq_app.command("show")
def dlq_show(
    letter_id: Annotated[str, typer.Argument(metavar="ID", help="The dead letter's id.")],
    as_json: JsonOption = False,
    bootstrap: BootstrapOption = None,
    prefix: PrefixOption = None,
) -> None:
    """Show one dead letter: why it failed and the original record."""
    conn = connection(bootstrap, prefix=prefix)
    with progress_bar("reading the DLQ") as progress:
        scan = run_tool(dlq_tool.read_dead_letters(conn, progress=progress))
    (entry,) = guarded(lambda: dlq_tool.find_entries(scan, [letter_id]))
    if as_json:
        print_json(entry.to_json())
        return
    console = stdout()
    console.print(_letters_table([entry]))
    console.print(f"[bold]error[/]: {entry.kind.value}: {entry.letter.error.detail}")
    console.print(f"[bold]DLQ position[/]: partition {entry.dlq_partition} @ {entry.dlq_offset}")
    console.print("[bold]headers[/]:", entry.letter.headers or "none")
    value = entry.letter.value
    if value is None:
        shown = (
            "(null)" if entry.letter.value_base64 is None else f"base64:{entry.letter.value_base64}"
        )
        console.print("[bold]value[/]:", shown)
        return
    try:
        pretty = orjson.dumps(orjson.loads(value), option=orjson.OPT_INDENT_2).decode()
    except orjson.JSONDecodeError:
        console.print("[bold]value[/] (not JSON):", value[:4000])
    else:
        console.print("[bold]value[/]:")
        console.print(Syntax(pretty, "json", word_wrap=True))


@dlq_app.command("redrive")
def dlq_redrive(
    ids: Annotated[
        list[str] | None, typer.Argument(metavar="[ID]...", help="Ids of letters to re-drive.")
    ] = None,
    all_matching: Annotated[
        bool, typer.Option("--all", help="Re-drive every letter matching the filters.")
    ] = False,
    source_topic: SourceTopicOption = None,
    kind: KindOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
    cart_id: CartOption = None,
    dry_run: DryRunOption = False,
    as_json: JsonOption = False,
    bootstrap: BootstrapOption = None,
    prefix: PrefixOption = None,
) -> None:
    """Send dead letters back to their source topic: original key, headers and value.

    Safe to repeat: the service de-duplicates by event id.
    """
    filtered = any(v is not None for v in (source_topic, kind, since, until, cart_id))
    if bool(ids) == all_matching:
        fail("give dead letter ids, or --all (with filters) — not both, not neither", 2)
    if ids and filtered:
        fail("filters apply to --all; with ids, name the letters only", 2)
    selection = _filter(source_topic, kind, since, until, cart_id)
    conn = connection(bootstrap, prefix=prefix)
    with progress_bar("reading the DLQ") as progress:
        scan = run_tool(dlq_tool.list_dead_letters(conn, selection, progress=progress))
    _warn_unreadable(scan)
    entries = guarded(lambda: dlq_tool.find_entries(scan, ids)) if ids else scan.entries
    with progress_bar("re-driving") as progress:
        result = run_tool(dlq_tool.redrive(conn, entries, dry_run=dry_run, progress=progress))
    _print_result(result, as_json, map(_redriven_line, result.items))


def _redriven_line(item: dlq_tool.RedriveItem) -> str:
    verdict = f"[yellow]skipped[/]: {item.skipped}" if item.skipped else "→"
    target = "" if item.skipped else f"{item.target_topic}[{item.target_partition}]"
    return f"{item.entry.id} ({item.entry.kind.value}) {verdict} {target}"


# -- replay / republish ------------------------------------------------------------------


def replay(
    topic: Annotated[str, typer.Argument(help="Inbound topic, e.g. checkout.completed.")],
    partition: Annotated[
        int | None, typer.Option("--partition", help="Only this partition (default: all).")
    ] = None,
    from_offset: Annotated[
        int | None, typer.Option("--from-offset", help="First offset (inclusive).")
    ] = None,
    to_offset: Annotated[
        int | None, typer.Option("--to-offset", help="Last offset (inclusive).")
    ] = None,
    since: SinceOption = None,
    until: UntilOption = None,
    cart_id: Annotated[
        str | None, typer.Option("--cart-id", help="Only records of this cart.")
    ] = None,
    dry_run: DryRunOption = False,
    as_json: JsonOption = False,
    bootstrap: BootstrapOption = None,
    prefix: PrefixOption = None,
) -> None:
    """Copy a range of an inbound topic back into it, so the service sees it again.

    Keys, headers and values (hence event ids) are kept: what was applied before
    changes nothing, what was missed is applied now.
    """
    from service.tools.replay import ReplaySelection
    from service.tools.replay import replay as replay_records

    selection = ReplaySelection(
        topic=topic,
        partition=partition,
        from_offset=from_offset,
        to_offset=to_offset,
        window=_window(since, until),
        cart_id=cart_id,
    )
    conn = connection(bootstrap, prefix=prefix)
    with progress_bar(f"replaying {topic}") as progress:
        result = run_tool(replay_records(conn, selection, dry_run=dry_run, progress=progress))
    _print_result(
        result,
        as_json,
        (
            f"partition {r.partition}: offsets {r.start}..{r.end - 1}"
            for r in result.ranges
            if r.size
        ),
    )


def republish(
    cart_id: Annotated[
        str | None, typer.Option("--cart-id", help="The stored events of this cart.")
    ] = None,
    since: SinceOption = None,
    until: UntilOption = None,
    dry_run: DryRunOption = False,
    as_json: JsonOption = False,
    bootstrap: BootstrapOption = None,
    mongodb_url: MongoOption = None,
    database: DatabaseOption = None,
    prefix: PrefixOption = None,
) -> None:
    """Send stored outbound events again, with their original ids, keys and headers."""
    from service.tools.republish import RepublishSelection
    from service.tools.republish import republish as republish_events

    selection = RepublishSelection(cart_id=cart_id, window=_window(since, until))
    conn = connection(bootstrap, mongodb_url, database, prefix)
    with progress_bar("republishing") as progress:
        result = run_tool(republish_events(conn, selection, dry_run=dry_run, progress=progress))
    _print_result(
        result, as_json, (f"{event.id} {event.type} key={event.key}" for event in result.events)
    )


# -- inspect -----------------------------------------------------------------------------


def _inspect(kind: str, lookup_id: str, as_json: bool, conn_args: tuple[str | None, ...]) -> None:
    from service.tools.inspection import inspect
    from service.tools.inspection_view import render_inspection

    conn = connection(None, *conn_args)
    found = run_tool(inspect(conn, "cart" if kind == "cart" else "payment", lookup_id))
    if as_json:
        print_json(found.to_json())
        return
    stdout().print(render_inspection(found))


@inspect_app.command("cart")
def inspect_cart(
    cart_id: Annotated[str, typer.Argument(metavar="CART_ID")],
    as_json: JsonOption = False,
    mongodb_url: MongoOption = None,
    database: DatabaseOption = None,
) -> None:
    """A cart's payment collection: sessions, payment, captures, refunds, inbox, outbox."""
    _inspect("cart", cart_id, as_json, (mongodb_url, database))


@inspect_app.command("payment")
def inspect_payment(
    payment_id: Annotated[str, typer.Argument(metavar="PAYMENT_ID")],
    as_json: JsonOption = False,
    mongodb_url: MongoOption = None,
    database: DatabaseOption = None,
) -> None:
    """The payment collection holding a payment (same views as `inspect cart`)."""
    _inspect("payment", payment_id, as_json, (mongodb_url, database))


# -- resolve -----------------------------------------------------------------------------


def resolve(
    payment_id: Annotated[str, typer.Argument(metavar="PAYMENT_ID")],
    command_id: Annotated[str, typer.Argument(metavar="COMMAND_ID")],
    happened: Annotated[
        bool,
        typer.Option(
            "--happened/--did-not-happen",
            help="What the provider shows: the operation took effect, or it did not.",
            show_default=False,
        ),
    ],
    by: Annotated[str, typer.Option("--by", help="Who looked (kept in the history).")],
    as_json: JsonOption = False,
    mongodb_url: MongoOption = None,
    database: DatabaseOption = None,
) -> None:
    """Settle an operation that needs attention, as a person found it at the provider."""
    from service.tools.resolve import resolve as resolve_tool

    conn = connection(None, mongodb_url, database)
    found = run_tool(resolve_tool(conn, payment_id, command_id, happened=happened, by=by))
    if as_json:
        print_json(found.to_json())
        return
    stdout().print(found.summary())


# -- send --------------------------------------------------------------------------------


def send(
    source: Annotated[
        str, typer.Argument(metavar="FILE|-", help="JSON object, JSON array or JSON lines.")
    ],
    key_id: Annotated[
        str | None,
        typer.Option("--key-id", envvar="PAYMENTS_ADMIN_KEY_ID", help="Admin key id to sign with."),
    ] = None,
    secret: Annotated[
        str | None,
        typer.Option(
            "--secret",
            envvar="PAYMENTS_ADMIN_KEY_SECRET",
            help="Admin key secret to sign with.",
            show_default=False,
        ),
    ] = None,
    dry_run: DryRunOption = False,
    as_json: JsonOption = False,
    bootstrap: BootstrapOption = None,
    prefix: PrefixOption = None,
) -> None:
    """Validate events against the contract, then send them all — or none if any is invalid.

    Keys follow the contract (cart id, payment id for admin commands); admin
    commands are signed when a key id and secret are given.
    """
    from service.tools import send as send_tool

    if (key_id is None) != (secret is None):
        fail("--key-id and --secret go together", 2)
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except OSError as exc:
        fail(f"cannot read {source}: {exc}")
    items = guarded(lambda: send_tool.load_items(text))
    signer = send_tool.Signer(key_id, secret) if key_id and secret else None
    prepared = send_tool.prepare(items, signer)
    if prepared.invalid:
        if as_json:
            print_json(
                {
                    "sent": 0,
                    "invalid": [
                        {"position": i.position, "error": i.detail} for i in prepared.invalid
                    ],
                }
            )
        else:
            for invalid in prepared.invalid:
                typer.echo(f"{invalid.position}: {invalid.detail}", err=True)
        fail(f"{len(prepared.invalid)} of {len(items)} event(s) invalid; nothing was sent")
    for position in prepared.unsigned_commands:
        typer.echo(
            f"warning: {position} is an unsigned admin command; the service dead-letters it "
            "unless its signature check is off (give --key-id and --secret)",
            err=True,
        )
    conn = connection(bootstrap, prefix=prefix)
    sent = 0
    if not dry_run:
        with progress_bar("sending") as progress:
            sent = run_tool(send_tool.send_prepared(conn, prepared.events, progress=progress))
    verb = "would send" if dry_run else "sent"
    summary = f"{verb} {len(prepared.events)} event(s)"
    if as_json:
        print_json(
            {
                "sent": sent,
                "dry_run": dry_run,
                "events": [
                    {
                        "id": e.event_id,
                        "type": e.event_type,
                        "topic": conn.topic(e.event_type),
                        "key": e.key,
                        "signed": e.signed,
                    }
                    for e in prepared.events
                ],
                "summary": summary,
            }
        )
        return
    console = stdout()
    for e in prepared.events:
        signed = " (signed)" if e.signed else ""
        console.print(f"{e.event_id} → {conn.topic(e.event_type)} key={e.key}{signed}")
    console.print(summary)


# -- demo --------------------------------------------------------------------------------


def demo(
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds to wait for all answers.")
    ] = 60.0,
    as_json: JsonOption = False,
    bootstrap: BootstrapOption = None,
    prefix: PrefixOption = None,
) -> None:
    """Against a running service: one checkout per sandbox outcome, and what comes back."""
    from service.tools.demo import SCENARIOS, DemoEvent, run_demo

    conn = connection(bootstrap, prefix=prefix)
    console = stdout()
    if not as_json:
        console.print(f"sending {len(SCENARIOS)} checkouts to {conn.topic(CHECKOUT_COMPLETED)}…")

    def show(event: DemoEvent) -> None:
        if as_json:
            return
        data = event.data
        detail = ", ".join(
            f"{k}={data[k]}" for k in ("amount", "reason", "payment_id", "action") if k in data
        )
        console.print(f"[cyan]{event.scenario:>15}[/]  {event.type:<24} {detail}")

    result = run_tool(run_demo(conn, timeout_s=timeout, on_event=show))
    if as_json:
        print_json(
            {
                "passed": result.passed,
                "scenarios": [r.to_json() for r in result.runs],
                "summary": result.summary(),
            }
        )
    else:
        table = Table(title="Scenarios", title_justify="left")
        for column in ("scenario", "what happens", "expected", "outcome", "cart"):
            table.add_column(column)
        for run in result.runs:
            s = run.scenario
            style = {"passed": "green", "unexpected": "red"}.get(run.outcome, "yellow")
            expected = s.expect_type + (f" ({s.expect_reason})" if s.expect_reason else "")
            outcome = run.outcome if run.outcome != "waiting" else "no answer (timed out)"
            table.add_row(s.name, s.title, expected, f"[{style}]{outcome}[/]", run.cart_id)
        console.print(table)
        console.print(result.summary())
    if not result.passed:
        raise typer.Exit(1)


# -- asyncapi ----------------------------------------------------------------------------


@asyncapi_app.command("export")
def asyncapi_export(
    path: Annotated[Path, typer.Argument(help="Where to write the JSON document.")],
    html: Annotated[
        Path | None, typer.Option("--html", help="Also write the viewer page here.")
    ] = None,
) -> None:
    """Write the AsyncAPI 3.0 document (generated by FastStream from the contract models)."""
    from service.tools.asyncapi import ASYNCAPI_PAGE, render_asyncapi_json

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_asyncapi_json(), encoding="utf-8")
    written = [str(path)]
    if html is not None:
        html.parent.mkdir(parents=True, exist_ok=True)
        html.write_text(ASYNCAPI_PAGE, encoding="utf-8")
        written.append(str(html))
    typer.echo(f"wrote {', '.join(written)}")


@asyncapi_app.command("serve")
def asyncapi_serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
) -> None:
    """Serve the document and a viewer page over HTTP until Ctrl-C."""
    from service.tools.asyncapi import make_docs_server

    try:
        server = make_docs_server(host, port)
    except OSError as exc:
        fail(f"cannot listen on {host}:{port}: {exc}")
    bound = server.server_address[1]
    typer.echo(f"AsyncAPI docs at http://{host}:{bound}/ (document: /asyncapi.json); Ctrl-C stops")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
