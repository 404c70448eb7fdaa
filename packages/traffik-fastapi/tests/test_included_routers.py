"""Routers included with a prefix: each inclusion is a route of its own, with the prefix in its key.

FastAPI 0.16x includes a router's routes by reference: `scope["route"]` is the router's own
route (`/{item_id}`) under every prefix, and the prefixed path lives in the inclusion's
context. Older releases copy each route with its prefix. Both must give every inclusion its
own budget, keyed by the path as served.
"""

from __future__ import annotations

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI

from traffik import HTTPThrottle, InMemoryBackend
from traffik.testing import reset_client

pytestmark = pytest.mark.anyio


def _app(throttle: HTTPThrottle) -> FastAPI:
    users, orders = APIRouter(dependencies=[Depends(throttle)]), APIRouter()

    @users.get("/{item_id}")
    async def user(item_id: int) -> int:
        return item_id

    @orders.get("/{item_id}", dependencies=[Depends(throttle)])
    async def order(item_id: int) -> int:
        return item_id

    inner = APIRouter(prefix="/inner")
    inner.include_router(orders, prefix="/orders")
    app = FastAPI()
    app.include_router(users, prefix="/users")
    app.include_router(orders, prefix="/orders")
    app.include_router(users, prefix="/v2/users")  # the same router twice
    app.include_router(inner, prefix="/api")
    return app


async def test_each_inclusion_of_a_router_counts_apart_under_its_prefix() -> None:
    backend = InMemoryBackend(namespace="included")
    throttle = HTTPThrottle("included", rate="1/min", backend=backend)
    transport = httpx.ASGITransport(app=_app(throttle))
    paths = ["/users/1", "/orders/1", "/v2/users/1", "/api/inner/orders/1"]
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        first = [(await client.get(path)).status_code for path in paths]
        again = [(await client.get(path.replace("/1", "/2"))).status_code for path in paths]
    assert first == [200, 200, 200, 200]
    assert again == [429, 429, 429, 429]  # (one budget per route: item 2 shares item 1's)
    keys = sorted(await backend.keys())
    templates = sorted(key.split(":GET:")[1].split(":")[0] for key in keys)
    assert templates == sorted(
        [
            "/users/%7Bitem_id%7D",
            "/orders/%7Bitem_id%7D",
            "/v2/users/%7Bitem_id%7D",
            "/api/inner/orders/%7Bitem_id%7D",
        ]
    ), keys


async def test_a_client_is_reset_on_the_route_named_with_its_prefix() -> None:
    backend = InMemoryBackend(namespace="included-reset")
    throttle = HTTPThrottle("included-reset", rate="1/min", backend=backend)
    transport = httpx.ASGITransport(app=_app(throttle))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        await client.get("/v2/users/1")
        assert (await client.get("/v2/users/1")).status_code == 429
        assert await reset_client(throttle, "127.0.0.1", path="/users/{item_id}") is False
        assert await reset_client(throttle, "127.0.0.1", path="/v2/users/{item_id}") is True
        assert (await client.get("/v2/users/1")).status_code == 200
