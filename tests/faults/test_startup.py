"""Point 1: an app whose store is down at start-up starts all the same, its throttles answer
with their `on_error`, and the store decides again as soon as it answers; `fail_fast=True`
keeps the old start that fails."""

from __future__ import annotations

import asyncio
import functools
import time
from typing import Any, Callable

import httpx
import pytest
from fastapi import Depends, FastAPI, Request

from traffik import HTTPThrottle
from traffik.backends.base import ThrottleBackend
from traffik.backends.health import CircuitState
from traffik.backends.inmemory import InMemoryBackend
from traffik.backends.memcached import MemcachedBackend
from traffik.backends.redis import RedisBackend
from traffik.error_handlers import fallback
from traffik.exceptions import BackendConnectionError

pytestmark = pytest.mark.anyio

TIMEOUT = 0.3
POLICIES = ["throttle", "allow", "fallback"]
STORE_ANSWER = [200, 200, 429]
"""What the store answers a new client under "2/min"."""
DURING = {"throttle": [429] * 3, "allow": [200] * 3, "fallback": STORE_ANSWER}


def _server_and_backend(kind: str, start: Callable[[], Any], **options: Any) -> tuple[Any, Any]:
    server = start()
    if kind == "redis":
        backend: ThrottleBackend = RedisBackend(
            server.url, connect_timeout=TIMEOUT, command_timeout=TIMEOUT, **options
        )
    else:
        backend = MemcachedBackend(
            server.url, connect_timeout=TIMEOUT, command_timeout=TIMEOUT, **options
        )
    return server, backend


@pytest.fixture(params=["redis", "memcached"])
def start(request: pytest.FixtureRequest) -> Callable[[], Any]:
    fixture = "redis_server" if request.param == "redis" else "memcached_server"
    return request.getfixturevalue(fixture)


def _app(backend: ThrottleBackend, on_error: str, lifespan: Any = None) -> FastAPI:
    policy: Any = on_error
    if on_error == "fallback":
        policy = fallback(InMemoryBackend(namespace="start-fallback"))
    throttle = HTTPThrottle(f"start-{on_error}", "2/min", on_error=policy)
    app = FastAPI(lifespan=lifespan or backend.lifespan)

    @app.get("/")
    async def root(request: Request = Depends(throttle)) -> dict[str, bool]:
        return {"ok": True}

    return app


async def _statuses(app: FastAPI, peer: str, n: int = 3) -> list[int]:
    transport = httpx.ASGITransport(app=app, client=(peer, 1234))
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        statuses = []
        for _ in range(n):
            started = time.monotonic()
            statuses.append((await client.get("/")).status_code)
            assert time.monotonic() - started < 0.2, "a request waited on the store that is down"
        return statuses


async def _until_closed(backend: ThrottleBackend, within: float) -> float:
    started = time.monotonic()
    while any(c.state is not CircuitState.CLOSED for c in backend.circuits):
        assert time.monotonic() - started < within, [c.info() for c in backend.circuits]
        await asyncio.sleep(0.01)
    return time.monotonic() - started


@pytest.mark.parametrize("on_error", POLICIES)
async def test_the_app_starts_with_its_store_down_and_follows_on_error(
    request: pytest.FixtureRequest, start: Callable[[], Any], on_error: str
) -> None:
    kind = request.node.callspec.params["start"]
    server, backend = _server_and_backend(kind, start, namespace=f"start-{kind}-{on_error}")
    server.stop()
    app = _app(backend, on_error)
    async with app.router.lifespan_context(app):
        assert all(c.state is not CircuitState.CLOSED for c in backend.circuits)
        assert await _statuses(app, "10.0.0.1") == DURING[on_error]
        server.start()
        took = await _until_closed(backend, within=2.0)
        print(f"\n{kind}: decisions back from the store {took:.2f}s after it started")
        assert await _statuses(app, "10.0.0.2") == STORE_ANSWER
    assert backend.explicitly_closed


async def test_fail_fast_keeps_the_start_that_fails(
    request: pytest.FixtureRequest, start: Callable[[], Any]
) -> None:
    kind = request.node.callspec.params["start"]
    server, backend = _server_and_backend(kind, start, namespace="fail-fast", fail_fast=True)
    server.stop()
    app = _app(backend, "throttle")
    with pytest.raises(BackendConnectionError):
        async with app.router.lifespan_context(app):
            pass
    other = _server_and_backend(kind, lambda: server, namespace="fail-fast-2")[1]
    app = _app(other, "throttle", functools.partial(other.lifespan, fail_fast=True))
    with pytest.raises(BackendConnectionError):
        async with app.router.lifespan_context(app):
            pass


async def test_a_frozen_redis_at_start_up_costs_one_attempt(redis_server: Any) -> None:
    server = redis_server()
    server.pause()
    backend = RedisBackend(
        server.url, namespace="frozen-start", connect_timeout=TIMEOUT, command_timeout=TIMEOUT
    )
    app = _app(backend, "allow")
    started = time.monotonic()
    try:
        async with app.router.lifespan_context(app):
            assert time.monotonic() - started < 4 * (TIMEOUT + TIMEOUT)
            assert await _statuses(app, "10.0.0.3") == [200, 200, 200]
            server.resume()
            await _until_closed(backend, within=2.0)
            assert await _statuses(app, "10.0.0.4") == STORE_ANSWER
    finally:
        server.resume()
