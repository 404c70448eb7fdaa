"""The other rate limiters for FastAPI, each guarding the benchmark's endpoint as its docs show.

Every rival limits the same `GET /` (`benchmarks.apps`) by the client's address, in memory,
with a fixed window where it has one and a limit nobody reaches (`RATE` a day), so each
request is a decision that admits. Each is built the way its own documentation sets it up:

- `limits`: a thin dependency over `limits.strategies.FixedWindowRateLimiter` and its
  `MemoryStorage` (the library slowapi is built on, with nothing around it: the least a
  limiter can be in Python), and the same over `limits.aio`;
- `slowapi`: `Limiter(key_func=get_remote_address)` and `@limiter.limit(...)` on the endpoint;
- `fastapi-limiter` (0.2, on `pyrate-limiter`): `Depends(RateLimiter(limiter=Limiter(...)))`
  in the route's dependencies; pyrate-limiter's in-memory bucket is a sliding log;
- traffik 1.2 (`HTTPThrottle` with its in-memory backend, FixedWindow, its default) runs in
  a process of its own (`benchmarks.rivals`): it is also imported as `traffik`.

None of the rivals sends rate-limit headers by default; traffik does, so it is measured with
its default headers and without them (`headers=None`).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any, Callable

from fastapi import Depends, FastAPI, HTTPException, Request

from benchmarks.apps import dependency_app

__all__ = ["RATE_PER_DAY", "RIVALS", "Rival", "traffik_app"]

RATE_PER_DAY = 1_000_000
"""Requests a day each limiter allows a client: a limit no benchmark reaches."""

_BODY = {"ok": True}


@dataclass(frozen=True)
class Rival:
    """A limiter to measure: its name in the report, the distribution `pip` installs it
    from, the module that tells whether it is installed, and its app builder."""

    name: str
    distribution: str
    module: str
    app: Callable[[], FastAPI]

    def installed(self) -> bool:
        return importlib.util.find_spec(self.module) is not None


def _limits_app() -> FastAPI:
    from limits import RateLimitItemPerDay
    from limits.storage import MemoryStorage
    from limits.strategies import FixedWindowRateLimiter

    item, limiter = RateLimitItemPerDay(RATE_PER_DAY), FixedWindowRateLimiter(MemoryStorage())

    async def limit(request: Request) -> Request:
        if not limiter.hit(item, request.client.host if request.client else "", "GET:/"):
            raise HTTPException(status_code=429, detail="Too Many Requests")
        return request

    return dependency_app(limit)


def _limits_aio_app() -> FastAPI:
    from limits import RateLimitItemPerDay
    from limits.aio.storage import MemoryStorage
    from limits.aio.strategies import FixedWindowRateLimiter

    item, limiter = RateLimitItemPerDay(RATE_PER_DAY), FixedWindowRateLimiter(MemoryStorage())

    async def limit(request: Request) -> Request:
        if not await limiter.hit(item, request.client.host if request.client else "", "GET:/"):
            raise HTTPException(status_code=429, detail="Too Many Requests")
        return request

    return dependency_app(limit)


def _slowapi_app() -> FastAPI:
    from slowapi import Limiter, _rate_limit_exceeded_handler
    from slowapi.errors import RateLimitExceeded
    from slowapi.util import get_remote_address

    limiter = Limiter(key_func=get_remote_address)
    app = FastAPI()
    app.state.limiter = limiter
    app.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)  # type: ignore[arg-type]

    @app.get("/", response_model=None)
    @limiter.limit(f"{RATE_PER_DAY}/day")
    async def endpoint(request: Request) -> dict[str, bool]:
        return _BODY

    return app


def _fastapi_limiter_app() -> FastAPI:
    from fastapi_limiter.depends import RateLimiter
    from pyrate_limiter import Duration, Limiter, Rate

    limiter = RateLimiter(limiter=Limiter(Rate(RATE_PER_DAY, Duration.DAY)))
    app = FastAPI()

    @app.get("/", response_model=None, dependencies=[Depends(limiter)])
    async def endpoint() -> dict[str, bool]:
        return _BODY

    return app


def traffik_app(headers: bool) -> FastAPI:
    """This traffik's in-memory FixedWindow throttle as the endpoint's dependency, with its
    default rate-limit headers or none."""
    from traffik import HTTPThrottle, InMemoryBackend

    options: dict[str, Any] = {} if headers else {"headers": None}
    throttle = HTTPThrottle(
        "bench:rivals", rate=f"{RATE_PER_DAY}/d", backend=InMemoryBackend(), **options
    )
    return dependency_app(throttle)


RIVALS = (
    Rival("limits (thin dependency)", "limits", "limits", _limits_app),
    Rival("limits.aio (thin dependency)", "limits", "limits", _limits_aio_app),
    Rival("slowapi", "slowapi", "slowapi", _slowapi_app),
    Rival("fastapi-limiter", "fastapi-limiter", "fastapi_limiter", _fastapi_limiter_app),
)
"""The rivals measured in this process, in the report's order."""
