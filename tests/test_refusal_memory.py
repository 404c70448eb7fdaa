"""A process remembers the clients it just refused (`cache_refusals`, on by default): what
forgets the counts forgets those refusals too, on every store (docs/observability.md)."""

from __future__ import annotations

from typing import Any, Callable

import httpx
import pytest
from fastapi import Depends, FastAPI

from traffik import HTTPThrottle
from traffik.backends.base import ThrottleBackend

pytestmark = pytest.mark.anyio


def _app(throttle: HTTPThrottle) -> FastAPI:
    app = FastAPI()

    @app.get("/r", dependencies=[Depends(throttle)])
    async def route() -> dict[str, bool]:
        return {"ok": True}

    return app


@pytest.mark.parametrize("forget", ["backend.reset", "backend.clear", "throttle.reset"])
async def test_what_forgets_the_counts_forgets_the_refusals(
    make_backend: Callable[..., ThrottleBackend], forget: str
) -> None:
    # On Redis and Memcached (whose `clear` comes from a mixin) `reset()` and `clear()` left
    # the refusals in place: the client was refused for up to its wait after the store was
    # emptied, the first request of each test that empties its backend before it.
    backend = make_backend(cache_refusals=True)
    throttle = HTTPThrottle("forget", rate="1/min", backend=backend)
    transport = httpx.ASGITransport(app=_app(throttle))
    async with backend(), httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert [(await client.get("/r")).status_code for _ in range(2)] == [200, 429]
        assert len(backend.refusals or ()) == 1
        way: Any = {
            "backend.reset": backend.reset,
            "backend.clear": backend.clear,
            "throttle.reset": lambda: throttle.reset("127.0.0.1", path="/r"),
        }[forget]
        await way()
        assert len(backend.refusals or ()) == 0
        assert [(await client.get("/r")).status_code for _ in range(2)] == [200, 429]
        await backend.reset()
