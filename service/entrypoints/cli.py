"""The `payments` console command: run the service, and the tools to operate it.

Commands parse options and render results; the work is done by `service.tools`
(one module per command), which tests and scripts can call directly. Every tool
connects with the service's own `PAYMENTS_*` settings unless told otherwise, exits
non-zero on failure, and offers `--json` where a script would read the output.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from pathlib import Path

import typer

from service.entrypoints import cli_tools
from service.settings import SettingsError, load_settings

app = typer.Typer(help="The payments service and its tools.", no_args_is_help=True)
schemas_app = typer.Typer(help="The event contract as JSON Schema.", no_args_is_help=True)
app.add_typer(schemas_app, name="schemas")
cli_tools.register(app)


def _configure_logging(level: str) -> None:
    """Structured logs on stdout (JSON, or readable on a terminal), secrets redacted."""
    from service.observability.logging import configure_logging
    from service.observability.redaction import register_secrets

    settings = load_settings()  # already validated by the caller
    configure_logging(level, settings.log_format)
    register_secrets(settings.secret_values())


@app.command()
def run(
    embedded: bool | None = typer.Option(
        None,
        help="Start an embedded broker and MongoDB server first (default: when neither "
        "PAYMENTS_KAFKA_BOOTSTRAP_SERVERS nor PAYMENTS_MONGODB_URL is set).",
    ),
) -> None:
    """Run the service until SIGINT/SIGTERM."""
    try:
        settings = load_settings()
    except SettingsError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from exc
    _configure_logging(settings.log_level)
    use_embedded = settings.uses_embedded if embedded is None else embedded
    try:
        asyncio.run(_run(use_embedded))
    except SettingsError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from exc
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    except Exception as exc:
        # One line saying what to fix; the traceback is for those who ask (DEBUG).
        logging.getLogger("payments").debug("start-up failed", exc_info=True)
        typer.echo(f"payments run: {type(exc).__name__}: {exc}", err=True)
        if settings.log_level.upper() != "DEBUG":
            typer.echo("(PAYMENTS_LOG_LEVEL=DEBUG prints the traceback)", err=True)
        raise typer.Exit(1) from None


async def _run(use_embedded: bool) -> None:
    from service.entrypoints.app import PaymentsApp
    from service.tools.connection import write_embedded_endpoints

    log = logging.getLogger("payments")
    infrastructure = None
    endpoints = Path()
    overrides: dict[str, object] = {}
    if use_embedded:
        from service.embedded import EmbeddedInfrastructure

        settings = load_settings()
        data_dir = Path(settings.embedded_data_dir)
        infrastructure = EmbeddedInfrastructure()
        await asyncio.to_thread(infrastructure.start, data_dir)
        overrides = {
            "kafka_bootstrap_servers": infrastructure.kafka_bootstrap,
            "mongodb_url": infrastructure.mongodb_url,
        }
        endpoints = write_embedded_endpoints(
            data_dir, infrastructure.kafka_bootstrap, infrastructure.mongodb_url
        )
        log.info(
            "embedded broker at %s, MongoDB-protocol server at %s (data in %s)",
            infrastructure.kafka_bootstrap,
            infrastructure.mongodb_url,
            data_dir / "mongo",
        )
    service = PaymentsApp(load_settings(**overrides))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        # Start-up waits for an unreachable broker or MongoDB; a signal meanwhile
        # must still stop the process.
        starting = asyncio.create_task(service.start())
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if starting.done():
            stopping.cancel()
            starting.result()
            log.info("listening for HTTP on port %s", service.http_port)
            await stop.wait()
        else:
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
        log.info("shutting down")
    finally:
        await service.stop()
        if infrastructure is not None:
            endpoints.unlink(missing_ok=True)
            await asyncio.to_thread(infrastructure.stop)


@schemas_app.command("export")
def export_schemas(directory: Path) -> None:
    """Write one JSON Schema file per event type into DIRECTORY."""
    from schemas.export import render_schema_files

    directory.mkdir(parents=True, exist_ok=True)
    files = render_schema_files()
    for name, text in files.items():
        (directory / name).write_text(text, encoding="utf-8")
    typer.echo(f"wrote {len(files)} schema files to {directory}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
