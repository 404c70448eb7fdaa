"""A small FastAPI app rate limited by Traffik: `uvicorn examples.app:app`, or `python examples/app.py`.

The backend is in memory, or the one `TRAFFIK_BACKEND_URL` names (`redis://localhost:6379/0`,
`memcached://localhost:11211`, ...). No throttle below names a backend: they all use the app's,
which the lifespan opens at startup and closes at shutdown. With prometheus-client installed
(`pip install "traffik-core[prometheus]"`), every decision is counted while the app runs and
`GET /metrics` serves the counts; under several workers, set `PROMETHEUS_MULTIPROC_DIR` to an
empty directory so that it serves the sum of every worker's.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import ModuleType
from typing import Optional
from urllib.parse import parse_qs, urlsplit

from fastapi import APIRouter, Depends, FastAPI, Request, Response, WebSocket, WebSocketDisconnect

from traffik import HTTPThrottle, InMemoryBackend, WebSocketThrottle, is_throttled
from traffik.backends import ThrottleBackend, from_url
from traffik.backends.url_options import redact_url
from traffik.exceptions import TraffikError
from traffik.fastapi import document_rate_limits, throttled
from traffik.middleware import MiddlewareThrottle, ThrottleMiddleware

metrics: Optional[ModuleType]
try:
    import prometheus_client

    from traffik.metrics import prometheus as metrics
except ImportError:  # the demo runs without it, and serves no /metrics
    metrics = None


def backend_from_environment() -> ThrottleBackend:
    """The backend `TRAFFIK_BACKEND_URL` names; a URL that names none stops the demo with
    the reason (uvicorn would print a traceback for it)."""
    url = os.environ.get("TRAFFIK_BACKEND_URL")
    if not url:
        return InMemoryBackend(namespace="traffik-demo")
    # (the URL's own `?namespace=` wins: the demo's is a default)
    named = "namespace" in parse_qs(urlsplit(url).query)
    try:
        return from_url(url, **({} if named else {"namespace": "traffik-demo"}))
    except TraffikError as exc:
        raise SystemExit(f"TRAFFIK_BACKEND_URL={redact_url(url)!r}: {exc}") from None


backend = backend_from_environment()

# Every client gets its own budget on each route.
items_throttle = HTTPThrottle("items", rate="5/10s")
search_throttle = HTTPThrottle("search", rate="3/10s", headers="both")
reports_throttle = HTTPThrottle("reports", rate="2/min")
site_throttle = HTTPThrottle("site", rate="100/min")
connect_throttle = WebSocketThrottle("ws-connect", rate="10/min")
message_throttle = WebSocketThrottle("ws-messages", rate="5/10s")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Open the backend, and count decisions for Prometheus while the app runs."""
    if metrics is not None:
        metrics.install()
    try:
        async with backend.lifespan(app):
            yield
    finally:
        if metrics is not None:
            metrics.uninstall()


app = document_rate_limits(FastAPI(title="Traffik demo", lifespan=lifespan))

# A site-wide limit before routing, with the health check, the docs and the metrics left out.
app.add_middleware(
    ThrottleMiddleware,
    middleware_throttles=[MiddlewareThrottle(site_throttle, path="/**")],
    exempt=["/health", "/docs", "/openapi.json", "/metrics"],
)


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


if metrics is not None:

    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response:
        """Prometheus' text format: the default registry's, or, with `PROMETHEUS_MULTIPROC_DIR`
        set (several workers: `uvicorn --workers 4`), every worker's added up (one worker's
        counts alone would read as resets, scrape after scrape)."""
        registry = prometheus_client.REGISTRY
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            registry = prometheus_client.CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
        return Response(
            prometheus_client.generate_latest(registry),
            media_type=prometheus_client.CONTENT_TYPE_LATEST,
        )


@app.get("/items")
async def items(request: Request = Depends(items_throttle)) -> dict[str, list[int]]:
    """A throttle as a dependency: 5 requests per 10 seconds."""
    return {"items": [1, 2, 3]}


@app.get("/search")
@throttled(search_throttle)
async def search(q: str = "") -> dict[str, str]:
    """The decorator: no `request` parameter needed; legacy `X-RateLimit-*` headers as well."""
    return {"query": q}


# A router-level throttle: each report has its own budget of 2 per minute.
reports = APIRouter(prefix="/reports", tags=["reports"], dependencies=[Depends(reports_throttle)])


@reports.get("/daily")
async def daily_report() -> dict[str, str]:
    return {"report": "daily"}


@reports.get("/weekly")
async def weekly_report() -> dict[str, str]:
    return {"report": "weekly"}


app.include_router(reports)


@app.websocket("/ws/echo")
async def echo(websocket: WebSocket = Depends(connect_throttle)) -> None:
    """10 connections a minute; then 5 messages per 10 seconds, over which the client gets a
    `{"type": "rate_limit", ...}` message instead of the echo and the socket stays open."""
    await websocket.accept()
    try:
        while True:
            text = await websocket.receive_text()
            await message_throttle.hit(websocket)
            if not is_throttled(websocket):
                await websocket.send_text(f"echo: {text}")
    except WebSocketDisconnect:
        pass


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("PORT", "8000")))
