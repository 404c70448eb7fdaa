"""`ThrottleMiddleware`'s path for one throttle decided by the scope alone, against its general
path (the same throttle with a predicate that always holds): the same responses, headers, keys
and counts, the app's own headers kept."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Callable

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from traffik import HTTPThrottle, InMemoryBackend, WebSocketThrottle, is_throttled
from traffik.headers import Header
from traffik.middleware import MiddlewareThrottle, ThrottleMiddleware
from traffik.rules import glob
from traffik.testing.failing import FailingBackend

pytestmark = pytest.mark.anyio

PATHS = ["/items/1", "/items/2", "/other", "/items/1"]
ALWAYS: Callable[[Any], bool] = lambda connection: True  # noqa: E731


async def items(request: Request) -> Response:
    return PlainTextResponse(
        f"throttled={is_throttled(request)}", headers={"x-app": "kept", "cache-control": "no-store"}
    )


async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text("hello")
    await websocket.close()


def app_with(*throttles: Any, **options: Any) -> Starlette:
    routes = [
        WebSocketRoute("/ws", echo),
        Route("/{path:path}", items, methods=["GET", "POST"]),
    ]
    middleware = [Middleware(ThrottleMiddleware, middleware_throttles=list(throttles), **options)]
    return Starlette(routes=routes, middleware=middleware)


def uses_fast_path(app: Starlette, kind: str = "http") -> bool:
    """Whether the middleware of `app` takes its one-throttle path (the rule decided by the
    scope alone), as `ThrottleMiddleware.__call__` chooses it."""
    middleware: Any = app.build_middleware_stack()
    while not isinstance(middleware, ThrottleMiddleware):
        middleware = middleware.app
    throttles = middleware.http_throttles if kind == "http" else middleware.websocket_throttles
    return len(throttles) == 1 and not throttles[0].checks_more and not middleware.exempt


async def run(
    app: Starlette, backend: InMemoryBackend, requests: list[tuple[str, str]], **transport: Any
) -> tuple[list[tuple[int, list[tuple[bytes, bytes]], str]], list[tuple[str, Any]]]:
    """The status, raw headers and body of each request, then every key with its count."""
    answers = []
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, **transport), base_url="http://test"
    ) as client:
        for method, path in requests:
            response = await client.request(method, path)
            answers.append((response.status_code, list(response.headers.raw), response.text))
    keys = sorted(await backend.keys())
    return answers, [(key, await backend.get(key)) for key in keys]


def ratelimit(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    return [(name, value) for name, value in headers if b"ratelimit" in name]


@pytest.mark.parametrize(
    "rule",
    [
        {"path": "/items/"},
        {"path": glob("/items/*")},
        {"methods": "GET"},
        {"path": "/items/", "methods": ["GET"]},
        {},
    ],
    ids=["regex", "glob", "methods", "path-and-methods", "everything"],
)
async def test_one_throttle_answers_as_the_general_path(rule: dict[str, Any]) -> None:
    requests = [("GET", path) for path in PATHS] + [("POST", "/items/3"), ("GET", "/items/4")]
    results = []
    for predicate in (None, ALWAYS):
        backend = InMemoryBackend(namespace="fast")
        throttle = HTTPThrottle("fast:one", rate="3/min", backend=backend, headers="both")
        app = app_with(MiddlewareThrottle(throttle, predicate=predicate, **rule))
        assert uses_fast_path(app) is (predicate is None)
        results.append(await run(app, backend, requests))
    (answers, keys), general = results
    assert (answers, keys) == general
    assert keys  # (something was counted)
    for status, headers, _ in answers:
        if status == 200:
            assert (b"x-app", b"kept") in headers
            assert (b"cache-control", b"no-store") in headers
    # The rate-limit headers of an admitted request come once, after the app's own.
    counted = [headers for status, headers, _ in answers if status == 200 and ratelimit(headers)]
    assert counted
    for headers in counted:
        names = [name for name, _ in headers]
        assert len(names) == len(set(names))
        assert names.index(b"x-app") < names.index(b"ratelimit")


async def test_one_throttle_counts_and_throttles_as_before() -> None:
    backend = InMemoryBackend(namespace="fast")
    throttle = HTTPThrottle("fast:count", rate="2/min", backend=backend)
    app = app_with(MiddlewareThrottle(throttle, path="/items/"))
    assert uses_fast_path(app)
    answers, keys = await run(app, backend, [("GET", f"/items/{i}") for i in range(3)])
    assert [status for status, _, _ in answers] == [200, 200, 429]
    first, second, third = (dict(headers) for _, headers, _ in answers)
    assert first[b"x-app"] == b"kept"
    assert first[b"ratelimit-policy"] == b'"fast:count";q=2;w=60'
    assert (first[b"ratelimit"], second[b"ratelimit"]) == (
        b'"fast:count";r=1;t=60',
        b'"fast:count";r=0;t=60',
    )
    # The 429 is the throttle's own answer: its headers, none of the app's.
    assert third[b"retry-after"] == b"60"
    assert third[b"ratelimit"] == b'"fast:count";r=0;t=60'
    assert b"x-app" not in third
    # One budget per client, method and the rule's pattern (not per path).
    assert [key for key, _ in keys] == ["fast:fast%3Acount:{127.0.0.1}:GET:/items/:fw"]


async def test_two_throttles_write_both_headers_after_the_apps() -> None:
    backend = InMemoryBackend(namespace="two")
    burst = HTTPThrottle("two:burst", rate="5/min", backend=backend)
    daily = HTTPThrottle("two:daily", rate="100/day", backend=backend, headers="legacy")
    app = app_with(MiddlewareThrottle(burst, path="/items/"), daily)
    assert not uses_fast_path(app)
    answers, keys = await run(app, backend, [("GET", "/items/1"), ("GET", "/other")])
    (status, headers, _), (_, other, _) = answers
    assert status == 200
    names = [name for name, _ in headers]
    assert names[: names.index(b"x-app") + 1] == [
        name for name, _ in other[: [n for n, _ in other].index(b"x-app") + 1]
    ]
    found = dict(headers)
    assert found[b"x-app"] == b"kept"
    assert found[b"ratelimit"] == b'"two:burst";r=4;t=60'
    assert found[b"x-ratelimit-remaining"] == b"99"
    assert b"ratelimit" not in dict(other)  # (/other: the daily throttle alone)
    assert dict(other)[b"x-ratelimit-remaining"] == b"98"
    assert len(keys) == 2


@pytest.mark.parametrize("predicate", [None, ALWAYS], ids=["fast", "general"])
async def test_skip_handler_lets_the_throttled_request_through(
    predicate: Callable[[Any], bool] | None,
) -> None:
    backend = InMemoryBackend(namespace="skip")
    throttle = HTTPThrottle("skip:soft", rate="1/min", backend=backend)
    app = app_with(MiddlewareThrottle(throttle, predicate=predicate), skip_handler=True)
    assert uses_fast_path(app) is (predicate is None)
    answers, keys = await run(app, backend, [("GET", "/items/1")] * 2)
    (first_status, first, first_body), (second_status, second, second_body) = answers
    assert (first_status, first_body) == (200, "throttled=False")
    assert (second_status, second_body) == (200, "throttled=True")
    assert dict(first)[b"ratelimit"] == b'"skip:soft";r=0;t=60'
    assert dict(second)[b"x-app"] == b"kept"
    assert not ratelimit(second)  # (a throttled request gets no headers of an admitted one)
    assert len(keys) == 1


async def test_a_throttle_without_headers_leaves_the_response_alone() -> None:
    backend = InMemoryBackend(namespace="quiet")
    throttle = HTTPThrottle("quiet:none", rate="2/min", backend=backend, headers=None)
    app = app_with(throttle)
    assert uses_fast_path(app)
    answers, keys = await run(app, backend, [("GET", "/items/1")] * 3)
    assert [status for status, _, _ in answers] == [200, 200, 429]
    assert not ratelimit(answers[0][1])
    assert dict(answers[0][1])[b"x-app"] == b"kept"
    assert len(keys) == 1


async def test_the_path_is_matched_below_the_root_path() -> None:
    results = []
    for predicate in (None, ALWAYS):
        backend = InMemoryBackend(namespace="root")
        throttle = HTTPThrottle("root:mounted", rate="1/min", backend=backend)
        app = app_with(MiddlewareThrottle(throttle, path="/items/", predicate=predicate))
        requests = [("GET", "/api/items/1")] * 2 + [("GET", "/api/other")] * 2
        results.append(await run(app, backend, requests, root_path="/api"))
    (answers, keys), general = results
    assert (answers, keys) == general
    assert [status for status, _, _ in answers] == [200, 429, 200, 200]


async def test_a_response_sent_again_does_not_gather_headers() -> None:
    # An app may answer with one Response object every time: its start message is not changed.
    cached = PlainTextResponse("same", headers={"x-app": "kept"})
    before = list(cached.raw_headers)

    async def same(request: Request) -> Response:
        return cached

    backend = InMemoryBackend(namespace="cached")
    throttle = HTTPThrottle("cached:one", rate="10/min", backend=backend)
    app = Starlette(
        routes=[Route("/", same)],
        middleware=[Middleware(ThrottleMiddleware, middleware_throttles=[throttle])],
    )
    answers, _ = await run(app, backend, [("GET", "/")] * 3)
    for remaining, (_, headers, _) in zip((9, 8, 7), answers):
        assert ratelimit(headers) == [
            (b"ratelimit-policy", b'"cached:one";q=10;w=60'),
            (b"ratelimit", b'"cached:one";r=%d;t=60' % remaining),
        ]
    assert cached.raw_headers == before


async def handshake(app: Any, extensions: dict[str, Any]) -> list[dict[str, Any]]:
    """The messages the app sends for one WebSocket handshake (then a disconnect)."""
    incoming: Iterator[dict[str, Any]] = iter(
        [{"type": "websocket.connect"}, {"type": "websocket.disconnect", "code": 1000}]
    )
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return next(incoming, {"type": "websocket.disconnect", "code": 1000})

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "scheme": "ws",
        "path": "/ws",
        "raw_path": b"/ws",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"test")],
        "client": ("127.0.0.1", 5000),
        "server": ("test", 80),
        "subprotocols": [],
        "extensions": extensions,
    }
    await app(scope, receive, send)
    return sent


@pytest.mark.parametrize(
    "extensions", [{}, {"websocket.http.response": {}}], ids=["close", "denial"]
)
async def test_websocket_handshakes_as_the_general_path(extensions: dict[str, Any]) -> None:
    results = []
    for predicate in (None, ALWAYS):
        backend = InMemoryBackend(namespace="ws")
        throttle = WebSocketThrottle("ws:connect", rate="1/min", backend=backend)
        app = app_with(MiddlewareThrottle(throttle, path="/ws", predicate=predicate))
        assert uses_fast_path(app, "websocket") is (predicate is None)
        async with backend:
            sent = [await handshake(app, extensions) for _ in range(2)]
            keys = sorted(await backend.keys())
        results.append((sent, keys))
    assert results[0] == results[1]
    (allowed, refused), keys = results[0]
    assert [m["type"] for m in allowed] == ["websocket.accept", "websocket.send", "websocket.close"]
    if extensions:
        assert refused[0]["type"] == "websocket.http.response.start"
        assert refused[0]["status"] == 429
        assert (b"retry-after", b"60") in refused[0]["headers"]
    else:
        assert refused == [
            {
                "type": "websocket.close",
                "code": 1008,
                "reason": "Too many requests. Retry in 60 seconds.",
            }
        ]
    assert len(keys) == 1


def connections_seen(seen: list[tuple[str, Any]], name: str) -> list[tuple[type, str]]:
    return [(type(c), c.scope["route"].path) for n, c in seen if n == name]


async def test_the_apps_callables_get_a_request_with_the_pattern_as_route() -> None:
    # The one-throttle path makes no `Request` for a throttle that reads the scope alone; every
    # callable of the app it reaches still gets one (the pattern as its route), one per hit.
    seen: list[tuple[str, Any]] = []

    def value(connection: Any, stat: Any, context: Any) -> str:
        seen.append(("header", connection))
        return "seen"

    async def handler(connection: Any, wait_ms: float, throttle: Any, context: Any) -> Response:
        seen.append(("handler", connection))
        return PlainTextResponse("slow down", status_code=429)

    backend = InMemoryBackend(namespace="made")
    throttle = HTTPThrottle(
        "made:one",
        rate="1/min",
        backend=backend,
        headers={"x-seen": Header(value, when="always")},
        handle_throttled=handler,
        on_decision=lambda event: seen.append(("event", event.connection)),
    )
    app = app_with(MiddlewareThrottle(throttle, path="/items/"))
    assert uses_fast_path(app)
    answers, _ = await run(app, backend, [("GET", "/items/1")] * 2)
    assert [(status, body) for status, _, body in answers] == [
        (200, "throttled=False"),
        (429, "slow down"),
    ]
    assert (b"x-seen", b"seen") in answers[0][1]
    assert connections_seen(seen, "header") == [(Request, "/items/")] * 2  # (and on the 429)
    assert connections_seen(seen, "handler") == [(Request, "/items/")]
    assert connections_seen(seen, "event") == [(Request, "/items/")] * 2
    refusal = [connection for name, connection in seen[-3:]]  # (event, header, handler)
    assert refusal[0] is refusal[1] is refusal[2]  # (one Request per hit)


async def test_an_identifier_and_on_error_get_a_request_on_the_one_throttle_path() -> None:
    seen: list[tuple[str, Any]] = []

    def identifier(connection: Any) -> str:
        seen.append(("identifier", connection))
        return "client"

    async def on_error(connection: Any, info: Any) -> float:
        seen.append(("on_error", connection))
        return 0

    store = InMemoryBackend(namespace="made-errors")
    backend = FailingBackend(store)
    identified = HTTPThrottle("made:id", rate="5/min", backend=store, identifier=identifier)
    failing = HTTPThrottle("made:err", rate="5/min", backend=backend, on_error=on_error)
    for throttle in (identified, failing):
        app = app_with(MiddlewareThrottle(throttle, path="/items/"))
        assert uses_fast_path(app)
        backend.fail()
        answers, _ = await run(app, store, [("GET", "/items/1")])
        assert answers[0][0] == 200
    assert connections_seen(seen, "identifier") == [(Request, "/items/")]
    assert connections_seen(seen, "on_error") == [(Request, "/items/")]


async def test_a_throttle_class_with_its_own_hit_gets_a_request() -> None:
    # traffik 1.2 code overrides `hit` (or `get_backend`) and reads the connection there: the
    # one-throttle path hands such a class a `Request`, never the scope alone.
    seen: list[Any] = []

    class Audited(HTTPThrottle):
        async def hit(self, connection: Any, **options: Any) -> Any:
            seen.append((type(connection), connection.url.path, connection.headers.get("x-k")))
            return await super().hit(connection, **options)

    class Resolving(HTTPThrottle):
        def get_backend(self, connection: Any = None) -> Any:
            seen.append((type(connection), connection.url.path, connection.headers.get("x-k")))
            return super().get_backend(connection)

    backend = InMemoryBackend(namespace="made-hooks")
    for cls in (Audited, Resolving):  # (the second finds the middleware's backend)
        own = backend if cls is Audited else None
        throttle = cls(f"made:{cls.__name__}", rate="1/min", backend=own)
        app = app_with(MiddlewareThrottle(throttle, path="/items/"), backend=backend)
        assert uses_fast_path(app)
        answers, _ = await run(app, backend, [("GET", "/items/1")] * 2)
        assert [status for status, _, _ in answers] == [200, 429]
    assert seen == [(Request, "/items/1", None)] * 4
