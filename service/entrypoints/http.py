"""The service's one HTTP port: health, readiness, metrics and provider webhooks."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

ReadinessCheck = Callable[[], Awaitable[dict[str, bool]]]
WebhookReceiver = Callable[[str, dict[str, str], bytes], Awaitable[tuple[int, dict[str, Any]]]]

WEBHOOK_MAX_BODY_BYTES = 256 * 1024
"""Webhook bodies larger than this get 413 before anything is verified or published.

Stripe's events are a few KiB; the limit keeps the body, JSON-escaped into the
`payment.provider_webhook` event with its headers, well under the broker's 1 MiB
message limit, and stops a client from making us buffer an unbounded request."""


class _BodyTooLarge(Exception):
    pass


async def _bounded_body(request: Request, limit: int) -> bytes:
    """The request body, or :class:`_BodyTooLarge` as soon as it passes `limit`.

    The declared length is checked first; the stream is counted as well, since a
    chunked request declares none."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def build_http_app(
    readiness: ReadinessCheck,
    metrics: Callable[[], tuple[bytes, str]],
    webhooks: WebhookReceiver,
    *,
    webhook_max_body_bytes: int = WEBHOOK_MAX_BODY_BYTES,
) -> Starlette:
    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "alive"})

    async def readyz(_: Request) -> Response:
        checks = await readiness()
        failed = sorted(name for name, ok in checks.items() if not ok)
        body = {
            "status": "ready" if not failed else "not_ready",
            "checks": checks,
            "failed": failed,
        }
        return JSONResponse(body, status_code=200 if not failed else 503)

    async def metrics_endpoint(_: Request) -> Response:
        payload, content_type = metrics()
        return Response(payload, media_type=content_type)

    async def webhook(request: Request) -> Response:
        provider_id = request.path_params["provider_id"]
        try:
            body = await _bounded_body(request, webhook_max_body_bytes)
        except _BodyTooLarge:
            return JSONResponse(
                {"error": f"webhook body over {webhook_max_body_bytes} bytes"}, status_code=413
            )
        status, answer = await webhooks(provider_id, dict(request.headers), body)
        return JSONResponse(answer, status_code=status)

    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics_endpoint),
            Route("/webhooks/{provider_id}", webhook, methods=["POST"]),
        ]
    )


class EmbeddedServer(uvicorn.Server):
    """uvicorn without its own signal handling: the service owns SIGINT/SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield
