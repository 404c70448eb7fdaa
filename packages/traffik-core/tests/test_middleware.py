"""`ThrottleMiddleware` and `MiddlewareThrottle` in real Starlette and FastAPI apps, and `Rule` matching."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
from fastapi import Depends, FastAPI
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient, WebSocketDenialResponse
from starlette.websockets import WebSocket

from traffik import HTTPThrottle, InMemoryBackend, WebSocketThrottle, is_throttled
from traffik.exceptions import BackendConnectionError, ConfigurationError, ConnectionThrottled
from traffik.middleware import MiddlewareThrottle, ThrottleMiddleware
from traffik.rules import Bypass, Rule, compile_path, glob

pytestmark = pytest.mark.anyio

METHODS = ["GET", "POST", "PUT", "DELETE", "OPTIONS"]


class DownBackend(InMemoryBackend):
    """Fault injection: every storage operation fails as if the store were unreachable."""

    async def ensure(self) -> None:
        raise BackendConnectionError("store down")


@pytest.fixture
def backend() -> InMemoryBackend:
    return InMemoryBackend(namespace="middleware")


async def ok(request: Request) -> Response:
    return JSONResponse({"path": request.url.path, "throttled": is_throttled(request)})


async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text("hello")
    await websocket.close()


def starlette_app(*throttles: Any, app_options: Any = None, **options: Any) -> Starlette:
    routes = [WebSocketRoute("/ws", echo), Route("/{path:path}", ok, methods=METHODS)]
    middleware = [Middleware(ThrottleMiddleware, middleware_throttles=list(throttles), **options)]
    return Starlette(routes=routes, middleware=middleware, **(app_options or {}))


def fastapi_app(*throttles: Any, **options: Any) -> FastAPI:
    app = FastAPI()
    app.add_middleware(ThrottleMiddleware, middleware_throttles=list(throttles), **options)

    @app.api_route("/{path:path}", methods=METHODS)
    async def anything(path: str) -> dict[str, str]:
        return {"path": path}

    return app


def client_for(app: Any, **transport: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, **transport), base_url="http://test"
    )


async def statuses(
    client: httpx.AsyncClient, path: str, n: int, method: str = "GET", **kwargs: Any
) -> list[int]:
    return [(await client.request(method, path, **kwargs)).status_code for _ in range(n)]


# -- rules ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("/api/*", "/api/users", True),
        ("/api/*", "/api/users/1", False),
        ("/api/*", "/api/", False),
        ("/api/*", "/api", False),
        ("/api/**", "/api", True),
        ("/api/**", "/api/users", True),
        ("/api/**", "/api/users/1", True),
        ("/api/**", "/apis", False),
        ("/api/**/edit", "/api/edit", True),
        ("/api/**/edit", "/api/users/1/edit", True),
        ("/api/**/edit", "/api/users/1/view", False),
        ("/files/*.txt", "/files/a.txt", True),
        ("/files/*.txt", "/files/a/b.txt", False),
        ("/health", "/health", True),
        ("/health", "/healthz", False),
        ("/health", "/health/", False),
        ("/v1.0", "/v1x0", False),
        ("/api/(x)", "/api/(x)", True),
    ],
)
def test_path_globs_are_anchored_at_both_ends(pattern: str, path: str, matches: bool) -> None:
    assert (
        Rule(path=glob(pattern)).matches_scope({"type": "http", "method": "GET", "path": path})
        is matches
    )


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("/api/", "/api/data", True),
        ("/api/", "/api", False),
        ("/health", "/health", True),
        ("/health", "/healthz", True),
        ("/health", "/status/health", False),
        ("/health$", "/healthz", False),
        ("/api/*", "/api/users", True),
        ("/api/*", "/api/users/1", True),
        ("/api/*", "/api/", False),
        ("/api/**", "/api/", True),
        ("/api/**", "/api", False),
        ("/v1.0", "/v1x0", True),
        (r"/v1\.0", "/v1x0", False),
    ],
)
def test_path_strings_are_regexes_matched_from_the_start(
    pattern: str, path: str, matches: bool
) -> None:
    # traffik 1.2's meaning: `.match`, with `**` as `.*` and `*` as one segment.
    assert (
        Rule(path=pattern).matches_scope({"type": "http", "method": "GET", "path": path}) is matches
    )


def test_a_compiled_pattern_is_used_as_is() -> None:
    pattern = re.compile(r"/users/\d+")
    assert compile_path(pattern) is pattern
    rule = Rule(path=pattern)
    assert rule.matches_scope({"type": "http", "path": "/users/12/posts"})
    assert not rule.matches_scope({"type": "http", "path": "/users/me"})


def test_methods_match_case_insensitively_and_not_for_websockets() -> None:
    rule = Rule(methods=["post", "Put"])
    assert rule.matches_scope({"type": "http", "method": "POST", "path": "/"})
    assert not rule.matches_scope({"type": "http", "method": "GET", "path": "/"})
    assert rule.matches_scope({"type": "websocket", "path": "/"})
    assert Rule(methods="GET").methods == frozenset({"GET", "get"})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"path": ""}, "not a path pattern"),
        ({"path": 3}, "not a path pattern"),
        ({"path": "/items/("}, "not a valid regular expression"),
        ({"methods": []}, "matches nothing"),
        ({"predicate": "yes"}, "not callable"),
    ],
)
def test_bad_rules_fail_at_construction(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Rule(**kwargs)


# -- which requests a throttle counts ------------------------------------------------------


async def test_path_throttle_counts_matching_paths_in_one_budget(backend: InMemoryBackend) -> None:
    throttle = HTTPThrottle("api", rate="2/min", backend=backend)
    app = starlette_app(MiddlewareThrottle(throttle, path=glob("/api/**")))
    async with client_for(app) as client:
        assert await statuses(client, "/other", 4) == [200] * 4
        # /api/items/1 and /api/items/2 share the budget: varying the path does not escape it.
        assert [(await client.get(f"/api/items/{i}")).status_code for i in range(3)] == [
            200,
            200,
            429,
        ]
        assert await statuses(client, "/api", 1) == [429]


async def test_single_star_matches_one_segment(backend: InMemoryBackend) -> None:
    throttle = HTTPThrottle("star", rate="1/min", backend=backend)
    app = starlette_app(MiddlewareThrottle(throttle, path=glob("/api/*")))
    async with client_for(app) as client:
        assert await statuses(client, "/api/users/1", 3) == [200] * 3
        assert await statuses(client, "/api/users", 2) == [200, 429]


async def test_one_throttle_under_two_patterns_counts_each_separately(
    backend: InMemoryBackend,
) -> None:
    throttle = HTTPThrottle("split", rate="1/min", backend=backend)
    app = starlette_app(
        MiddlewareThrottle(throttle, path="/a/**"), MiddlewareThrottle(throttle, path="/b/**")
    )
    async with client_for(app) as client:
        assert await statuses(client, "/a/1", 2) == [200, 429]
        assert await statuses(client, "/b/1", 2) == [200, 429]


async def test_method_throttle_counts_only_those_methods(backend: InMemoryBackend) -> None:
    throttle = HTTPThrottle("writes", rate="1/min", backend=backend)
    app = starlette_app(MiddlewareThrottle(throttle, methods=["POST", "PUT"]))
    async with client_for(app) as client:
        assert await statuses(client, "/items", 3) == [200] * 3
        assert await statuses(client, "/items", 2, method="POST") == [200, 429]
        assert await statuses(client, "/items", 2, method="PUT") == [200, 429]


async def test_plain_throttles_apply_to_every_request_in_order(backend: InMemoryBackend) -> None:
    burst = HTTPThrottle("burst", rate="1/min", backend=backend)
    sustained = HTTPThrottle("sustained", rate="5/min", backend=backend)
    async with client_for(starlette_app(burst, sustained)) as client:
        assert await statuses(client, "/x", 2) == [200, 429]
        # The request `burst` throttled never reached `sustained`: four units are left there.
        await burst.disable()
        assert await statuses(client, "/x", 5) == [200, 200, 200, 200, 429]


async def test_exemptions(backend: InMemoryBackend) -> None:
    throttle = HTTPThrottle("exempt", rate="1/min", backend=backend)

    async def internal(request: Request) -> bool:
        return request.headers.get("x-internal") == "yes"

    guarded = MiddlewareThrottle(
        throttle,
        path=glob("/api/**"),
        exempt=[glob("/api/health"), Rule(methods="OPTIONS"), Bypass(predicate=internal)],
    )
    app = starlette_app(guarded, exempt=["/api/docs/**"])
    async with client_for(app) as client:
        assert await statuses(client, "/api/health", 3) == [200] * 3
        assert await statuses(client, "/api/docs/openapi.json", 3) == [200] * 3
        assert await statuses(client, "/api/items", 3, method="OPTIONS") == [200] * 3
        assert await statuses(client, "/api/items", 3, headers={"x-internal": "yes"}) == [200] * 3
        assert await statuses(client, "/api/items", 2) == [200, 429]
        assert await statuses(client, "/api/health/deep", 1) == [429]


async def test_predicates_sync_or_async_with_or_without_context(backend: InMemoryBackend) -> None:
    def anonymous(request: Request) -> bool:
        return "authorization" not in request.headers

    async def tier_is_free(request: Request, context: dict[str, Any]) -> bool:
        return request.headers.get("x-tier", context["default_tier"]) == "free"

    anon = HTTPThrottle("anon", rate="1/min", backend=backend)
    free = HTTPThrottle("free", rate="2/min", backend=backend)
    app = starlette_app(
        MiddlewareThrottle(anon, predicate=anonymous),
        MiddlewareThrottle(free, predicate=tier_is_free),
        context={"default_tier": "free"},
    )
    async with client_for(app) as client:
        assert await statuses(client, "/", 2) == [200, 429]
        paid = {"authorization": "Bearer t", "x-tier": "paid"}
        assert await statuses(client, "/", 3, headers=paid) == [200] * 3
        # The first anonymous request, of the default free tier, counted on `free` too.
        assert await statuses(client, "/", 2, headers={"authorization": "Bearer t"}) == [200, 429]


async def test_a_failing_predicate_applies_the_throttle_and_is_logged(
    backend: InMemoryBackend, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(request: Request) -> bool:
        raise RuntimeError("predicate bug")

    throttle = HTTPThrottle("broken-rule", rate="1/min", backend=backend)
    app = starlette_app(
        MiddlewareThrottle(throttle, predicate=broken, exempt=[Rule(predicate=broken)])
    )
    with caplog.at_level(logging.ERROR, logger="traffik"):
        async with client_for(app) as client:
            assert await statuses(client, "/", 2) == [200, 429]
    assert "predicate bug" in caplog.text


async def test_cost_and_context_of_a_middleware_throttle(backend: InMemoryBackend) -> None:
    throttle = HTTPThrottle("costly", rate="3/min", backend=backend)
    app = starlette_app(
        MiddlewareThrottle(throttle, cost=2, context={"detail": "API busy"}),
        context={"detail": "busy"},
    )
    async with client_for(app) as client:
        assert await statuses(client, "/", 1) == [200]
        response = await client.get("/")
    assert response.status_code == 429
    assert response.text == "API busy"


async def test_skip_handler_lets_throttled_requests_reach_the_app(backend: InMemoryBackend) -> None:
    throttle = HTTPThrottle("soft", rate="1/min", backend=backend)
    async with client_for(starlette_app(throttle, skip_handler=True)) as client:
        first, second = await client.get("/"), await client.get("/")
    assert (first.status_code, first.json()["throttled"]) == (200, False)
    assert (second.status_code, second.json()["throttled"]) == (200, True)


# -- responses -------------------------------------------------------------------------------


async def test_headers_on_allowed_responses_and_the_default_429(backend: InMemoryBackend) -> None:
    throttle = HTTPThrottle("hdr", rate="2/min", backend=backend, headers="both")
    async with client_for(starlette_app(throttle)) as client:
        first, second, third = [await client.get("/") for _ in range(3)]
    assert first.status_code == 200
    assert first.headers["ratelimit-policy"] == '"hdr";q=2;w=60'
    assert first.headers["ratelimit"] == '"hdr";r=1;t=60'
    assert (first.headers["x-ratelimit-limit"], first.headers["x-ratelimit-remaining"]) == (
        "2",
        "1",
    )
    assert second.headers["x-ratelimit-remaining"] == "0"
    assert third.status_code == 429
    assert third.headers["content-type"] == "text/plain; charset=utf-8"  # as Starlette answers
    assert third.text == "Too many requests. Retry in 60 seconds."
    assert third.headers["retry-after"] == "60"
    assert third.headers["ratelimit"] == '"hdr";r=0;t=60'
    assert third.headers["x-ratelimit-remaining"] == "0"


async def test_a_starlette_app_answers_alike_from_the_middleware_and_a_route(
    backend: InMemoryBackend,
) -> None:
    # traffik 1.2 (spec/integration.md 4.3): plain Starlette answers the detail as text.
    in_route = HTTPThrottle("in-route", rate="1/min", backend=backend)

    async def endpoint(request: Request) -> Response:
        await in_route.hit(request)
        return PlainTextResponse("ok")

    guarded = HTTPThrottle("in-middleware", rate="1/min", backend=backend)
    app = Starlette(
        routes=[Route("/route", endpoint), Route("/mw", ok)],
        middleware=[
            Middleware(
                ThrottleMiddleware, middleware_throttles=[MiddlewareThrottle(guarded, path="/mw")]
            )
        ],
    )
    async with client_for(app) as client:
        answers = []
        for path in ("/route", "/mw"):
            await client.get(path)
            answers.append(await client.get(path))
    for answer in answers:
        assert answer.status_code == 429 and answer.headers["retry-after"] == "60"
        assert answer.headers["content-type"] == "text/plain; charset=utf-8"
        assert answer.text == "Too many requests. Retry in 60 seconds."


async def test_a_handler_answering_none_leaves_the_request_to_the_servers_500(
    backend: InMemoryBackend,
) -> None:
    async def no_answer(request: Request, exc: Exception) -> None:
        return None

    throttle = HTTPThrottle("no-answer", rate="1/min", backend=backend)
    app = starlette_app(throttle, app_options={"exception_handlers": {429: no_answer}})
    async with client_for(app, raise_app_exceptions=False) as client:
        assert await statuses(client, "/", 2) == [200, 500]


async def test_no_headers_without_a_header_style(backend: InMemoryBackend) -> None:
    throttle = HTTPThrottle("quiet", rate="2/min", backend=backend, headers=None)
    async with client_for(starlette_app(throttle)) as client:
        response = await client.get("/")
    assert not [name for name in response.headers if "ratelimit" in name]


async def test_fastapi_apps_answer_with_their_handler(backend: InMemoryBackend) -> None:
    throttle = HTTPThrottle("fastapi-mw", rate="1/min", backend=backend)
    async with client_for(fastapi_app(MiddlewareThrottle(throttle, path="/api/**"))) as client:
        allowed = await client.get("/api/items")
        throttled = await client.get("/api/items")
    assert allowed.status_code == 200 and allowed.headers["ratelimit"] == '"fastapi-mw";r=0;t=60'
    assert throttled.status_code == 429
    assert throttled.json() == {"detail": "Too many requests. Retry in 60 seconds."}
    assert throttled.headers["retry-after"] == "60"


async def test_app_exception_handlers_take_over(backend: InMemoryBackend) -> None:
    def by_class(request: Request, exc: Exception) -> Response:  # sync: runs in the thread pool
        assert isinstance(exc, ConnectionThrottled)
        return PlainTextResponse(
            f"slow down ({exc.wait_period}s)", status_code=429, headers=exc.headers
        )

    async def by_status(request: Request, exc: Exception) -> Response:
        return PlainTextResponse("status handler", status_code=429)

    throttle = HTTPThrottle("handled", rate="1/min", backend=backend)
    app = starlette_app(
        throttle, app_options={"exception_handlers": {ConnectionThrottled: by_class}}
    )
    async with client_for(app) as client:
        await client.get("/")
        response = await client.get("/")
    assert (response.status_code, response.text) == (429, "slow down (60s)")
    assert response.headers["retry-after"] == "60"

    app = fastapi_app(HTTPThrottle("handled-2", rate="1/min", backend=backend))
    app.add_exception_handler(429, by_status)
    async with client_for(app) as client:
        await client.get("/")
        response = await client.get("/")
    assert (response.status_code, response.text) == (429, "status handler")


async def test_exception_handler_getter_comes_first(backend: InMemoryBackend) -> None:
    async def teapot(request: Request, exc: Exception) -> Response:
        return PlainTextResponse("teapot", status_code=418)

    throttle = HTTPThrottle("getter", rate="1/min", backend=backend)
    app = fastapi_app(throttle, exception_handler_getter=lambda exc: teapot)
    async with client_for(app) as client:
        assert await statuses(client, "/", 2) == [200, 418]


@pytest.mark.parametrize("make_app", [starlette_app, fastapi_app])
@pytest.mark.parametrize(
    ("on_error", "status"), [("throttle", 429), ("allow", 200), ("raise", 500)]
)
async def test_a_failing_backend_follows_on_error(
    make_app: Any, on_error: str, status: int
) -> None:
    throttle = HTTPThrottle(
        "down", rate="5/min", backend=DownBackend(namespace="down"), on_error=on_error
    )
    async with client_for(make_app(throttle), raise_app_exceptions=False) as client:
        response = await client.get("/")
    assert response.status_code == status
    assert "Traceback" not in response.text and "store down" not in response.text
    if status == 429:
        assert response.headers["retry-after"] == "1"
    if status == 500:
        assert response.text == "Internal Server Error"


async def test_a_throttle_without_backend_uses_the_middlewares(backend: InMemoryBackend) -> None:
    throttle = HTTPThrottle("mw-backend", rate="1/min")
    async with client_for(starlette_app(throttle, backend=backend)) as client:
        assert await statuses(client, "/", 2) == [200, 429]
    assert throttle.backend is None  # resolved per connection, never cached on the throttle


async def test_a_throttle_without_backend_uses_the_lifespan_backend(
    backend: InMemoryBackend,
) -> None:
    throttle = HTTPThrottle("lifespan-backend", rate="1/min")
    app = Starlette(
        routes=[Route("/", ok)],
        middleware=[Middleware(ThrottleMiddleware, middleware_throttles=[throttle])],
        lifespan=backend.lifespan,
    )
    with TestClient(app) as client:
        assert [client.get("/").status_code for _ in range(2)] == [200, 429]
    assert throttle.backend is None  # resolved per connection, never cached on the throttle


# -- charging by outcome and refunds --------------------------------------------------------


def failed(outcome: Any) -> bool:
    return bool(outcome.status_code >= 400)


def login_app(*throttles: Any) -> Starlette:
    async def login(request: Request) -> Response:
        if request.query_params.get("password") != "secret":
            return JSONResponse({"error": "wrong password"}, status_code=401)
        return JSONResponse({"token": "t"})

    middleware = [Middleware(ThrottleMiddleware, middleware_throttles=list(throttles))]
    return Starlette(routes=[Route("/login", login, methods=["POST"])], middleware=middleware)


@pytest.mark.parametrize("path", [None, glob("/**"), "/log"])
async def test_charge_when_gives_back_the_charge_taken_under_the_pattern(
    backend: InMemoryBackend, path: Any
) -> None:
    # The middleware charges under its pattern (`POST:/**`); routing then sets the real
    # route (`POST:/login`): settling must give back the charge where it was taken.
    throttle = HTTPThrottle("mw-login", rate="2/min", backend=backend, charge_when=failed)
    app = login_app(MiddlewareThrottle(throttle, path=path))
    async with client_for(app) as client:
        good = await statuses(client, "/login", 4, "POST", params={"password": "secret"})
        bad = await statuses(client, "/login", 3, "POST", params={"password": "guess"})
    assert good == [200] * 4  # successes are not counted
    assert bad == [401, 401, 429]


async def test_several_middleware_throttles_settle_each_on_its_own_bucket(
    backend: InMemoryBackend,
) -> None:
    logins = HTTPThrottle("mw-login-2", rate="2/min", backend=backend, charge_when=failed)
    everything = HTTPThrottle("mw-all", rate="100/min", backend=backend)
    app = login_app(MiddlewareThrottle(logins, path=glob("/log*")), everything)
    async with client_for(app) as client:
        good = await statuses(client, "/login", 4, "POST", params={"password": "secret"})
        bad = await statuses(client, "/login", 3, "POST", params={"password": "guess"})
    assert good == [200] * 4
    assert bad == [401, 401, 429]


async def test_refund_in_an_endpoint_gives_back_the_middlewares_charge(
    backend: InMemoryBackend,
) -> None:
    throttle = HTTPThrottle("mw-refund", rate="2/min", backend=backend)

    async def cached(request: Request) -> Response:
        if request.query_params.get("cached"):
            await throttle.refund(request)  # the charge the middleware took, on its bucket
        return PlainTextResponse("ok")

    app = Starlette(
        routes=[Route("/reports/{name}", cached)],
        middleware=[Middleware(ThrottleMiddleware, middleware_throttles=[throttle])],
    )
    async with client_for(app) as client:
        free = await statuses(client, "/reports/monthly", 4, params={"cached": "1"})
        paid = await statuses(client, "/reports/yearly", 3)
    assert free == [200] * 4
    assert paid == [200, 200, 429]


async def test_refund_gives_back_a_noted_charge_once(backend: InMemoryBackend) -> None:
    # An endpoint refunds a charge that its outcome (200) would give back too: the charge
    # is given back once, not by the endpoint and again when the request is settled.
    throttle = HTTPThrottle("mw-refund-once", rate="2/min", backend=backend, charge_when=failed)

    async def endpoint(request: Request) -> Response:
        if request.query_params.get("free"):
            await throttle.refund(request)
            return PlainTextResponse("free")
        return PlainTextResponse("no", status_code=400)

    app = Starlette(
        routes=[Route("/x", endpoint)],
        middleware=[Middleware(ThrottleMiddleware, middleware_throttles=[throttle])],
    )
    async with client_for(app) as client:
        assert await statuses(client, "/x", 1) == [400]
        assert await statuses(client, "/x", 1, params={"free": "1"}) == [200]
        assert await statuses(client, "/x", 2) == [400, 429]


# -- WebSockets and lifespan -----------------------------------------------------------------


def test_websocket_handshakes_are_throttled(backend: InMemoryBackend) -> None:
    connects = WebSocketThrottle("ws-connect", rate="1/min", backend=backend)
    requests = HTTPThrottle("http-only", rate="1/min", backend=backend)
    app = starlette_app(MiddlewareThrottle(connects, path="/ws", methods="POST"), requests)
    client = TestClient(app)
    with client.websocket_connect("/ws") as websocket:
        assert websocket.receive_text() == "hello"
    with pytest.raises(WebSocketDenialResponse) as denied, client.websocket_connect("/ws"):
        pass  # pragma: no cover
    assert denied.value.status_code == 429
    assert denied.value.text == "Too many requests. Retry in 60 seconds."
    assert denied.value.headers["retry-after"] == "60"
    # The HTTP throttle leaves WebSockets alone, and the WebSocket throttle leaves HTTP alone.
    assert [client.get("/").status_code for _ in range(2)] == [200, 429]


def test_lifespan_and_unthrottled_kinds_pass_through(backend: InMemoryBackend) -> None:
    events = []

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        events.append("startup")
        yield
        events.append("shutdown")

    throttle = HTTPThrottle("http", rate="1/min", backend=backend)
    app = Starlette(
        routes=[WebSocketRoute("/ws", echo)],
        middleware=[Middleware(ThrottleMiddleware, middleware_throttles=[throttle])],
        lifespan=lifespan,
    )
    with TestClient(app) as client:
        for _ in range(3):
            with client.websocket_connect("/ws") as websocket:
                assert websocket.receive_text() == "hello"
    assert events == ["startup", "shutdown"]


# -- configuration ---------------------------------------------------------------------------


def test_bad_configuration_fails_at_construction(backend: InMemoryBackend) -> None:
    throttle = HTTPThrottle("config", rate="1/min", backend=backend)
    with pytest.raises(TypeError, match="wraps an HTTPThrottle"):
        MiddlewareThrottle(object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="wraps an HTTPThrottle"):
        ThrottleMiddleware(Starlette(), [object()])  # type: ignore[list-item]
    with pytest.raises(ConfigurationError, match="cost=-1"):
        MiddlewareThrottle(throttle, cost=-1)
    with pytest.raises(ConfigurationError, match="neither a path pattern nor a Rule"):
        MiddlewareThrottle(throttle, exempt=[42])  # type: ignore[list-item]
    with pytest.raises(ConfigurationError, match="not a ThrottleBackend"):
        ThrottleMiddleware(Starlette(), [throttle], backend=object())  # type: ignore[arg-type]
    assert ThrottleMiddleware(Starlette(), [throttle], exempt="/health").exempt[0].path == "/health"


def test_a_fixed_cost_no_hit_could_pass_fails_at_construction(backend: InMemoryBackend) -> None:
    """As the throttle's own `cost=` is checked (docs/guides/costs.md): a rule's cost above
    what its throttle's fixed rates can ever admit would refuse every request it matches."""
    throttle = HTTPThrottle("config-big", rate="2/min;10/h", backend=backend)
    with pytest.raises(ConfigurationError) as caught:
        MiddlewareThrottle(throttle, cost=5)
    assert str(caught.value) == (
        "MiddlewareThrottle('config-big'): cost=5 exceeds what rate '2/min' with FixedWindow "
        "can ever admit (2); raise the rate's limit or lower the cost"
    )
    assert MiddlewareThrottle(throttle, cost=2).cost == 2
    dynamic = HTTPThrottle("config-dynamic", rate=lambda r, c: "2/min", backend=backend)
    assert MiddlewareThrottle(dynamic, cost=5).cost == 5  # (its rates are known per request)


# -- order, calling a middleware throttle ----------------------------------------------------


def order(middleware: ThrottleMiddleware) -> list[str]:
    return [t.throttle.uid for t in middleware.http_throttles]


def test_sort_orders_throttles_by_cost(backend: InMemoryBackend) -> None:
    one = HTTPThrottle("sort-one", rate="9/min", backend=backend)
    three = HTTPThrottle("sort-three", rate="9/min", backend=backend, cost=3)
    dynamic = HTTPThrottle("sort-dynamic", rate="9/min", backend=backend, cost=lambda r, c: 1)
    mixed = [
        MiddlewareThrottle(dynamic),
        three,  # a plain throttle among MiddlewareThrottles (traffik 1.2 raised TypeError)
        MiddlewareThrottle(one, predicate=lambda request: True),
        MiddlewareThrottle(one, cost=2),
        one,
    ]
    app = Starlette()
    assert order(ThrottleMiddleware(app, mixed)) == [
        "sort-one",  # cost 1, no predicate
        "sort-one",  # cost 1, a predicate
        "sort-one",  # cost 2
        "sort-three",
        "sort-dynamic",  # a cost callable counts as the dearest
    ]
    assert order(ThrottleMiddleware(app, mixed, sort="cheap_last"))[:2] == [
        "sort-dynamic",
        "sort-three",
    ]
    given = ["sort-dynamic", "sort-three", "sort-one", "sort-one", "sort-one"]
    assert order(ThrottleMiddleware(app, mixed, sort=None)) == given
    assert order(ThrottleMiddleware(app, mixed, sort=False)) == given
    by_uid = ThrottleMiddleware(app, [three, one], sort=lambda item: getattr(item, "uid", ""))
    assert order(by_uid) == ["sort-one", "sort-three"]
    with pytest.raises(ValueError, match="sort='cheapest'"):
        ThrottleMiddleware(app, mixed, sort="cheapest")


async def test_cheap_first_runs_the_cheap_throttle_first(backend: InMemoryBackend) -> None:
    expensive = HTTPThrottle("order-expensive", rate="4/min", backend=backend, cost=2)
    cheap = HTTPThrottle("order-cheap", rate="1/min", backend=backend)
    async with client_for(starlette_app(expensive, cheap)) as client:
        assert await statuses(client, "/", 3) == [200, 429, 429]
    # `cheap` ran first and stopped the rejected requests before `expensive` counted them
    # (a middleware throttle with no path counts under the route "/**").
    state = await expensive.stat("127.0.0.1", path="/**", method="GET")
    assert state is not None and state.hits_remaining == 2


async def test_a_middleware_throttle_is_callable_and_a_dependency(
    backend: InMemoryBackend,
) -> None:
    throttle = HTTPThrottle("mw-callable", rate="1/min", backend=backend)
    guarded = MiddlewareThrottle(throttle, path="/api/", methods="GET")
    assert guarded.__signature__ == throttle.__signature__
    outside = Request({"type": "http", "method": "GET", "path": "/other", "headers": []})
    assert await guarded(outside) is outside  # not its path: nothing counted

    app = FastAPI()

    @app.get("/api/items")
    async def items(request: Request = Depends(guarded)) -> dict[str, str]:
        return {"url": str(request.url.path)}

    async with client_for(app) as client:
        first = await client.get("/api/items")
        second = await client.get("/api/items")
    assert first.json() == {"url": "/api/items"} and second.status_code == 429


async def test_throttled_takes_the_route_directly(backend: InMemoryBackend) -> None:
    from traffik import throttled

    throttle = HTTPThrottle("direct-route", rate="1/min", backend=backend)

    async def homepage(request: Request) -> Response:
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/", throttled(throttle, route=homepage))])
    async with client_for(app) as client:
        assert await statuses(client, "/", 2) == [200, 429]


# -- as_middleware, traffik 1.2's positional order, arguments checked ------------------------


@pytest.mark.parametrize("framework", ["starlette", "fastapi"])
async def test_as_middleware_throttles_an_app(backend: InMemoryBackend, framework: str) -> None:
    throttle = HTTPThrottle(f"as-mw-{framework}", rate="1/min")  # no backend of its own
    middleware = throttle.as_middleware(
        backend=backend, path="/api/", methods="GET", context={"tier": "free"}
    )
    assert middleware.cls is ThrottleMiddleware
    routes = [Route("/{path:path}", ok, methods=METHODS)]
    app: Any = (
        Starlette(routes=routes, middleware=[middleware])
        if framework == "starlette"
        else FastAPI(routes=routes, middleware=[middleware])
    )
    async with client_for(app) as client:
        assert await statuses(client, "/api/items", 2) == [200, 429]
        assert await statuses(client, "/api/items", 2, method="POST") == [200, 200]
        assert await statuses(client, "/other", 2) == [200, 200]
    assert [key.split(":")[1] for key in await backend.keys()] == [f"as-mw-{framework}"]


async def test_as_middleware_passes_its_arguments_on(backend: InMemoryBackend) -> None:
    seen: list[Any] = []

    def tier_is_free(connection: Any, context: Any) -> bool:
        seen.append(context.get("tier"))
        return True

    async def teapot(request: Request, exc: Exception) -> Response:
        return PlainTextResponse("teapot", status_code=418)

    throttle = HTTPThrottle("as-mw-options", rate="1/min", backend=backend)
    app = Starlette(
        routes=[Route("/{path:path}", ok, methods=METHODS)],
        middleware=[
            throttle.as_middleware(
                exception_handler_getter=lambda exc: teapot,
                context={"tier": "free"},
                predicate=tier_is_free,
                exempt=["/health"],
            )
        ],
    )
    async with client_for(app) as client:
        assert await statuses(client, "/", 2) == [200, 418]
        assert await statuses(client, "/health", 2) == [200, 200]
    assert seen == ["free", "free"]


def test_as_middleware_checks_its_arguments_when_called(backend: InMemoryBackend) -> None:
    throttle = HTTPThrottle("as-mw-checked", rate="1/min", backend=backend)
    with pytest.raises(ConfigurationError, match="cost=-1"):
        throttle.as_middleware(cost=-1)
    with pytest.raises(ConfigurationError, match="context=5"):
        throttle.as_middleware(context=5)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="exception_handler_getter='teapot'"):
        throttle.as_middleware(exception_handler_getter="teapot")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="not a ThrottleBackend"):
        throttle.as_middleware(backend=object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="bogus"):
        throttle.as_middleware(bogus=True)


async def test_traffik12_positional_order_works(backend: InMemoryBackend) -> None:
    async def teapot(request: Request, exc: Exception) -> Response:
        return PlainTextResponse("teapot", status_code=418)

    seen: list[Any] = []

    def tier(connection: Any, context: Any) -> bool:
        seen.append(context.get("tier"))
        return True

    cheap = HTTPThrottle("positional-cheap", rate="1/min")
    dear = HTTPThrottle("positional-dear", rate="3/min", cost=3)
    # traffik 1.2's order: app, middleware_throttles, backend, exception_handler_getter,
    # context, sort, skip_handler.
    positional = [
        [MiddlewareThrottle(dear), MiddlewareThrottle(cheap, predicate=tier)],
        backend,
        lambda exc: teapot,
        {"tier": "free"},
        "cheap_first",
    ]
    app = Starlette(
        routes=[Route("/{path:path}", ok, methods=METHODS)],
        middleware=[Middleware(ThrottleMiddleware, *positional)],
    )
    async with client_for(app) as client:
        assert await statuses(client, "/", 2) == [200, 418]
    assert seen == ["free", "free"]
    middleware = ThrottleMiddleware(app, *positional, True)
    assert [t.throttle.uid for t in middleware.http_throttles] == [
        "positional-cheap",
        "positional-dear",
    ]
    assert middleware.skip_handler is True and middleware.context == {"tier": "free"}


def test_middleware_arguments_in_the_wrong_place_say_what_to_pass(
    backend: InMemoryBackend,
) -> None:
    throttle = HTTPThrottle("misplaced", rate="1/min", backend=backend)
    app = Starlette()
    # A mapping where traffik 1.2 takes exception_handler_getter: context by keyword.
    with pytest.raises(ConfigurationError, match=r"exception_handler_getter=\{'tier'.*context="):
        ThrottleMiddleware(app, [throttle], backend, {"tier": "free"})  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"context=5 .*mapping"):
        ThrottleMiddleware(app, [throttle], context=5)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="skip_handler='yes'"):
        ThrottleMiddleware(app, [throttle], skip_handler="yes")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="sort=True"):
        ThrottleMiddleware(app, [throttle], backend, None, None, True)  # type: ignore[arg-type]


@pytest.mark.parametrize("given", [None, 5, "/api/"])
def test_middleware_throttles_must_be_a_list(backend: InMemoryBackend, given: Any) -> None:
    with pytest.raises(ConfigurationError, match=rf"middleware_throttles={given!r}.*list"):
        ThrottleMiddleware(Starlette(), middleware_throttles=given)


def test_a_single_throttle_for_middleware_throttles_says_to_pass_a_list(
    backend: InMemoryBackend,
) -> None:
    throttle = HTTPThrottle("single", rate="1/min", backend=backend)
    with pytest.raises(ConfigurationError, match=r"middleware_throttles=\[HTTPThrottle"):
        ThrottleMiddleware(Starlette(), middleware_throttles=throttle)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"middleware_throttles\[1\]=42 .*wraps an HTTPThrottle"):
        ThrottleMiddleware(Starlette(), [throttle, 42], sort=None)  # type: ignore[list-item]


def test_middleware_throttle_context_must_be_a_mapping(backend: InMemoryBackend) -> None:
    throttle = HTTPThrottle("mw-context", rate="1/min", backend=backend)
    with pytest.raises(ConfigurationError, match=r"MiddlewareThrottle\('mw-context'\): context=5"):
        MiddlewareThrottle(throttle, context=5)  # type: ignore[arg-type]


@pytest.mark.parametrize("methods", [5, [5], b"GET"])
def test_middleware_throttle_methods_must_be_method_names(
    backend: InMemoryBackend, methods: Any
) -> None:
    throttle = HTTPThrottle("mw-methods", rate="1/min", backend=backend)
    with pytest.raises(ConfigurationError, match=re.escape(f"methods={methods!r}")):
        MiddlewareThrottle(throttle, methods=methods)


# -- a client's bucket under a rule --------------------------------------------------------


async def test_a_middleware_throttle_reads_and_forgets_a_clients_bucket() -> None:
    # The middleware counts under the rule's path pattern, with its own backend= for a
    # throttle that has none: `stat`/`reset` of the MiddlewareThrottle name that bucket, from
    # a request the app saw (a `GET /quota` endpoint) or from an identifier.
    backend = InMemoryBackend(namespace="mw-stat")
    api = MiddlewareThrottle(HTTPThrottle("mw:stat", rate="3/min"), path=glob("/api/**"))

    async def quota(request: Request) -> Response:
        stat = await api.stat(request, backend=backend)
        assert stat is not None
        return JSONResponse({"left": stat.hits_remaining})

    app = Starlette(
        routes=[Route("/quota", quota), Route("/{path:path}", ok, methods=METHODS)],
        middleware=[Middleware(ThrottleMiddleware, middleware_throttles=[api], backend=backend)],
    )
    async with client_for(app) as client:
        assert (await client.get("/quota")).json() == {"left": 3}
        assert await statuses(client, "/api/items/1", 2) == [200, 200]
        assert (await client.get("/quota")).json() == {"left": 1}  # the GET budget of /api/**
        left = await api.stat("127.0.0.1", backend=backend)
        assert left is not None and left.hits_remaining == 1
        posted = await api.stat("127.0.0.1", method="POST", backend=backend)
        assert posted is not None and posted.hits_remaining == 3  # POST counts apart
        assert await api.reset("127.0.0.1", path="/api/items/9", backend=backend) is True
        assert (await client.get("/quota")).json() == {"left": 3}
        assert await api.reset("127.0.0.1", backend=backend) is False  # nothing left
        with pytest.raises(ConfigurationError, match="does not guard"):
            await api.stat("127.0.0.1", path="/page", backend=backend)
        with pytest.raises(ConfigurationError, match="has no backend"):
            await api.stat("127.0.0.1")  # (the throttle has none; the middleware's is named)


async def test_a_fastapi_endpoint_reads_a_middleware_throttles_bucket() -> None:
    # Inside a FastAPI endpoint the scope carries FastAPI's route context, which names the
    # endpoint's route; the rule's pattern must still stand for the route.
    backend = InMemoryBackend(namespace="mw-stat-fastapi")
    api = MiddlewareThrottle(HTTPThrottle("mw:stat-fa", rate="3/min"), path=glob("/api/**"))
    app = FastAPI()
    app.add_middleware(ThrottleMiddleware, middleware_throttles=[api], backend=backend)

    @app.get("/api/items/{item}")
    async def item(item: int) -> int:
        return item

    @app.get("/quota")
    async def quota(request: Request) -> dict[str, int]:
        stat = await api.stat(request, backend=backend)
        assert stat is not None
        return {"left": stat.hits_remaining}

    async with client_for(app) as client:
        assert await statuses(client, "/api/items/1", 2) == [200, 200]
        assert (await client.get("/quota")).json() == {"left": 1}


async def test_a_glob_rule_names_its_bucket_by_the_glob_as_written(
    backend: InMemoryBackend,
) -> None:
    """A per-route throttle behind `glob(...)` counts in a bucket named by the glob, not by
    the regular expression it compiles to: a new compiled form in a release keeps clients'
    counts, and the bucket can be named by hand with the glob."""
    throttle = HTTPThrottle("glob-bucket", rate="1/min", per_route=True, backend=backend)
    rule = MiddlewareThrottle(throttle, path=glob("/api/**"))
    app = Starlette(
        routes=[Route("/{path:path}", ok, methods=METHODS)],
        middleware=[Middleware(ThrottleMiddleware, middleware_throttles=[rule])],
    )
    async with client_for(app) as client:
        assert await statuses(client, "/api/items", 2) == [200, 429]
    [key] = await backend.keys()
    assert "/api/**" in unquote(key), key
    assert await rule.reset("127.0.0.1", path="/api/**")
    async with client_for(app) as client:
        assert await statuses(client, "/api/items", 1) == [200]


async def test_a_rule_in_a_mounted_app_names_its_bucket_by_the_mount_s_path() -> None:
    """A middleware in a mounted app counts under the mount's prefix and its pattern
    (`GET:/v1/items/**`): `rule.stat` and `rule.reset` given an identifier name that bucket
    with `path=` after the mount's prefix (before, no path could name it: the client stayed
    refused after every reset)."""
    from starlette.routing import Mount

    backend = InMemoryBackend(namespace="mounted")
    rule = MiddlewareThrottle(
        HTTPThrottle("inner", rate="2/min", backend=backend), path=glob("/items/**")
    )

    async def ok(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    sub = Starlette(
        routes=[Route("/items/{x}", ok)],
        middleware=[Middleware(ThrottleMiddleware, middleware_throttles=[rule])],
    )
    app = Starlette(routes=[Mount("/v1", app=sub)])
    async with client_for(app, client=("203.0.113.7", 4000)) as client:
        assert [(await client.get(f"/v1/items/{i}")).status_code for i in range(3)] == [
            200,
            200,
            429,
        ]
        stat = await rule.stat("203.0.113.7", path="/v1/items/1")
        assert stat is not None and stat.hits_remaining == 0
        assert await rule.reset("203.0.113.7", path="/v1/items/**")
        assert (await client.get("/v1/items/9")).status_code == 200
    with pytest.raises(ConfigurationError, match="does not guard"):
        await rule.reset("203.0.113.7", path="/v1/other/1")


async def test_a_rule_guarding_every_path_in_a_mounted_app_is_named_by_its_pattern() -> None:
    """A rule with no path counts under `GET:/v1/**` in an app mounted at `/v1`: every path
    is one it guards, so its pattern after the mount's prefix names that bucket."""
    from starlette.routing import Mount

    backend = InMemoryBackend(namespace="mounted-all")
    rule = MiddlewareThrottle(HTTPThrottle("all", rate="2/min", backend=backend))

    async def ok(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    app = Starlette(
        routes=[
            Mount(
                "/v1",
                routes=[Route("/items/{x}", ok)],
                middleware=[Middleware(ThrottleMiddleware, middleware_throttles=[rule])],
            )
        ]
    )
    async with client_for(app, client=("203.0.113.8", 4000)) as client:
        assert [(await client.get(f"/v1/items/{i}")).status_code for i in range(3)] == [
            200,
            200,
            429,
        ]
        assert await backend.keys() == ["mounted-all:all:{203.0.113.8}:GET:/v1/**:fw"]
        stat = await rule.stat("203.0.113.8", path="/v1/**")
        assert stat is not None and stat.hits_remaining == 0
        assert await rule.reset("203.0.113.8", path="/v1/**")
        assert (await client.get("/v1/items/9")).status_code == 200
