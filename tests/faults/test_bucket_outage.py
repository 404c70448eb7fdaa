"""A client's bucket on a frozen Redis: an endpoint's `refund`, `stat`, `check` and `reset` follow
the throttle's `on_error` (here `"allow"`) within the command timeout, and never answer a 500."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI, Request

from traffik import HTTPThrottle
from traffik.backends.health import CircuitState
from traffik.backends.redis import RedisBackend

pytestmark = pytest.mark.anyio

LIMIT = 5
TIMEOUT = 0.3


async def test_bucket_operations_on_a_frozen_redis_follow_on_error(redis_server: Any) -> None:
    server = redis_server()
    backend = RedisBackend(
        server.url, namespace="bucket-outage", connect_timeout=TIMEOUT, command_timeout=TIMEOUT
    )
    throttle = HTTPThrottle("frozen-bucket", f"{LIMIT}/min", backend=backend, on_error="allow")
    app = FastAPI()
    answers: dict[str, Any] = {}

    @app.get("/items")
    async def items(request: Request = Depends(throttle)) -> dict[str, Any]:
        server.pause()  # (after the hit: the store took it)
        try:
            answers["refund"] = await throttle.refund(request)
            answers["stat"] = await throttle.stat(request)
            answers["check"] = await throttle.check(request)
            answers["reset"] = await throttle.reset(request)
        finally:
            server.resume()
        return {}

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            started = time.monotonic()
            response = await client.get("/items")
            took = time.monotonic() - started
        assert response.status_code == 200, response.text
        assert answers == {"refund": None, "stat": None, "check": True, "reset": False}
        assert took < 4 * TIMEOUT + 2.0, f"the operations took {took:.2f}s"
        deadline = time.monotonic() + 5.0
        while backend.circuit.state is not CircuitState.CLOSED:  # (its probe sees it again)
            assert time.monotonic() < deadline, backend.circuit.info()
            await asyncio.sleep(0.01)
        stat = await throttle.stat("127.0.0.1", path="/items")
        # (a refund that timed out may still land: the frozen server reads it once thawed)
        assert stat is not None and stat.hits_remaining in (LIMIT - 1, LIMIT)
    finally:
        server.resume()
        await backend.close()
