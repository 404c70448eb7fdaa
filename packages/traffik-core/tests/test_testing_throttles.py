"""`throttle_disabled`, `override_rate` and `reset_client`, and `Throttle.update_rate` under them."""

from __future__ import annotations

import functools
from typing import Any

import anyio
import httpx
import pytest
from fastapi import Depends, FastAPI, Request, WebSocket
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from traffik import EXEMPTED, HTTPThrottle, InMemoryBackend, ManualClock, Rate, WebSocketThrottle
from traffik.exceptions import ConfigurationError
from traffik.middleware import MiddlewareThrottle, ThrottleMiddleware
from traffik.rules import glob
from traffik.strategies import BUILTIN_STRATEGIES, Strategy
from traffik.testing import override_rate, reset_client, throttle_disabled

pytestmark = pytest.mark.anyio


def make_app(*throttles: Any) -> FastAPI:
    app = FastAPI()

    @app.get("/items/{item_id}", dependencies=[Depends(t) for t in throttles])
    async def item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    @app.get("/other", dependencies=[Depends(t) for t in throttles])
    async def other() -> dict[str, bool]:
        return {"ok": True}

    return app


def client_for(app: FastAPI, address: str = "127.0.0.1") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(address, 5000))
    return httpx.AsyncClient(transport=transport, base_url="http://test")


async def statuses(client: httpx.AsyncClient, path: str, n: int) -> list[int]:
    return [(await client.get(path)).status_code for _ in range(n)]


# -- throttle_disabled ---------------------------------------------------------------------


async def test_disabled_throttles_let_everything_through_then_count_again(
    traffik_backend: InMemoryBackend,
) -> None:
    first = HTTPThrottle("off:a", rate="1/min", backend=traffik_backend)
    second = HTTPThrottle("off:b", rate="1/min", backend=traffik_backend)
    async with client_for(make_app(first, second)) as client:
        with throttle_disabled(first, second):
            assert first.is_disabled and second.is_disabled
            assert await statuses(client, "/other", 5) == [200] * 5
        assert await traffik_backend.keys() == [], "a disabled throttle counted"
        assert not first.is_disabled and not second.is_disabled
        assert await statuses(client, "/other", 2) == [200, 429]


async def test_disabled_restores_on_error_and_keeps_an_already_disabled_throttle(
    traffik_backend: InMemoryBackend,
) -> None:
    on = HTTPThrottle("off:on", rate="1/min", backend=traffik_backend)
    off = HTTPThrottle("off:off", rate="1/min", backend=traffik_backend)
    await off.disable()
    with pytest.raises(RuntimeError), throttle_disabled(on, off, on):
        raise RuntimeError("the test failed")
    assert not on.is_disabled and off.is_disabled


def test_disabled_in_a_sync_test(traffik_backend: InMemoryBackend) -> None:
    throttle = HTTPThrottle("off:sync", rate="1/min", backend=traffik_backend)
    client = TestClient(make_app(throttle))
    with throttle_disabled(throttle):
        assert [client.get("/other").status_code for _ in range(3)] == [200] * 3
    assert [client.get("/other").status_code for _ in range(2)] == [200, 429]


def test_disabled_needs_a_throttle() -> None:
    with pytest.raises(ConfigurationError, match="needs the throttles"), throttle_disabled():
        pass


# -- override_rate and Throttle.update_rate ------------------------------------------------------


async def test_override_rate_for_a_block(traffik_backend: InMemoryBackend) -> None:
    throttle = HTTPThrottle("rate:block", rate="2/min", backend=traffik_backend)
    async with client_for(make_app(throttle)) as client:
        with override_rate(throttle, "1000/min") as overridden:
            assert overridden is throttle and str(throttle.rate) == "1000/min"
            response = await client.get("/other")
            assert response.headers["RateLimit-Policy"].endswith(";q=1000;w=60")
            assert await statuses(client, "/other", 9) == [200] * 9
        assert str(throttle.rate) == "2/min"
        assert await statuses(client, "/items/1", 3) == [200, 200, 429]
        assert (await client.get("/items/1")).status_code == 429


async def test_override_rate_restores_a_rate_function(traffik_backend: InMemoryBackend) -> None:
    def rate_for(connection: Any, context: Any) -> str:
        return "1/min"

    throttle = HTTPThrottle("rate:fn", rate=rate_for, backend=traffik_backend)
    with pytest.raises(RuntimeError), override_rate(throttle, Rate.parse("5/s")):
        assert str(throttle.rate) == "5/s"
        raise RuntimeError("the test failed")
    assert throttle.rate is rate_for
    async with client_for(make_app(throttle)) as client:
        assert await statuses(client, "/other", 2) == [200, 429]


def test_update_rate_checks_like_the_constructor(traffik_backend: InMemoryBackend) -> None:
    throttle = HTTPThrottle("rate:check", rate="5/min", cost=3, backend=traffik_backend)
    with pytest.raises(ConfigurationError, match="cost=3 exceeds"):
        throttle.update_rate("2/min")
    with pytest.raises(ConfigurationError, match="use a string like"):
        throttle.update_rate(42)
    assert str(throttle.rate) == "5/min"
    throttle.update_rate(Rate())
    assert throttle.rate == Rate()


# -- reset_client --------------------------------------------------------------------------


async def test_reset_one_client_on_one_route(traffik_backend: InMemoryBackend) -> None:
    throttle = HTTPThrottle("reset:route", rate="1/min", backend=traffik_backend)
    app = make_app(throttle)
    async with client_for(app) as mine, client_for(app, "10.0.0.2") as theirs:
        for client in (mine, theirs):
            assert await statuses(client, "/items/1", 2) == [200, 429]
            assert await statuses(client, "/other", 2) == [200, 429]
        assert await reset_client(throttle, "127.0.0.1", path="/items/{item_id}") is True
        assert await statuses(mine, "/items/7", 2) == [200, 429]
        assert await statuses(mine, "/other", 1) == [429]
        assert await statuses(theirs, "/items/1", 1) == [429]
        assert await reset_client(throttle, "10.0.0.9", path="/other") is False


async def test_reset_by_connection_method_and_context(traffik_backend: InMemoryBackend) -> None:
    throttle = HTTPThrottle(
        "reset:conn", rate="1/min", backend=traffik_backend, context={"scope": "tenant-1"}
    )
    app = FastAPI()

    @app.post("/orders", dependencies=[Depends(throttle)])
    async def orders() -> dict[str, bool]:
        return {"ok": True}

    async with client_for(app) as client:
        assert [(await client.post("/orders")).status_code for _ in range(2)] == [200, 429]
        assert await reset_client(throttle, "127.0.0.1", path="/orders") is False, "not GET"
        assert await reset_client(throttle, "127.0.0.1", path="/orders", method="post") is True
        assert [(await client.post("/orders")).status_code for _ in range(2)] == [200, 429]
        routed = next(route for route in app.routes if getattr(route, "path", None) == "/orders")
        request = Request(  # (as the app routed it: a request with no route counts under /**)
            {
                "type": "http",
                "method": "POST",
                "path": "/orders",
                "client": ("127.0.0.1", 1),
                "route": routed,
            }
        )
        assert await reset_client(throttle, request) is True
        assert (await client.post("/orders")).status_code == 200
        with pytest.raises(ConfigurationError, match="names its own route"):
            await reset_client(throttle, request, path="/other")


@pytest.mark.parametrize("strategy", [cls() for cls in BUILTIN_STRATEGIES], ids=str)
async def test_reset_works_for_every_strategy(
    traffik_backend: InMemoryBackend, strategy: Strategy
) -> None:
    throttle = HTTPThrottle(
        "reset:strategy", rate="2/hour", backend=traffik_backend, strategy=strategy, per_route=False
    )
    async with client_for(make_app(throttle)) as client:
        assert await statuses(client, "/other", 3) == [200, 200, 429]
        assert await reset_client(throttle, "127.0.0.1") is True
        assert await traffik_backend.keys() == []
        assert await statuses(client, "/items/1", 3) == [200, 200, 429]


def test_reset_a_websocket_client(traffik_backend: InMemoryBackend) -> None:
    throttle = WebSocketThrottle("reset:ws", rate="1/min", backend=traffik_backend)
    app = FastAPI()

    @app.websocket("/ws")
    async def ws(websocket: WebSocket = Depends(throttle)) -> None:
        await websocket.accept()
        await websocket.close()

    client = TestClient(app)
    with client.websocket_connect("/ws"):
        pass
    with pytest.raises(WebSocketDisconnect), client.websocket_connect("/ws") as refused:
        refused.receive_text()
    with pytest.raises(ConfigurationError, match="have no method"):
        anyio.run(functools.partial(reset_client, throttle, "testclient", path="/ws", method="GET"))
    assert anyio.run(functools.partial(reset_client, throttle, "testclient", path="/ws")) is True
    with client.websocket_connect("/ws"):
        pass


async def test_reset_refuses_what_it_cannot_find(traffik_backend: InMemoryBackend) -> None:
    per_route = HTTPThrottle("reset:refuse", rate="1/min", backend=traffik_backend)
    with pytest.raises(ConfigurationError, match="pass path="):
        await reset_client(per_route, "127.0.0.1")

    async def custom(key: Any, rate: Rate, backend: Any, cost: int) -> float:
        return 0.0

    opaque = HTTPThrottle("reset:opaque", rate="1/min", backend=traffik_backend, strategy=custom)
    with pytest.raises(ConfigurationError, match="does not say where it keeps state"):
        await reset_client(opaque, "127.0.0.1", path="/other")
    exempt = HTTPThrottle(
        "reset:exempt", rate="1/min", backend=traffik_backend, identifier=lambda c: EXEMPTED
    )
    request = Request({"type": "http", "method": "GET", "path": "/", "client": None})
    assert await reset_client(exempt, request) is False


async def test_reset_uses_the_context_backend(traffik_clock: ManualClock) -> None:
    backend = InMemoryBackend(namespace="ctx", clock=traffik_clock)
    throttle = HTTPThrottle("reset:ctx", rate="1/min", per_route=False)
    async with backend:
        async with client_for(make_app(throttle)) as client:
            assert await statuses(client, "/other", 2) == [200, 429]
        assert await reset_client(throttle, "127.0.0.1") is True


# -- middleware throttles ------------------------------------------------------------------


def middleware_app(*throttles: MiddlewareThrottle) -> Starlette:
    async def ok(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    seen: list[Request] = []

    async def keep(request: Request) -> PlainTextResponse:
        seen.append(request)
        return PlainTextResponse("ok")

    app = Starlette(
        routes=[Route("/api/items/{i}", ok), Route("/page", ok), Route("/seen", keep)],
        middleware=[Middleware(ThrottleMiddleware, middleware_throttles=list(throttles))],
    )
    app.state.seen = seen
    return app


async def test_reset_a_middleware_throttles_client(traffik_backend: InMemoryBackend) -> None:
    # A `MiddlewareThrottle` counts under its path pattern: reset_client takes it, with an
    # identifier (its pattern is its route) or a request the app saw.
    site = MiddlewareThrottle(HTTPThrottle("mw:site", rate="1/min", backend=traffik_backend))
    api = MiddlewareThrottle(
        HTTPThrottle("mw:api", rate="1/min", backend=traffik_backend), path=glob("/api/**")
    )
    app = middleware_app(site, api)
    async with client_for(app) as client:
        assert await statuses(client, "/api/items/1", 2) == [200, 429]
        assert await reset_client(api, "127.0.0.1") is True
        assert await reset_client(site, "127.0.0.1") is True
        assert await statuses(client, "/api/items/2", 2) == [200, 429]
        assert await reset_client(api, "127.0.0.1", path="/api/items/7") is True  # a path it guards
        assert await reset_client(site, "127.0.0.1", path="/**") is True
        assert await statuses(client, "/api/items/3", 2) == [200, 429]

        assert await reset_client(site, "127.0.0.1") is True
        assert await statuses(client, "/seen", 1) == [200]
        request = app.state.seen[0]
        assert await reset_client(site, request) is True  # the request the endpoint saw
        assert await statuses(client, "/page", 2) == [200, 429]
        assert await reset_client(site, request) is True
        assert await reset_client(api, request) is True  # the same client, under /api/**
        assert await reset_client(api, request) is False  # nothing left to forget
        assert await statuses(client, "/api/items/4", 2) == [200, 429]
        with pytest.raises(ConfigurationError, match="does not guard"):
            await reset_client(api, "127.0.0.1", path="/page")
        with pytest.raises(ConfigurationError, match="names its own route"):
            await reset_client(api, request, path="/api/items/1")


async def test_reset_a_middleware_throttle_with_a_regex_path(
    traffik_backend: InMemoryBackend,
) -> None:
    api = MiddlewareThrottle(
        HTTPThrottle("mw:regex", rate="1/min", backend=traffik_backend), path=r"/api/"
    )
    async with client_for(middleware_app(api)) as client:
        assert await statuses(client, "/api/items/1", 2) == [200, 429]
        assert await reset_client(api, "127.0.0.1") is True
        assert await statuses(client, "/api/items/1", 2) == [200, 429]


# -- clear errors on misuse ----------------------------------------------------------------


def test_disabled_takes_a_list_and_refuses_what_is_no_throttle(
    traffik_backend: InMemoryBackend,
) -> None:
    one = HTTPThrottle("disabled:list:1", rate="1/min", backend=traffik_backend)
    two = HTTPThrottle("disabled:list:2", rate="1/min", backend=traffik_backend)
    with throttle_disabled([one, two]):
        assert one.is_disabled and two.is_disabled
    assert not one.is_disabled and not two.is_disabled
    with (
        pytest.raises(ConfigurationError, match="'api' is not a throttle"),
        throttle_disabled(one, "api"),
    ):
        pass  # pragma: no cover
    assert not one.is_disabled


def test_reset_a_websocket_client_without_path_says_websocket_routes_have_no_method(
    traffik_backend: InMemoryBackend,
) -> None:
    throttle = WebSocketThrottle("reset:ws:hint", rate="1/min", backend=traffik_backend)
    with pytest.raises(ConfigurationError) as raised:
        anyio.run(reset_client, throttle, "testclient")
    assert "path=" in str(raised.value) and "GET" not in str(raised.value)
    assert "no method" in str(raised.value)
