"""`traffik.throttled` (`traffik.decorators.starlette_throttled`) on Starlette endpoints."""

from __future__ import annotations

import functools
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.endpoints import HTTPEndpoint
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient, WebSocketDenialResponse
from starlette.websockets import WebSocket

import traffik
from traffik import HTTPThrottle, InMemoryBackend, WebSocketThrottle
from traffik.decorators import is_async_callable, starlette_throttled
from traffik.exceptions import ConfigurationError

throttled = starlette_throttled

pytestmark = pytest.mark.anyio


@pytest.fixture
def backend() -> InMemoryBackend:
    return InMemoryBackend(namespace="decorators")


def client_for(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def statuses(client: httpx.AsyncClient, path: str, n: int) -> list[int]:
    return [(await client.get(path)).status_code for _ in range(n)]


async def test_throttles_an_async_endpoint_and_adds_headers(backend: InMemoryBackend) -> None:
    throttle = HTTPThrottle("starlette-dec", rate="2/min", backend=backend)

    @throttled(throttle)
    async def homepage(request: Request) -> Response:
        return JSONResponse({"hello": "world"})

    assert homepage.__name__ == "homepage"
    async with client_for(Starlette(routes=[Route("/", homepage)])) as client:
        first = await client.get("/")
        assert await statuses(client, "/", 2) == [200, 429]
        throttled_response = await client.get("/")
    assert first.json() == {"hello": "world"}
    assert first.headers["ratelimit-policy"] == '"starlette-dec";q=2;w=60'
    assert first.headers["ratelimit"] == '"starlette-dec";r=1;t=60'
    # Plain Starlette answers HTTPExceptions in text.
    assert throttled_response.text == "Too many requests. Retry in 60 seconds."
    assert throttled_response.headers["retry-after"] == "60"


async def test_several_throttles_apply_in_order(backend: InMemoryBackend) -> None:
    burst = HTTPThrottle("dec-burst", rate="1/min", backend=backend, headers="legacy")
    sustained = HTTPThrottle("dec-sustained", rate="3/min", backend=backend)

    @throttled(burst, sustained)
    async def endpoint(request: Request) -> Response:
        return PlainTextResponse("ok")

    async with client_for(Starlette(routes=[Route("/", endpoint)])) as client:
        first = await client.get("/")
        assert await statuses(client, "/", 1) == [429]
        await burst.disable()
        # The request `burst` stopped never reached `sustained`.
        assert await statuses(client, "/", 3) == [200, 200, 429]
    assert first.headers["x-ratelimit-remaining"] == "0"
    assert first.headers["ratelimit"] == '"dec-sustained";r=2;t=60'


async def test_sync_endpoints_run_in_the_thread_pool(backend: InMemoryBackend) -> None:
    throttle = HTTPThrottle("dec-sync", rate="1/min", backend=backend)

    @throttled(throttle)
    def endpoint(request: Request) -> Response:
        return PlainTextResponse("sync")

    async with client_for(Starlette(routes=[Route("/", endpoint)])) as client:
        response = await client.get("/")
        assert await statuses(client, "/", 1) == [429]
    assert response.text == "sync"
    assert "ratelimit" in response.headers


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_charge_when_sees_the_returned_response_of_sync_and_async_endpoints(
    backend: InMemoryBackend, kind: str
) -> None:
    throttle = HTTPThrottle(
        f"dec-login-{kind}",
        rate="2/min",
        backend=backend,
        charge_when=lambda outcome: outcome.status_code >= 400,
    )

    def answer(request: Request) -> Response:
        if request.query_params.get("password") != "secret":
            return JSONResponse({"error": "wrong password"}, status_code=401)
        return JSONResponse({"token": "t"})

    if kind == "sync":

        @throttled(throttle)
        def login(request: Request) -> Response:
            return answer(request)

    else:

        @throttled(throttle)
        async def login(request: Request) -> Response:
            return answer(request)

    app = Starlette(routes=[Route("/login", login)])
    async with client_for(app) as client:
        good = [(await client.get("/login?password=secret")).status_code for _ in range(3)]
        bad = [(await client.get("/login?password=guess")).status_code for _ in range(4)]
    assert good == [200] * 3
    assert bad == [401, 401, 429, 429]


async def test_class_based_endpoints(backend: InMemoryBackend) -> None:
    throttle = HTTPThrottle("dec-class", rate="1/min", backend=backend)

    class Items(HTTPEndpoint):
        @throttled(throttle)
        async def get(self, request: Request) -> Response:
            return PlainTextResponse("items")

    async with client_for(Starlette(routes=[Route("/items", Items)])) as client:
        assert await statuses(client, "/items", 2) == [200, 429]


def test_websocket_endpoints_throttle_connection_attempts(backend: InMemoryBackend) -> None:
    throttle = WebSocketThrottle("dec-ws", rate="1/min", backend=backend)

    @throttled(throttle)
    async def chat(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("hi")
        await websocket.close()

    client = TestClient(Starlette(routes=[WebSocketRoute("/ws", chat)]))
    with client.websocket_connect("/ws") as websocket:
        assert websocket.receive_text() == "hi"
    with pytest.raises(WebSocketDenialResponse) as denied, client.websocket_connect("/ws"):
        pass  # pragma: no cover
    assert denied.value.status_code == 429


async def test_an_endpoint_called_without_a_connection_fails_clearly(
    backend: InMemoryBackend,
) -> None:
    @throttled(HTTPThrottle("dec-none", rate="1/min", backend=backend))
    async def endpoint(value: int) -> int:
        return value

    with pytest.raises(TypeError, match="without a Request or WebSocket"):
        await endpoint(3)


def test_bad_decorations_fail_at_decoration_time(backend: InMemoryBackend) -> None:
    http = HTTPThrottle("dec-http", rate="1/min", backend=backend)
    ws = WebSocketThrottle("dec-websocket", rate="1/min", backend=backend)
    with pytest.raises(ValueError, match=r"^At least one throttle"):
        throttled()
    with pytest.raises(ConfigurationError, match="HTTP and WebSocket throttles together"):
        throttled(http, ws)
    with pytest.raises(TypeError, match="takes HTTPThrottle or WebSocketThrottle"):
        throttled("api")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="decorates an endpoint"):
        throttled(http)(42)  # type: ignore[type-var]


def test_top_level_throttled_is_the_starlette_decorator() -> None:
    assert traffik.throttled is throttled


def test_is_async_callable() -> None:
    async def coroutine_function() -> None: ...

    class AsyncCallable:
        async def __call__(self) -> None: ...

    assert is_async_callable(coroutine_function)
    assert is_async_callable(functools.partial(coroutine_function))
    assert is_async_callable(AsyncCallable())
    assert not is_async_callable(lambda: None)


async def test_http_exceptions_the_endpoint_raises_carry_the_headers(
    backend: InMemoryBackend,
) -> None:
    throttle = HTTPThrottle("starlette-raised", rate="5/min", backend=backend)

    @throttled(throttle)
    async def item(request: Request) -> Response:
        raise HTTPException(404, "no such item", headers={"X-Own": "kept"})

    async with client_for(Starlette(routes=[Route("/items/{id}", item)])) as client:
        response = await client.get("/items/1")
    assert response.status_code == 404
    assert response.text == "no such item"
    assert response.headers["x-own"] == "kept"
    assert response.headers["ratelimit"] == '"starlette-raised";r=4;t=60'
