"""Structured logs: one JSON object per line on stdout, secrets and card data redacted.

Why one pipeline: the service's own modules log through stdlib `logging` (with
%-style arguments), FastStream, aiokafka and uvicorn do too, and a few places use
structlog. Every record, whatever its origin, goes through the same structlog
processors (context, level, timestamp, redaction) and the same renderer, so ops
tooling parses one format and redaction cannot be bypassed by a library.

Why redaction is a processor and not a convention: a payment service receives
Stripe keys in its configuration and card data in free-form `payment_data` and
`context` objects; an exception message or a dead-letter reason can echo any of
it. The :class:`~service.observability.redaction.Redactor` runs last before
rendering, over the message and every value (recursively through dicts and lists),
so nothing depends on each call site remembering.

Per-message context (`cart_id`, event `id`, `topic`, `partition`, `offset`, …) is
bound with structlog's contextvars by the consumer, so every line emitted while
handling a message carries it, including lines from libraries.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from typing import Any, Literal, TextIO

import orjson
import structlog
from structlog.types import EventDict, Processor, WrappedLogger

from service.observability.redaction import REDACTOR

LogFormat = Literal["auto", "json", "console"]

_NOISY_EXTRAS = ("color_message",)


def _drop_noise(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    for key in _NOISY_EXTRAS:
        event_dict.pop(key, None)
    return event_dict


def _dumps(obj: Any, **_: Any) -> str:
    return orjson.dumps(obj, default=str).decode()


_LIBRARY_LOGGERS = (
    "faststream",
    "faststream.access",
    "faststream.access.kafka",
    "uvicorn",
    "uvicorn.error",
    "uvicorn.access",
    "aiokafka",
)
"""Loggers that libraries give their own handlers: routed to ours instead."""

_HANDLER_NAME = "payments-structlog"


def configure_logging(
    level: str = "INFO",
    fmt: LogFormat = "auto",
    *,
    stream: TextIO | None = None,
) -> logging.Handler:
    """Route every logger (structlog and stdlib) to one structured handler on `stream`.

    `fmt="auto"` renders human-readable lines when the stream is a terminal and
    JSON otherwise (containers, files, pipes). Idempotent: calling it again
    replaces the handler this function installed. Returns the handler.
    """
    out = stream if stream is not None else sys.stdout
    console = fmt == "console" or (fmt == "auto" and _isatty(out))
    numeric_level = logging.getLevelName(level.upper())
    if not isinstance(numeric_level, int):
        numeric_level = logging.INFO

    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        timestamper,
    ]
    renderer: Processor = (
        structlog.dev.ConsoleRenderer(colors=_isatty(out))
        if console
        else structlog.processors.JSONRenderer(serializer=_dumps)
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder(), _drop_noise],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            REDACTOR,
            renderer,
        ],
    )
    handler = logging.StreamHandler(out)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(formatter)

    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(numeric_level)

    # FastStream installs its own stderr handler when it is imported: import it
    # first, so that the handler exists to be removed rather than appearing later.
    with contextlib.suppress(ImportError):
        import faststream  # noqa: F401
    for name in _LIBRARY_LOGGERS:
        library = logging.getLogger(name)
        for existing in list(library.handlers):
            library.removeHandler(existing)
        library.propagate = True
        library.setLevel(logging.NOTSET)
    # aiokafka logs protocol chatter at DEBUG and every rebalance at INFO.
    logging.getLogger("aiokafka").setLevel(
        logging.INFO if numeric_level <= logging.DEBUG else logging.WARNING
    )

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    return handler


def _isatty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
