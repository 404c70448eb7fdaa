"""The FastAPI apps under test: one `GET /` route each, bare, behind a no-op dependency, or throttled.

Routes say `response_model=None`, so FastAPI validates no response: the fixed cost shared by
every variant stays small and the differences stand out of the noise.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, Callable

from fastapi import Depends, FastAPI, HTTPException, Request

__all__ = [
    "dependency_app",
    "noop",
    "noop_429",
    "plain_app",
    "raise_429_app",
    "round_trip_dependency",
]

_BODY = {"ok": True}


async def noop(request: Request) -> Request:
    """The floor: the cheapest dependency a dependency-based limiter can be."""
    return request


async def noop_429(request: Request) -> Request:
    """The floor of a rejection: a no-op dependency answering through the framework's 429 path."""
    raise HTTPException(status_code=429, detail="Too Many Requests")


def round_trip_dependency(
    round_trip: Callable[[], Awaitable[Any]], reject: bool = False
) -> Callable[..., Awaitable[Request]]:
    """The floor on a store: a no-op dependency that makes one raw round trip (then 429s,
    when `reject`), so the round trip is paid inside a request as the throttle's is."""

    async def dependency(request: Request) -> Request:
        await round_trip()
        if reject:
            raise HTTPException(status_code=429, detail="Too Many Requests")
        return request

    return dependency


def plain_app() -> FastAPI:
    """The endpoint with no limiter."""
    app = FastAPI()

    @app.get("/", response_model=None)
    async def endpoint() -> dict[str, bool]:
        return _BODY

    return app


def raise_429_app() -> FastAPI:
    """The framework's own 429 path with no dependency: the endpoint raises it."""
    app = FastAPI()

    @app.get("/", response_model=None)
    async def endpoint() -> dict[str, bool]:
        raise HTTPException(status_code=429, detail="Too Many Requests")

    return app


def dependency_app(dependency: Callable[..., Any]) -> FastAPI:
    """The same endpoint behind `request: Request = Depends(dependency)` (a throttle or a no-op)."""
    app = FastAPI()

    @app.get("/", response_model=None)
    async def endpoint(request: Request = Depends(dependency)) -> dict[str, bool]:
        return _BODY

    return app
