"""`traffik.fastapi.throttled` as a decorator on FastAPI endpoints and as a dependency."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, Response, WebSocket
from fastapi.exceptions import FastAPIError
from fastapi.params import Depends as DependsMarker
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.testclient import TestClient, WebSocketDenialResponse

from traffik import HTTPThrottle, InMemoryBackend, WebSocketThrottle
from traffik.exceptions import ConfigurationError
from traffik.fastapi import throttled

pytestmark = pytest.mark.anyio


@pytest.fixture
def backend() -> InMemoryBackend:
    return InMemoryBackend(namespace="fastapi-decorators")


def client_for(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def statuses(client: httpx.AsyncClient, path: str, n: int) -> list[int]:
    return [(await client.get(path)).status_code for _ in range(n)]


async def test_decorated_endpoint_needs_no_request_parameter(backend: InMemoryBackend) -> None:
    throttle = HTTPThrottle("search", rate="2/min", backend=backend)
    app = FastAPI()

    @app.get("/search")
    @throttled(throttle)
    async def search(q: str, limit: int = 10) -> dict[str, Any]:
        return {"q": q, "limit": limit}

    async with client_for(app) as client:
        first = await client.get("/search", params={"q": "cats"})
        assert (await client.get("/search")).status_code == 422  # validation still applies
        throttled_response = await client.get("/search", params={"q": "cats"})
    assert first.json() == {"q": "cats", "limit": 10}
    assert first.headers["ratelimit"] == '"search";r=1;t=60'
    # The invalid request was counted too: the throttle runs before validation.
    assert throttled_response.status_code == 429
    assert throttled_response.json() == {"detail": "Too many requests. Retry in 60 seconds."}
    assert throttled_response.headers["retry-after"] == "60"
    parameters = app.openapi()["paths"]["/search"]["get"]["parameters"]
    assert [p["name"] for p in parameters] == ["q", "limit"]


async def test_several_throttles_in_order_and_stacked_decorators(backend: InMemoryBackend) -> None:
    burst = HTTPThrottle("fa-burst", rate="1/min", backend=backend)
    sustained = HTTPThrottle("fa-sustained", rate="3/min", backend=backend)
    outer = HTTPThrottle("fa-outer", rate="10/min", backend=backend)
    app = FastAPI()

    @app.get("/combined")
    @throttled(burst, sustained)
    async def combined() -> str:
        return "ok"

    @app.get("/stacked")
    @throttled(outer)
    @throttled(sustained)
    async def stacked() -> str:
        return "ok"

    async with client_for(app) as client:
        assert await statuses(client, "/combined", 2) == [200, 429]
        await burst.disable()
        # The request `burst` stopped never reached `sustained`.
        assert await statuses(client, "/combined", 3) == [200, 200, 429]
        response = await client.get("/stacked")
    assert response.status_code == 200
    assert response.headers.get_list("ratelimit") == [
        '"fa-outer";r=9;t=60',
        '"fa-sustained";r=2;t=60',
    ]


async def test_sync_endpoints_and_own_request_and_response_parameters(
    backend: InMemoryBackend,
) -> None:
    throttle = HTTPThrottle("fa-sync", rate="1/min", backend=backend)
    app = FastAPI()

    @app.get("/sync")
    @throttled(throttle)
    def sync(request: Request, response: Response) -> dict[str, str]:
        response.headers["x-own"] = "kept"
        return {"path": request.url.path}

    async with client_for(app) as client:
        first = await client.get("/sync")
        assert await statuses(client, "/sync", 1) == [429]
    assert first.json() == {"path": "/sync"}
    assert first.headers["x-own"] == "kept"
    assert first.headers["ratelimit"] == '"fa-sync";r=0;t=60'


def failed(outcome: Any) -> bool:
    return bool(outcome.status_code >= 400)


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_charge_when_sees_the_returned_response_of_sync_and_async_endpoints(
    backend: InMemoryBackend, kind: str
) -> None:
    # A failed login answered with a returned Response counts, a success does not, whether
    # the endpoint is `def` or `async def`.
    throttle = HTTPThrottle(f"fa-login-{kind}", rate="2/min", backend=backend, charge_when=failed)
    app = FastAPI()

    def answer(password: str) -> Any:
        if password != "secret":
            return JSONResponse({"error": "wrong password"}, status_code=401)
        return {"token": "t"}

    if kind == "sync":

        @app.post("/login")
        @throttled(throttle)
        def login(password: str) -> Any:
            return answer(password)

    else:

        @app.post("/login")
        @throttled(throttle)
        async def login(password: str) -> Any:
            return answer(password)

    async with client_for(app) as client:
        good = [
            (await client.post("/login", params={"password": "secret"})).status_code
            for _ in range(3)
        ]
        bad = [
            (await client.post("/login", params={"password": "guess"})).status_code
            for _ in range(4)
        ]
    assert good == [200] * 3
    assert bad == [401, 401, 429, 429]


async def test_as_dependency_on_routes_and_routers(backend: InMemoryBackend) -> None:
    route_throttle = HTTPThrottle("fa-route", rate="1/min", backend=backend)
    router_throttle = HTTPThrottle("fa-router", rate="2/min", backend=backend)
    marker = throttled(route_throttle)
    assert isinstance(marker, DependsMarker)

    router = APIRouter(prefix="/api", dependencies=[throttled(router_throttle)])

    @router.get("/a")
    async def a() -> str:
        return "a"

    @router.get("/b", dependencies=[marker])
    async def b() -> str:
        return "b"

    app = FastAPI()
    app.include_router(router)
    async with client_for(app) as client:
        # A router throttle counts per route: /api/a and /api/b each have two.
        assert await statuses(client, "/api/a", 3) == [200, 200, 429]
        assert await statuses(client, "/api/b", 2) == [200, 429]


def test_websocket_endpoints_throttle_the_handshake(backend: InMemoryBackend) -> None:
    throttle = WebSocketThrottle("fa-ws", rate="1/min", backend=backend)
    app = FastAPI()

    @app.websocket("/ws")
    @throttled(throttle)
    async def chat(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("hi")
        await websocket.close()

    client = TestClient(app)
    with client.websocket_connect("/ws") as websocket:
        assert websocket.receive_text() == "hi"
    with pytest.raises(WebSocketDenialResponse) as denied, client.websocket_connect("/ws"):
        pass  # pragma: no cover
    assert denied.value.status_code == 429


async def test_generator_endpoints_stream(backend: InMemoryBackend) -> None:
    throttle = HTTPThrottle("fa-stream", rate="1/min", backend=backend)
    app = FastAPI()

    def numbers() -> Iterator[int]:
        yield from range(3)

    try:
        app.get("/numbers")(throttled(throttle)(numbers))
    except FastAPIError:
        pytest.skip(
            "this FastAPI release cannot serve generator endpoints (a newer FastAPI feature)"
        )

    async with client_for(app) as client:
        response = await client.get("/numbers")
        assert await statuses(client, "/numbers", 1) == [429]
    assert response.status_code == 200
    assert response.text.split() == ["0", "1", "2"]


async def test_a_generator_endpoint_failing_mid_stream_counts_as_it_started(
    backend: InMemoryBackend,
) -> None:
    throttle = HTTPThrottle("fa-stream-fails", rate="2/min", backend=backend, charge_when=failed)
    app = FastAPI()

    async def numbers() -> AsyncIterator[int]:
        yield 1
        raise RuntimeError("mid-stream")

    try:
        app.get("/numbers")(throttled(throttle)(numbers))
    except FastAPIError:
        pytest.skip(
            "this FastAPI release cannot serve generator endpoints (a newer FastAPI feature)"
        )

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        assert await statuses(client, "/numbers", 4) == [200] * 4


def test_bad_decorations_fail_at_decoration_time(backend: InMemoryBackend) -> None:
    http = HTTPThrottle("fa-http", rate="1/min", backend=backend)
    ws = WebSocketThrottle("fa-websocket", rate="1/min", backend=backend)
    with pytest.raises(ValueError, match=r"^At least one throttle"):
        throttled()
    with pytest.raises(ConfigurationError, match="HTTP and WebSocket throttles together"):
        throttled(http, ws)
    with pytest.raises(TypeError, match="takes HTTPThrottle or WebSocketThrottle"):
        throttled(Depends(http))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="decorates an endpoint"):
        throttled(http)(42)  # type: ignore[type-var]


@pytest.mark.parametrize("count", [1, 2])
def test_throttled_wrapped_in_depends_fails_as_the_route_is_defined(
    backend: InMemoryBackend, count: int
) -> None:
    """`throttled(...)` is a dependency already: `Depends(throttled(a, b))` would make FastAPI
    read the decorator's own parameter as a required query parameter (every request a 422,
    and no OpenAPI document), so defining such a route raises, naming the two ways."""
    pair = [HTTPThrottle(f"fa-depends-{n}", rate="5/min", backend=backend) for n in range(count)]
    app = FastAPI()
    with pytest.raises(ConfigurationError, match=r"dependencies=\[throttled\(") as raised:

        @app.get("/items", dependencies=[Depends(throttled(*pair))])
        async def items() -> dict[str, bool]:
            return {"ok": True}

    assert "not Depends(throttled(" in str(raised.value)
    assert "@throttled(" in str(raised.value)  # (the decorator, the other way)


def test_traffik12_import_path_and_the_direct_form(backend: InMemoryBackend) -> None:
    from traffik.decorators import throttled as traffik12_throttled

    assert traffik12_throttled is throttled  # traffik 1.2's `traffik.decorators.throttled`

    async def search(q: str = "") -> dict[str, str]:
        return {"q": q}

    app = FastAPI()
    limited = HTTPThrottle("direct-fastapi", rate="1/min", backend=backend)
    app.get("/search")(traffik12_throttled(limited, route=search))
    with TestClient(app) as client:
        assert client.get("/search?q=a").json() == {"q": "a"}
        assert client.get("/search?q=a").status_code == 429


async def test_responses_the_endpoint_returns_carry_the_headers(backend: InMemoryBackend) -> None:
    # FastAPI sends a returned `Response` as it is; the decorator adds the throttle's headers
    # to it (docs/guides/headers.md), once, and nothing else from the injected response.
    throttle = HTTPThrottle("fa-returned", rate="5/min", backend=backend)
    app = FastAPI()

    def own_cookie(response: Response) -> None:
        response.set_cookie("dependency", "not-for-a-returned-response")

    @app.get("/json", dependencies=[Depends(own_cookie)])
    @throttled(throttle)
    async def json() -> JSONResponse:
        return JSONResponse({"a": 1})

    @app.get("/stream")
    @throttled(throttle)
    async def stream() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            yield b"chunk"

        return StreamingResponse(chunks())

    @app.get("/sync")
    @throttled(throttle)
    def sync() -> PlainTextResponse:
        return PlainTextResponse("text")

    @app.get("/injected")
    @throttled(throttle)
    async def injected(response: Response) -> Response:
        response.status_code = 204
        return response

    async with client_for(app) as client:
        responses = {path: await client.get(path) for path in ("/json", "/stream", "/sync")}
        own = await client.get("/injected")
    for path, response in responses.items():
        assert response.status_code == 200, path
        assert response.headers["ratelimit-policy"] == '"fa-returned";q=5;w=60', path
    assert responses["/json"].headers["ratelimit"] == '"fa-returned";r=4;t=60'
    assert responses["/stream"].text == "chunk"
    assert "set-cookie" not in responses["/json"].headers
    assert own.status_code == 204
    assert own.headers.get_list("ratelimit") == ['"fa-returned";r=4;t=60']  # not twice


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_http_exceptions_the_endpoint_raises_carry_the_headers(
    backend: InMemoryBackend, kind: str
) -> None:
    throttle = HTTPThrottle(f"fa-raised-{kind}", rate="5/min", backend=backend, headers="both")
    app = FastAPI()

    def missing() -> None:
        raise HTTPException(404, "no such item", headers={"X-Own": "kept"})

    if kind == "sync":
        app.get("/items/{item_id}")(throttled(throttle)(lambda item_id: missing()))
    else:

        @app.get("/items/{item_id}")
        @throttled(throttle)
        async def item(item_id: int) -> None:
            missing()

    async with client_for(app) as client:
        response = await client.get("/items/1")
    assert response.status_code == 404
    assert response.json() == {"detail": "no such item"}
    assert response.headers["x-own"] == "kept"
    assert response.headers["ratelimit"] == f'"fa-raised-{kind}";r=4;t=60'
    assert response.headers["x-ratelimit-remaining"] == "4"


async def test_methods_of_class_based_views(backend: InMemoryBackend) -> None:
    class Items:
        def __init__(self, name: str) -> None:
            self.name = name

        @throttled(HTTPThrottle("fa-view", rate="1/min", backend=backend))
        async def get(self, q: str = "") -> dict[str, str]:
            return {"view": self.name, "q": q}

        @classmethod
        @throttled(HTTPThrottle("fa-view-class", rate="1/min", backend=backend))
        def kind(cls) -> str:
            return cls.__name__

    app = FastAPI()
    app.get("/items")(Items("shop").get)
    app.get("/kind")(Items.kind)

    async with client_for(app) as client:
        first = await client.get("/items", params={"q": "x"})
        assert await statuses(client, "/items", 1) == [429]
        kind = await client.get("/kind")
        assert await statuses(client, "/kind", 1) == [429]
    assert first.json() == {"view": "shop", "q": "x"}
    assert first.headers["ratelimit"] == '"fa-view";r=0;t=60'
    assert kind.json() == "Items"
    assert [p["name"] for p in app.openapi()["paths"]["/items"]["get"]["parameters"]] == ["q"]


async def test_dependency_overrides_disable_charge_by_outcome_too(backend: InMemoryBackend) -> None:
    # `app.dependency_overrides[throttle]` disables the throttle wherever it applies
    # (docs/guides/decorators.md); `Depends(throttle.charge_by_outcome)` kept counting.
    login = HTTPThrottle("fa-override-cbo", rate="1/min", backend=backend, charge_when=failed)
    app = FastAPI()

    @app.post("/login", dependencies=[Depends(login.charge_by_outcome)])
    async def sign_in() -> None:
        raise HTTPException(401, "wrong password")

    app.dependency_overrides[login] = lambda: None
    async with client_for(app) as client:
        assert [(await client.post("/login")).status_code for _ in range(3)] == [401] * 3
        app.dependency_overrides.clear()
        assert [(await client.post("/login")).status_code for _ in range(2)] == [401, 429]


async def test_dependency_overrides_leave_out_throttles_of_a_combined_dependency(
    backend: InMemoryBackend,
) -> None:
    # As `app.dependency_overrides[throttle]` disables `Depends(throttle)` in tests, it
    # leaves the throttle out of `throttled(a, b)` and of a throttle with `charge_when`.
    burst = HTTPThrottle("fa-over-burst", rate="1/min", backend=backend)
    hourly = HTTPThrottle("fa-over-hourly", rate="2/min", backend=backend)
    login = HTTPThrottle("fa-over-login", rate="1/min", backend=backend, charge_when=failed)
    app = FastAPI()

    @app.get("/search")
    @throttled(burst, hourly)
    async def search() -> str:
        return "ok"

    @app.post("/login", dependencies=[throttled(login)])
    async def sign_in() -> None:
        raise HTTPException(401, "wrong password")

    app.dependency_overrides[burst] = lambda: None
    app.dependency_overrides[login] = lambda: None
    async with client_for(app) as client:
        assert await statuses(client, "/search", 3) == [200, 200, 429]  # `hourly` still counts
        assert [(await client.post("/login")).status_code for _ in range(2)] == [401, 401]
        app.dependency_overrides.clear()
        assert [(await client.post("/login")).status_code for _ in range(2)] == [401, 429]


async def test_on_a_starlette_route_it_says_which_decorator_to_use() -> None:
    """traffik 1.2's `traffik.decorators.throttled` is this decorator, which FastAPI runs as a
    dependency: on a Starlette route nothing runs it, and the endpoint says so (a bare
    `KeyError` before)."""
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    throttle = HTTPThrottle("on-starlette", rate="2/min", backend=InMemoryBackend())

    @throttled(throttle)
    async def endpoint(request: Any) -> PlainTextResponse:
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/x", endpoint)])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        with pytest.raises(ConfigurationError, match=r"use traffik\.throttled"):
            await client.get("/x")


@pytest.mark.parametrize("way", ["decorator", "charge_by_outcome"])
async def test_charge_when_judges_a_request_validation_error_as_fastapi_answers_it(
    backend: InMemoryBackend, way: str
) -> None:
    # A malformed request never reaches the endpoint: FastAPI answers 422, and that is the
    # status `charge_when` judges (it was told 500: "count server failures" counted every
    # malformed request).
    seen: list[int] = []

    def server_failures(outcome: Any) -> bool:
        seen.append(outcome.status_code)
        return bool(outcome.status_code >= 500)

    throttle = HTTPThrottle(
        f"fa-422-{way}", rate="2/min", backend=backend, charge_when=server_failures
    )
    app = FastAPI()
    if way == "decorator":

        @app.get("/items")
        @throttled(throttle)
        async def decorated(n: int) -> dict[str, int]:
            return {"n": n}

    else:

        @app.get("/items", dependencies=[Depends(throttle.charge_by_outcome)])
        async def guarded(n: int) -> dict[str, int]:
            return {"n": n}

    async with client_for(app) as client:
        answered = [(await client.get("/items", params={"n": "abc"})).status_code for _ in range(4)]
    assert answered == [422] * 4
    assert seen == [422] * 4
