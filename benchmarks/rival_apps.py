"""The other rate limiters for FastAPI, each guarding the benchmark's endpoint as its docs show.

Every rival limits the same `GET /` (`benchmarks.apps`) by the client's address, in memory or
on Redis (`url`), with a fixed window where it has one and a limit nobody reaches
(`RATE_PER_DAY`), so each request is a decision that admits. Each is built the way its own
documentation sets it up:

- `limits`: a thin dependency over `limits.strategies.FixedWindowRateLimiter` and its
  `MemoryStorage` or `RedisStorage` (the library slowapi is built on, with nothing around
  it: the least a limiter can be in Python), and the same over `limits.aio` (on Redis
  through redis-py's asyncio client, `implementation="redispy"`, the client traffik uses);
- `slowapi`: `Limiter(key_func=get_remote_address)` (`storage_uri=` the Redis URL) and
  `@limiter.limit(...)` on the endpoint; on Redis its client is redis-py's blocking one;
- `fastapi-limiter` (0.2, on `pyrate-limiter`): `Depends(RateLimiter(limiter=Limiter(...)))`
  in the route's dependencies; pyrate-limiter's buckets are sliding logs (a list in memory,
  a sorted set on Redis, `RedisBucket` on redis-py's asyncio client);
- traffik 1.2 (`HTTPThrottle`, FixedWindow, its default) runs in a process of its own
  (`benchmarks.legacy_run`): it is also imported as `traffik`.

None of the rivals sends rate-limit headers by default; traffik does, so it is measured with
its default headers and without them (`headers=None`).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Callable, Optional

from fastapi import Depends, FastAPI, HTTPException, Request

from benchmarks.apps import dependency_app

__all__ = ["KEY_PREFIX", "RATE_PER_DAY", "RIVALS", "Build", "Rival", "close_all", "traffik_app"]

RATE_PER_DAY = 1_000_000
"""Requests a day each limiter allows a client: a limit no benchmark reaches."""

_BODY = {"ok": True}
KEY_PREFIX = "traffik-bench-rivals"
"""Every limiter's keys on Redis start with it, its own prefix after (cleared after a run)."""

_OPEN: list[Callable[[], Any]] = []
"""What `close_all` closes: the rivals' background work."""

Build = Callable[[Optional[str]], Awaitable[FastAPI]]
"""An app builder: in memory for None, else on the Redis at that URL."""


@dataclass(frozen=True)
class Rival:
    """A limiter to measure: its name in the report, the distribution `pip` installs it
    from, the module that tells whether it is installed, and its app builder."""

    name: str
    distribution: str
    module: str
    app: Build

    def installed(self) -> bool:
        return importlib.util.find_spec(self.module) is not None


def _client_host(request: Request) -> str:
    return request.client.host if request.client else ""


async def _limits_app(url: Optional[str]) -> FastAPI:
    from limits import RateLimitItemPerDay
    from limits.storage import MemoryStorage, RedisStorage
    from limits.strategies import FixedWindowRateLimiter

    storage = MemoryStorage() if url is None else RedisStorage(url, key_prefix=f"{KEY_PREFIX}-l")
    item, limiter = RateLimitItemPerDay(RATE_PER_DAY), FixedWindowRateLimiter(storage)

    async def limit(request: Request) -> Request:
        if not limiter.hit(item, _client_host(request), "GET:/"):
            raise HTTPException(status_code=429, detail="Too Many Requests")
        return request

    return dependency_app(limit)


async def _limits_aio_app(url: Optional[str]) -> FastAPI:
    from limits import RateLimitItemPerDay
    from limits.aio.storage import MemoryStorage, RedisStorage
    from limits.aio.strategies import FixedWindowRateLimiter

    storage = (
        MemoryStorage()
        if url is None
        else RedisStorage(f"async+{url}", implementation="redispy", key_prefix=f"{KEY_PREFIX}-la")
    )
    item, limiter = RateLimitItemPerDay(RATE_PER_DAY), FixedWindowRateLimiter(storage)

    async def limit(request: Request) -> Request:
        if not await limiter.hit(item, _client_host(request), "GET:/"):
            raise HTTPException(status_code=429, detail="Too Many Requests")
        return request

    return dependency_app(limit)


async def _slowapi_app(url: Optional[str]) -> FastAPI:
    from slowapi import Limiter, _rate_limit_exceeded_handler
    from slowapi.errors import RateLimitExceeded
    from slowapi.util import get_remote_address

    options: dict[str, Any] = {} if url is None else {"storage_uri": url}
    limiter = Limiter(key_func=get_remote_address, key_prefix=f"{KEY_PREFIX}-s", **options)
    app = FastAPI()
    app.state.limiter = limiter
    app.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)  # type: ignore[arg-type]

    @app.get("/", response_model=None)
    @limiter.limit(f"{RATE_PER_DAY}/day")
    async def endpoint(request: Request) -> dict[str, bool]:
        return _BODY

    return app


async def _fastapi_limiter_app(url: Optional[str]) -> FastAPI:
    from fastapi_limiter.depends import RateLimiter
    from pyrate_limiter import Duration, Limiter, Rate

    rates = [Rate(RATE_PER_DAY, Duration.DAY)]
    if url is None:
        pyrate = Limiter(rates)
    else:
        from pyrate_limiter.buckets.redis_bucket import RedisBucket
        from redis.asyncio import Redis

        pyrate = Limiter(await RedisBucket.init(rates, Redis.from_url(url), f"{KEY_PREFIX}-f"))
    _OPEN.append(pyrate.close)  # its leak task would hold the event loop's shutdown
    limiter = RateLimiter(limiter=pyrate)
    app = FastAPI()

    @app.get("/", response_model=None, dependencies=[Depends(limiter)])
    async def endpoint() -> dict[str, bool]:
        return _BODY

    return app


def traffik_app(headers: bool, url: Optional[str] = None) -> FastAPI:
    """This traffik's FixedWindow throttle as the endpoint's dependency, in memory or on the
    Redis at `url`, with its default rate-limit headers or none."""
    from traffik import HTTPThrottle, InMemoryBackend

    options: dict[str, Any] = {} if headers else {"headers": None}
    if url is None:
        backend: Any = InMemoryBackend()
    else:
        from traffik.backends.redis import RedisBackend

        backend = RedisBackend(url, namespace=f"{KEY_PREFIX}-t")
    throttle = HTTPThrottle("bench:rivals", rate=f"{RATE_PER_DAY}/d", backend=backend, **options)
    return dependency_app(throttle)


RIVALS = (
    Rival("limits (thin dependency)", "limits", "limits", _limits_app),
    Rival("limits.aio (thin dependency)", "limits", "limits", _limits_aio_app),
    Rival("slowapi", "slowapi", "slowapi", _slowapi_app),
    Rival("fastapi-limiter", "fastapi-limiter", "fastapi_limiter", _fastapi_limiter_app),
)
"""The rivals measured in this process, in the report's order."""


def close_all() -> None:
    """Stop what the rivals built so far run in the background (pyrate-limiter's leak
    tasks), before their event loop closes."""
    while _OPEN:
        _OPEN.pop()()
