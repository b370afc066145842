"""What every `payments` tool command shares: connection options, error handling,
progress bars and JSON output.

Human output goes to stdout through rich; progress bars and errors go to stderr,
so `--json` output on stdout stays machine-readable even while a bar is shown.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from aiokafka.errors import KafkaError
from pymongo.errors import PyMongoError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from service.tools.connection import Connection, ToolError, connection_from_settings
from service.tools.kafka_io import ProgressCallback

T = TypeVar("T")

BootstrapOption = Annotated[
    str | None,
    typer.Option(
        "--bootstrap-servers",
        help="Kafka bootstrap servers (default: PAYMENTS_KAFKA_BOOTSTRAP_SERVERS).",
        show_default=False,
    ),
]
MongoOption = Annotated[
    str | None,
    typer.Option(
        "--mongodb-url",
        help="MongoDB URL (default: PAYMENTS_MONGODB_URL).",
        show_default=False,
    ),
]
DatabaseOption = Annotated[
    str | None,
    typer.Option(
        "--database",
        help="MongoDB database (default: PAYMENTS_MONGODB_DATABASE).",
        show_default=False,
    ),
]
PrefixOption = Annotated[
    str | None,
    typer.Option(
        "--topic-prefix",
        help="Topic prefix of the deployment (default: PAYMENTS_TOPIC_PREFIX).",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
DryRunOption = Annotated[
    bool, typer.Option("--dry-run", help="Show what would be sent; send nothing.")
]
SinceOption = Annotated[
    str | None,
    typer.Option(
        "--since", help="From this time on: RFC 3339 (2024-05-01T12:00:00Z) or ago (30m, 2h, 1d)."
    ),
]
UntilOption = Annotated[
    str | None,
    typer.Option("--until", help="Before this time: RFC 3339 or ago (30m, 2h, 1d)."),
]


def connection(
    bootstrap: str | None = None,
    mongodb_url: str | None = None,
    database: str | None = None,
    prefix: str | None = None,
) -> Connection:
    result: Connection = guarded(
        lambda: connection_from_settings(
            kafka_bootstrap=bootstrap,
            mongodb_url=mongodb_url,
            database=database,
            topic_prefix=prefix,
        )
    )
    return result


def fail(message: str, code: int = 1) -> NoReturn:
    Console(stderr=True).print(f"[bold red]error:[/] {message}", highlight=False, markup=True)
    raise typer.Exit(code)


def guarded(call: Any) -> Any:
    """Run `call()`, turning a tool's expected failures into a message and exit 1."""
    try:
        return call()
    except ToolError as exc:
        fail(str(exc))


def run_tool(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a tool coroutine to completion; failures become a message and exit 1."""
    try:
        return asyncio.run(coroutine)
    except ToolError as exc:
        fail(str(exc))
    except KafkaError as exc:
        fail(f"Kafka: {exc}")
    except PyMongoError as exc:
        fail(f"MongoDB: {exc}")


def print_json(payload: Any) -> None:
    typer.echo(json.dumps(payload, indent=2, ensure_ascii=False, default=str))


PIPED_WIDTH = 160
"""Table width when stdout is not a terminal (a pager, a file): rich's 80 would
squeeze ids and amounts into ribbons. `COLUMNS` still wins."""


def stdout() -> Console:
    # Created per call: rich must write to whatever sys.stdout is *now*
    # (test runners swap it).
    console = Console(highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = PIPED_WIDTH
    return console


@contextmanager
def progress_bar(description: str) -> Iterator[ProgressCallback]:
    """A progress bar on stderr, fed by a tool's (done, total) callback."""
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as progress:
        task = progress.add_task(description, total=None)

        def update(done: int, total: int | None) -> None:
            progress.update(task, completed=done, total=total)

        yield update
