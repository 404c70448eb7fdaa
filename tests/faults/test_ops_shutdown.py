"""A deploy stops an instance while requests still arrive: those decided after the backend
closed get `on_error` at once, and the log says the backend was closed (the app is shutting
down), not that the store is unreachable: nothing for the operator to check on the store. A
store that stops answering before the instance stops does not fail its shutdown."""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

import httpx
import pytest
from fastapi import Depends, FastAPI, Request

from traffik import HTTPThrottle
from traffik.backends.memcached import MemcachedBackend
from traffik.backends.redis import RedisBackend

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["redis", "memcached"])
def backend_of(request: pytest.FixtureRequest) -> Callable[[str], Any]:
    if request.param == "redis":
        redis = request.getfixturevalue("redis_server")()
        return lambda namespace: RedisBackend(redis.url, namespace=namespace)
    memcached = request.getfixturevalue("memcached_server")()
    return lambda namespace: MemcachedBackend(memcached.url, namespace=namespace)


@pytest.mark.parametrize("on_error", ["throttle", "allow"])
async def test_requests_after_shutdown_are_answered_and_logged_as_a_shutdown(
    backend_of: Callable[[str], Any], on_error: str, caplog: pytest.LogCaptureFixture
) -> None:
    backend = backend_of(f"shutdown-{on_error}")
    # (a uid per store: failures of one kind are logged once per 10 s per throttle uid)
    uid = f"shutdown-{type(backend).__name__}-{on_error}"
    throttle = HTTPThrottle(uid, "100/min", on_error=on_error)
    app = FastAPI(lifespan=backend.lifespan)

    @app.get("/")
    async def root(request: Request = Depends(throttle)) -> dict[str, bool]:
        return {"ok": True}

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        async with app.router.lifespan_context(app):
            assert (await client.get("/")).status_code == 200
        with caplog.at_level(logging.WARNING, logger="traffik"):
            late = (await client.get("/")).status_code  # arrived as the instance stopped
    assert late == (429 if on_error == "throttle" else 200)
    lines = [r.getMessage() for r in caplog.records if r.name == "traffik"]
    assert len(lines) == 1, lines
    assert "was closed" in lines[0] and "shutting down" in lines[0], lines[0]
    assert "check that the store answers" not in lines[0], lines[0]


@pytest.fixture(params=["redis", "memcached"])
def frozen_store(request: pytest.FixtureRequest) -> tuple[Any, Any]:
    """A non-persistent backend with short timeouts, and its server, to freeze."""
    options = {"persistent": False, "connect_timeout": 0.2, "command_timeout": 0.2}
    if request.param == "redis":
        redis = request.getfixturevalue("redis_server")()
        return RedisBackend(redis.url, namespace="frozen-exit", **options), redis
    memcached = request.getfixturevalue("memcached_server")()
    return MemcachedBackend(memcached.url, namespace="frozen-exit", **options), memcached


async def test_a_store_frozen_at_shutdown_is_logged_and_the_shutdown_completes(
    frozen_store: tuple[Any, Any], caplog: pytest.LogCaptureFixture
) -> None:
    backend, server = frozen_store
    throttle = HTTPThrottle(f"frozen-exit-{type(backend).__name__}", "100/min")
    app = FastAPI(lifespan=backend.lifespan)

    @app.get("/")
    async def root(request: Request = Depends(throttle)) -> dict[str, bool]:
        return {"ok": True}

    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            with caplog.at_level(logging.WARNING, logger="traffik"):
                async with app.router.lifespan_context(app):
                    assert (await client.get("/")).status_code == 200
                    server.pause()
                    started = time.monotonic()
                took = time.monotonic() - started
    finally:
        server.resume()
    assert backend.explicitly_closed
    assert took < 2.0
    lines = [r.getMessage() for r in caplog.records if r.name == "traffik"]
    assert len(lines) == 1, lines
    assert repr(backend) in lines[0] and "'frozen-exit' was not reset" in lines[0], lines[0]
