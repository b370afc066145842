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


def build_http_app(
    readiness: ReadinessCheck,
    metrics: Callable[[], tuple[bytes, str]],
    webhooks: WebhookReceiver,
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
        body = await request.body()
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
