"""A throttle of the wrong kind for its route (a `WebSocketThrottle` on an HTTP route, an
`HTTPThrottle` on a WebSocket route): a `ConfigurationError` saying what to use instead, at
the first request, not FastAPI's "missing 1 required positional argument"."""

from __future__ import annotations

import inspect
import logging
from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket

from traffik import HTTPThrottle, InMemoryBackend, WebSocketThrottle
from traffik.exceptions import ConfigurationError
from traffik.fastapi import throttled

pytestmark = pytest.mark.anyio


def _client(app: FastAPI, raise_app_exceptions: bool = True) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions)
    return httpx.AsyncClient(transport=transport, base_url="http://t")


async def test_a_websocket_throttle_on_an_http_route(caplog: pytest.LogCaptureFixture) -> None:
    chat = WebSocketThrottle("chat", rate="5/min", backend=InMemoryBackend())
    app = FastAPI()

    @app.get("/items", dependencies=[Depends(chat)])
    async def items() -> dict[str, bool]:
        return {"ok": True}

    with caplog.at_level(logging.ERROR, logger="traffik"):
        async with _client(app) as http:
            with pytest.raises(ConfigurationError) as raised:
                await http.get("/items")
    message = str(raised.value)
    assert message.startswith("WebSocketThrottle('chat'")
    assert "HTTP route" in message and "use an HTTPThrottle there" in message
    assert message in caplog.text
    async with _client(app, raise_app_exceptions=False) as http:
        assert (await http.get("/items")).status_code == 500


async def test_an_http_throttle_on_a_websocket_route(caplog: pytest.LogCaptureFixture) -> None:
    api = HTTPThrottle("api", rate="5/min", backend=InMemoryBackend())
    app = FastAPI()

    @app.websocket("/chat")
    async def chat(websocket: WebSocket = Depends(api)) -> None:
        await websocket.accept()
        await websocket.close()

    caplog.set_level(logging.ERROR, logger="traffik")
    with pytest.raises(ConfigurationError) as raised, TestClient(app).websocket_connect("/chat"):
        pass  # pragma: no cover (the handshake fails)
    message = str(raised.value)
    assert message.startswith("HTTPThrottle('api'")
    assert "WebSocket route" in message and "use a WebSocketThrottle there" in message
    assert message in caplog.text


def test_an_app_wide_http_throttle_on_a_websocket_route_says_where_to_put_it() -> None:
    # `FastAPI(dependencies=[Depends(throttle)])` (slowapi's `default_limits`, ported) runs on
    # the app's WebSocket routes too, where FastAPI gives it no Request: the error says
    # where an HTTP throttle for every HTTP route goes instead.
    api = HTTPThrottle("api", rate="5/min", backend=InMemoryBackend())
    app = FastAPI(dependencies=[Depends(api)])

    @app.websocket("/chat")
    async def chat(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.close()

    with pytest.raises(ConfigurationError) as raised, TestClient(app).websocket_connect("/chat"):
        pass  # pragma: no cover (the handshake fails)
    message = str(raised.value)
    assert "FastAPI(dependencies=...)" in message and "APIRouter(dependencies=...)" in message
    assert "ThrottleMiddleware" in message


async def test_the_decorators_name_the_route() -> None:
    chat = WebSocketThrottle("chat", rate="5/min", backend=InMemoryBackend())
    api = HTTPThrottle("api", rate="5/min", backend=InMemoryBackend())
    app = FastAPI()

    @app.get("/items/{item_id}")
    @throttled(chat)
    async def item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    @app.websocket("/chat")
    @throttled(api)
    async def talk(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.close()

    async with _client(app) as http:
        with pytest.raises(ConfigurationError) as raised:
            await http.get("/items/3")
    assert str(raised.value).startswith(
        "WebSocketThrottle('chat', rate='5/min') is applied to the HTTP route "
        "GET /items/{item_id}: use an HTTPThrottle there"
    )
    with pytest.raises(ConfigurationError) as raised, TestClient(app).websocket_connect("/chat"):
        pass  # pragma: no cover (the handshake fails)
    assert str(raised.value).startswith(
        "HTTPThrottle('api', rate='5/min') is applied to the WebSocket route /chat: "
        "use a WebSocketThrottle there"
    )


async def test_the_right_kind_still_works_and_the_schema_is_unchanged() -> None:
    api = HTTPThrottle("api", rate="1/min", backend=InMemoryBackend())
    chat = WebSocketThrottle("chat", rate="1/min", backend=InMemoryBackend())
    app = FastAPI()

    @app.get("/items")
    async def items(q: int = 0, request: Request = Depends(api)) -> dict[str, int]:
        return {"q": q}

    @app.get("/decorated")
    @throttled(api)
    async def decorated() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/mixed", dependencies=[Depends(chat)])  # (its schema only: never requested)
    async def mixed() -> dict[str, bool]:
        return {"ok": True}

    @app.websocket("/chat")
    async def talk(websocket: WebSocket = Depends(chat)) -> None:
        await websocket.accept()
        await websocket.send_text("hi")
        await websocket.close()

    paths = app.openapi()["paths"]
    assert [p["name"] for p in paths["/items"]["get"]["parameters"]] == ["q"]
    assert "parameters" not in paths["/decorated"]["get"]
    assert "parameters" not in paths["/mixed"]["get"]
    async with _client(app) as http:
        assert [(await http.get("/items?q=2")).status_code for _ in range(2)] == [200, 429]
    with TestClient(app).websocket_connect("/chat") as websocket:
        assert websocket.receive_text() == "hi"
    request = Request({"type": "http", "method": "GET", "path": "/x", "headers": []})
    assert await HTTPThrottle("direct", rate="1/min", backend=InMemoryBackend())(request) is request


@pytest.mark.parametrize(
    ("cls", "names", "kind"),
    [
        (HTTPThrottle, ["connection", "response"], Request),
        (WebSocketThrottle, ["connection"], WebSocket),
    ],
)
def test_the_dependency_signature_is_the_spec(cls: Any, names: list[str], kind: type) -> None:
    """One positional-or-keyword `connection` annotated with the connection type (and an
    HTTP throttle's keyword-only `response`), returning the connection type (spec 1.5)."""
    signature = inspect.signature(cls("sig", rate="1/min"))
    assert list(signature.parameters) == names
    connection = signature.parameters["connection"]
    assert connection.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    assert connection.annotation is kind and signature.return_annotation is kind
    if "response" in names:
        response = signature.parameters["response"]
        assert response.kind is inspect.Parameter.KEYWORD_ONLY and response.annotation is Response


async def test_a_hit_given_no_connection_says_so(caplog: pytest.LogCaptureFixture) -> None:
    api = HTTPThrottle("api", rate="5/min", backend=InMemoryBackend())
    no_connection = r"got no connection.*throttle\.hit\(conn"
    with (
        caplog.at_level(logging.ERROR, logger="traffik"),
        pytest.raises(ConfigurationError, match=no_connection),
    ):
        await api.hit()
    assert "HTTPThrottle('api'" in caplog.text


async def test_a_middleware_throttle_of_the_wrong_kind_says_so() -> None:
    from traffik.middleware import MiddlewareThrottle

    chat = MiddlewareThrottle(WebSocketThrottle("chat:mw", rate="5/min", backend=InMemoryBackend()))
    app = FastAPI()

    @app.get("/items", dependencies=[Depends(chat)])
    async def items() -> dict[str, bool]:
        return {"ok": True}

    async with _client(app) as http:
        with pytest.raises(ConfigurationError, match="use an HTTPThrottle there"):
            await http.get("/items")


async def test_charge_by_outcome_on_a_websocket_route_says_so() -> None:
    api = HTTPThrottle(
        "api:charged", rate="5/min", backend=InMemoryBackend(), charge_when=lambda o: True
    )
    app = FastAPI()

    @app.websocket("/chat", dependencies=[Depends(api.charge_by_outcome)])
    async def chat(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.close()

    client = TestClient(app)
    with (
        pytest.raises(ConfigurationError, match="use a WebSocketThrottle there"),
        client.websocket_connect("/chat"),
    ):
        pass


# -- a hit given a connection of the other kind --------------------------------------------


def _endpoints(throttle: Any, quota: bool = False) -> Starlette:
    """An app whose WebSocket endpoint (`/ws`) and HTTP endpoint (`/page`) each hit
    `throttle` with their connection (as one quota context's hit with `quota`) and answer
    what happened."""

    async def hit(connection: Any) -> str:
        try:
            if quota:
                async with throttle.quota(connection) as queued:
                    queued(cost=1)
            else:
                await throttle.hit(connection)
        except Exception as exc:  # (what the endpoint met, to assert on)
            return f"{type(exc).__name__}: {exc}"
        return "admitted"

    async def socket(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text(await hit(websocket))
        await websocket.close()

    async def page(request: Request) -> PlainTextResponse:
        return PlainTextResponse(await hit(request))

    return Starlette(routes=[WebSocketRoute("/ws", socket), Route("/page", page)])


@pytest.mark.parametrize("quota", [False, True], ids=["hit", "quota"])
def test_an_http_throttle_hit_with_a_websocket_says_so(
    quota: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """`await api.hit(websocket)` in a WebSocket endpoint counted the socket as a request
    and, past the limit, raised a 429 `HTTPException` on an accepted socket."""
    api = HTTPThrottle("api:ws", rate="1/min", backend=InMemoryBackend())
    client = TestClient(_endpoints(api, quota))
    caplog.set_level(logging.ERROR, logger="traffik")
    expected = (
        "ConfigurationError: HTTPThrottle('api:ws', rate='1/min') is applied to the WebSocket "
        "route /ws: use a WebSocketThrottle there"
    )
    for _ in range(2):
        with client.websocket_connect("/ws") as websocket:
            assert websocket.receive_text() == expected
    assert expected.split(": ", 1)[1] in caplog.text
    assert client.get("/page").text == "admitted"  # (nothing was counted)


@pytest.mark.parametrize("quota", [False, True], ids=["hit", "quota"])
def test_a_websocket_throttle_hit_with_a_request_says_so(
    quota: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """`await chat.hit(request)` in an HTTP endpoint counted the request as a socket and,
    past the limit, answered it as a refused message."""
    chat = WebSocketThrottle("chat:page", rate="1/min", backend=InMemoryBackend())
    client = TestClient(_endpoints(chat, quota))
    caplog.set_level(logging.ERROR, logger="traffik")
    expected = (
        "ConfigurationError: WebSocketThrottle('chat:page', rate='1/min') is applied to the "
        "HTTP route GET /page: use an HTTPThrottle there"
    )
    assert [client.get("/page").text for _ in range(2)] == [expected] * 2
    assert expected.split(": ", 1)[1] in caplog.text
    with client.websocket_connect("/ws") as websocket:
        assert websocket.receive_text() == "admitted"  # (nothing was counted)
