"""spec/integration.md, section by section, as a traffik 1.2 user writes the code."""

from __future__ import annotations

import functools
import gc
import pickle
from collections.abc import Awaitable
from typing import Any, Callable

import httpx
import pytest
from fastapi import Depends, FastAPI, Request, Response
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.testclient import TestClient, WebSocketDenialResponse
from starlette.websockets import WebSocket

from traffik import (
    EXEMPTED,
    HTTPThrottle,
    ThrottleRegistry,
    WebSocketThrottle,
    get_remote_address,
    get_wait,
    is_throttled,
)
from traffik.backends.inmemory import InMemoryBackend
from traffik.middleware import MiddlewareThrottle, ThrottleMiddleware
from traffik.testing import FailingBackend

pytestmark = pytest.mark.anyio


# Throttles: each on a fresh in-memory backend (unless given one) and in its own registry, so
# that tests reusing a uid do not clash.


def http_throttle(uid: str, rate: Any, **options: Any) -> HTTPThrottle:
    options.setdefault("backend", InMemoryBackend())
    options.setdefault("registry", ThrottleRegistry())
    return HTTPThrottle(uid, rate, **options)


def websocket_throttle(uid: str, rate: Any, **options: Any) -> WebSocketThrottle:
    options.setdefault("backend", InMemoryBackend())
    options.setdefault("registry", ThrottleRegistry())
    return WebSocketThrottle(uid, rate, **options)


def primary_and_spare() -> tuple[FailingBackend, InMemoryBackend]:
    """A primary backend that fails on demand, and a spare for the error handlers to use."""
    return FailingBackend(InMemoryBackend(namespace="primary")), InMemoryBackend(namespace="spare")


# Apps with one route at /x (or /ws).


def fastapi_app(throttle: Any, path: str = "/x", **app_options: Any) -> FastAPI:
    app = FastAPI(**app_options)

    @app.get(path)
    async def route(request: Request = Depends(throttle)) -> dict[str, bool]:
        return {"ok": True}

    return app


def starlette_app(body: Callable[[Any], Awaitable[Any]], path: str = "/x") -> Starlette:
    """A Starlette app whose route runs `body(request)`, then answers "ok"."""

    async def endpoint(request: Any) -> PlainTextResponse:
        await body(request)
        return PlainTextResponse("ok")

    return Starlette(routes=[Route(path, endpoint)])


async def ok(request: Any) -> PlainTextResponse:
    return PlainTextResponse("ok")


def middleware_app(
    throttles: list[Any], *, routes: list[BaseRoute] | None = None, **options: Any
) -> Starlette:
    """A Starlette app (by default `ok` at /x) behind `ThrottleMiddleware(throttles, **options)`."""
    return Starlette(
        routes=[Route("/x", ok)] if routes is None else routes,
        middleware=[Middleware(ThrottleMiddleware, middleware_throttles=throttles, **options)],
    )


async def say_hi(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text("hi")
    await websocket.close()


def ws_echo_app(ws_throttle: Any, *, check: bool = False) -> FastAPI:
    app = FastAPI()

    @app.websocket("/ws")
    async def websocket_endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            while True:
                data = await websocket.receive_text()
                await ws_throttle.hit(websocket)
                if check and is_throttled(websocket):
                    continue
                await websocket.send_text(f"echo: {data}")
        except Exception:
            pass

    return app


# Clients.


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def answers(app: Any, n: int, path: str = "/x") -> list[httpx.Response]:
    """`n` GETs of `path`, one after another, from one client."""
    async with client(app) as http:
        return [await http.get(path) for _ in range(n)]


async def statuses(app: Any, n: int, path: str = "/x") -> list[int]:
    return [response.status_code for response in await answers(app, n, path)]


def statuses_with_lifespan(app: Any, n: int, path: str = "/x") -> list[int]:
    """As `statuses`, inside one run of the app's lifespan (startup, the GETs, shutdown)."""
    with TestClient(app) as http:
        return [http.get(path).status_code for _ in range(n)]


def second_handshake_is_denied(app: Any) -> WebSocketDenialResponse:
    """The first connection to /ws hears "hi"; the second is denied, whose answer is returned."""
    http = TestClient(app)
    with http.websocket_connect("/ws") as ws:
        assert ws.receive_text() == "hi"
    with pytest.raises(WebSocketDenialResponse) as denied, http.websocket_connect("/ws"):
        pass
    return denied.value


def echoes_then_refuses(ws_throttle: Any, *, check: bool = False) -> None:
    """Over `ws_echo_app`, message "a" is echoed and message "b" answered with a rate_limit."""
    with TestClient(ws_echo_app(ws_throttle, check=check)).websocket_connect("/ws") as ws:
        ws.send_text("a")
        assert ws.receive_text() == "echo: a"
        ws.send_text("b")
        assert ws.receive_json()["type"] == "rate_limit"


# §1.1 / §1.2 construction -----------------------------------------------------------------


def test_s1_positional_order_uid_rate_identifier_handler_strategy_backend_cost() -> None:
    from traffik.strategies import TokenBucket

    async def ident(conn: Any) -> str:
        return "a"

    async def handler(conn: Any, wait: float, throttle: Any, ctx: Any) -> None:
        return None

    backend = InMemoryBackend()
    strategy = TokenBucket()
    t = HTTPThrottle(
        "s1:order", "3/min", ident, handler, strategy, backend, 2, registry=ThrottleRegistry()
    )
    assert t.identifier is ident and t.handle_throttled is handler
    assert t.strategy is strategy and t.backend is backend and t.cost == 2


def test_s1_invalid_on_error_leaves_the_uid_free() -> None:
    registry = ThrottleRegistry(strict=True)
    with pytest.raises(ValueError, match="on_error"):
        HTTPThrottle("s1:bad", "1/min", on_error="explode", registry=registry)
    assert not registry.exists("s1:bad")
    HTTPThrottle("s1:bad", "1/min", registry=registry)


@pytest.mark.parametrize("uid", ["", None, 5])
def test_s1_bad_uid_is_a_value_error(uid: Any) -> None:
    with pytest.raises(ValueError, match="uid"):
        HTTPThrottle(uid, "1/min", registry=ThrottleRegistry())


def test_s1_bad_rate_string_is_a_value_error_naming_it() -> None:
    with pytest.raises(ValueError, match="5/fortnight"):
        HTTPThrottle("s1:rate", "5/fortnight", registry=ThrottleRegistry())


def test_s1_public_attributes() -> None:
    t = HTTPThrottle("s1:attrs", "1/min", registry=ThrottleRegistry())
    for name in (
        "uid",
        "rate",
        "cost",
        "strategy",
        "backend",
        "identifier",
        "handle_throttled",
        "on_error",
        "min_wait_period",
        "registry",
        "cache_ids",
        "dynamic_rules",
        "skip_handler",
        "use_fixed_backend",
        "connection_type",
        "is_dynamic",
        "is_disabled",
        "use_method",
    ):
        getattr(t, name)
    assert t.use_fixed_backend is True and t.is_dynamic is False and t.is_disabled is False
    assert "s1:attrs" in repr(t)


def test_s1_dynamic_backend_with_a_backend_is_refused() -> None:
    from traffik.exceptions import ConfigurationError

    with pytest.raises(ConfigurationError, match="dynamic_backend"):
        HTTPThrottle(
            "s1:dyn",
            "1/min",
            backend=InMemoryBackend(),
            dynamic_backend=True,
            registry=ThrottleRegistry(),
        )


# §1.3 uids -----------------------------------------------------------------------------------


async def test_s1_3_same_uid_in_a_new_app_per_test() -> None:
    for _ in range(2):
        backend = InMemoryBackend(namespace="test", persistent=False)
        throttle = HTTPThrottle("test:audit-api", rate="3/min", backend=backend)
        app = FastAPI(lifespan=backend.lifespan)

        @app.get("/items")
        async def items(request: Request = Depends(throttle)) -> dict[str, Any]:
            assert isinstance(request, Request)
            return {}

        assert await statuses(app, 4, "/items") == [200, 200, 200, 429]
        gc.collect()


# §1.5 dependency -------------------------------------------------------------------------------


async def test_s1_5_same_throttle_on_router_and_route_is_hit_once() -> None:
    from fastapi import APIRouter

    throttle = http_throttle("s1:once", "2/min")
    router = APIRouter(dependencies=[Depends(throttle)])

    @router.get("/x", dependencies=[Depends(throttle)])
    async def route(request: Request = Depends(throttle)) -> dict[str, Any]:
        return {}

    app = FastAPI()
    app.include_router(router)
    assert await statuses(app, 3) == [200, 200, 429]


async def test_s1_5_openapi_has_no_args_kwargs_or_response_param() -> None:
    app = fastapi_app(http_throttle("s1:openapi", "2/min"))
    params = app.openapi()["paths"]["/x"]["get"].get("parameters", [])
    assert params == []


async def test_s1_5_call_returns_the_connection_directly() -> None:
    throttle = http_throttle("s1:call", "2/min")

    async def body(request: Any) -> None:
        same = await throttle(request)
        assert same is request

    assert await statuses(starlette_app(body), 3) == [200, 200, 429]


# §1.7 hit ---------------------------------------------------------------------------------------


async def test_s1_7_cost_zero_and_negative() -> None:
    throttle = http_throttle("s1:cost", "1/min")
    seen: list[Any] = []

    async def body(request: Any) -> None:
        for _ in range(3):
            await throttle.hit(request, cost=0)
        seen.append(is_throttled(request))
        with pytest.raises(ValueError, match="-1"):
            await throttle.hit(request, cost=-1)
        await throttle.hit(request)

    assert await statuses(starlette_app(body), 1) == [200]
    assert seen == [False]


async def test_s1_7_min_wait_period_only_lengthens_refusals() -> None:
    # per minute, not per second: the second request must come within the window however slow
    # the machine; the wait it is told, under a minute, lengthened to the five minutes
    throttle = http_throttle("s1:minwait", "1/min", min_wait_period=300_000)
    first, second = await answers(fastapi_app(throttle), 2)
    assert first.status_code == 200
    assert second.status_code == 429 and second.headers["retry-after"] == "300"


async def test_s1_7_handler_returning_normally_lets_the_request_through() -> None:
    calls: list[float] = []

    async def handler(conn: Any, wait_ms: float, throttle: Any, ctx: Any) -> None:
        calls.append(wait_ms)

    throttle = http_throttle("s1:handler", "1/min", handle_throttled=handler)
    assert await statuses(fastapi_app(throttle), 2) == [200, 200]
    assert len(calls) == 1 and calls[0] > 0


# §1.8 on_error -----------------------------------------------------------------------------------


async def test_s1_8_error_callback_gets_exc_info_and_its_wait_is_used() -> None:
    backend = FailingBackend(InMemoryBackend())
    seen: dict[str, Any] = {}

    async def on_error(conn: Any, exc_info: Any) -> float:
        seen.update(exc_info)
        return 2500

    throttle = http_throttle(
        "s1:onerr", "5/min", backend=backend, on_error=on_error, context={"tenant": "t"}
    )
    with backend.failing(RuntimeError("down")):
        [response] = await answers(fastapi_app(throttle), 1)
    assert response.status_code == 429 and response.headers["retry-after"] == "3"
    for name in (
        "exception",
        "connection",
        "key",
        "cost",
        "rate",
        "backend",
        "context",
        "throttle",
    ):
        assert name in seen, name
    assert seen["throttle"] is throttle and seen["cost"] == 1 and seen["context"]["tenant"] == "t"
    assert isinstance(seen["exception"], Exception)


@pytest.mark.parametrize(
    ("policy", "status", "retry_after"), [("throttle", 429, "1"), ("allow", 200, None)]
)
async def test_s1_8_string_policies(policy: str, status: int, retry_after: Any) -> None:
    backend = FailingBackend(InMemoryBackend())
    throttle = http_throttle(f"s1:policy:{policy}", "5/min", backend=backend, on_error=policy)
    with backend.failing(RuntimeError("down")):
        [response] = await answers(fastapi_app(throttle), 1)
    assert response.status_code == status
    assert response.headers.get("retry-after") == retry_after


async def test_s1_8_raise_policy_reraises() -> None:
    backend = FailingBackend(InMemoryBackend())
    throttle = http_throttle("s1:raise", "5/min", backend=backend, on_error="raise")

    async def body(request: Any) -> None:
        with backend.failing(KeyError("boom")), pytest.raises(Exception, match="boom"):
            await throttle.hit(request)

    assert await statuses(starlette_app(body), 1) == [200]


async def test_s1_8_backend_on_error_is_inherited_even_when_known_only_at_hit_time() -> None:
    backend = FailingBackend(InMemoryBackend(on_error="allow"))
    throttle = HTTPThrottle("s1:late", "1/min", registry=ThrottleRegistry())
    app = fastapi_app(throttle, lifespan=backend.lifespan)
    with TestClient(app) as http, backend.failing(RuntimeError("down")):
        assert http.get("/x").status_code == 200


# §1.10 stat / check ---------------------------------------------------------------------------------


async def test_s1_10_stat_and_check_with_a_callable_rate() -> None:
    async def rate(conn: Any, ctx: Any) -> str:
        return "3/min"

    throttle = http_throttle("s1:stat", rate)
    out: dict[str, Any] = {}

    async def body(request: Any) -> None:
        await throttle.hit(request)
        stat = await throttle.stat(request)
        out["remaining"] = stat.hits_remaining
        out["limit"] = stat.rate.limit
        out["check"] = await throttle.check(request, cost=2)
        out["check3"] = await throttle.check(request, cost=3)

    assert await statuses(starlette_app(body), 1) == [200]
    assert out == {"remaining": 2, "limit": 3, "check": True, "check3": False}


async def test_s1_10_stat_is_none_for_exempted_clients() -> None:
    async def ident(conn: Any) -> Any:
        return EXEMPTED

    throttle = http_throttle("s1:statex", "3/min", identifier=ident)
    out: list[Any] = []

    async def body(request: Any) -> None:
        out.append(await throttle.stat(request))
        out.append(await throttle.check(request))

    assert await statuses(starlette_app(body), 1) == [200]
    assert out == [None, True]


# §1.11 runtime mutation ----------------------------------------------------------------------------


async def test_s1_11_disable_enable_and_updates() -> None:
    throttle = http_throttle("s1:mut", "1/min")
    app = fastapi_app(throttle)
    await throttle.disable()
    assert await statuses(app, 3) == [200, 200, 200]
    await throttle.enable()
    assert await statuses(app, 2) == [200, 429]
    await throttle.update_rate("5/min")
    await throttle.update_cost(2)
    assert throttle.cost == 2


async def test_s1_11_ws_update_handle_throttled_none_keeps_the_ws_handler() -> None:
    ws_throttle = websocket_throttle("s1:wsupd", "1/min")
    await ws_throttle.update_handle_throttled(None)
    echoes_then_refuses(ws_throttle)


# §1.13 marker -----------------------------------------------------------------------------------------


async def test_s1_13_skip_handler_marker_is_the_last_hits() -> None:
    backend = InMemoryBackend()
    tight = http_throttle("s1:tight", "1/min", backend=backend, skip_handler=True)
    loose = http_throttle("s1:loose", "100/min", backend=backend)
    out: list[Any] = []

    async def body(request: Any) -> None:
        await tight.hit(request)
        out.append((is_throttled(request), get_wait(request) > 0))
        await loose.hit(request)
        out.append((is_throttled(request), get_wait(request) > 0))

    assert await statuses(starlette_app(body), 2) == [200, 200]
    # documented (docs/testing.md, docs/guides/exemptions.md): the marker is the latest hit's
    assert out == [(False, False), (False, False), (True, True), (False, False)]


# §3 WebSocket -----------------------------------------------------------------------------------------


def test_s3_ws_frame_exact_then_echo_and_socket_stays_open() -> None:
    ws_throttle = websocket_throttle("s3:ws", "2/min")
    with TestClient(ws_echo_app(ws_throttle)).websocket_connect("/ws") as ws:
        for word in ("a", "b"):
            ws.send_text(word)
            assert ws.receive_text() == f"echo: {word}"
        ws.send_text("c")
        raw = ws.receive_text()
        assert raw.startswith('{"type":"rate_limit","error":"Too many messages","retry_after":')
        assert ws.receive_text() == "echo: c"
        ws.send_text("d")
        assert ws.receive_json()["type"] == "rate_limit"


def test_s3_ws_extras_are_added() -> None:
    ws_throttle = websocket_throttle("s3:extras", "1/min", context={"extras": {"channel": "chat"}})
    with TestClient(ws_echo_app(ws_throttle, check=True)).websocket_connect("/ws") as ws:
        ws.send_text("a")
        ws.receive_text()
        ws.send_text("b")
        message = ws.receive_json()
    assert message["channel"] == "chat" and message["type"] == "rate_limit"
    assert isinstance(message["retry_after"], int) and message["retry_after"] >= 1


def test_s3_ws_dependency_denies_the_handshake_with_429() -> None:
    ws_throttle = websocket_throttle("s3:dep", "1/min")
    app = FastAPI()

    @app.websocket("/ws")
    async def endpoint(websocket: WebSocket = Depends(ws_throttle)) -> None:
        await say_hi(websocket)

    denied = second_handshake_is_denied(app)
    assert denied.status_code == 429
    assert denied.headers["retry-after"]


def test_s3_ws_backend_handle_throttled_is_documented_choice() -> None:
    # D12: our WS throttles keep their own handler; a backend handler is not used.
    async def backend_handler(conn: Any, wait: float, throttle: Any, ctx: Any) -> None:
        raise AssertionError("not for WebSockets")

    backend = InMemoryBackend(handle_throttled=backend_handler)
    echoes_then_refuses(websocket_throttle("s3:bh", "1/min", backend=backend), check=True)


# §4 429 ------------------------------------------------------------------------------------------------


async def test_s4_ctx_detail_status_headers_customise_the_429() -> None:
    throttle = http_throttle(
        "s4:ctx",
        "1/min",
        headers=None,
        context={"detail": "slow", "status_code": 503, "headers": {"X-Extra": "1"}},
    )
    _, response = await answers(fastapi_app(throttle), 2)
    assert response.status_code == 503 and response.json() == {"detail": "slow"}
    assert response.headers["x-extra"] == "1" and response.headers["retry-after"] == "60"


async def test_s4_fastapi_body_and_starlette_text_body() -> None:
    _, response = await answers(fastapi_app(http_throttle("s4:body", "1/min")), 2)
    assert response.json() == {"detail": "Too many requests. Retry in 60 seconds."}

    st = http_throttle("s4:text", "1/min")
    _, response = await answers(starlette_app(st.hit), 2)
    assert response.status_code == 429
    assert response.text == "Too many requests. Retry in 60 seconds."
    assert response.headers["content-type"].startswith("text/plain")


def test_s4_connection_throttled_defaults() -> None:
    from starlette.exceptions import HTTPException

    from traffik.exceptions import ConnectionThrottled, TraffikException

    exc = ConnectionThrottled(wait_period=5)
    assert isinstance(exc, HTTPException) and isinstance(exc, TraffikException)
    assert exc.status_code == 429 and exc.headers["Retry-After"] == "5"
    assert exc.wait_period == 5 and "Too Many Requests" in exc.detail
    assert "5 second" in exc.detail
    plain = ConnectionThrottled()
    assert plain.detail == "Too Many Requests" and plain.wait_period is None
    over = ConnectionThrottled(wait_period=3, headers={"Retry-After": "99", "X-A": "b"})
    assert over.headers == {"Retry-After": "3", "X-A": "b"}


async def test_s4_user_exception_handler_for_429_takes_over_in_routes_and_middleware() -> None:
    from starlette.responses import JSONResponse

    from traffik.exceptions import ConnectionThrottled

    async def on_429(request: Any, exc: Any) -> JSONResponse:
        return JSONResponse({"mine": True}, status_code=429)

    backend = InMemoryBackend()
    dep = http_throttle("s4:dep", "1/min", backend=backend)
    mw = http_throttle("s4:mw", "1/min", backend=backend)
    app = FastAPI(
        middleware=[
            Middleware(ThrottleMiddleware, middleware_throttles=[MiddlewareThrottle(mw, path="/m")])
        ]
    )
    app.add_exception_handler(ConnectionThrottled, on_429)

    @app.get("/d")
    async def d(request: Request = Depends(dep)) -> dict[str, Any]:
        return {}

    @app.get("/m")
    async def m() -> dict[str, Any]:
        return {}

    for path in ("/d", "/m"):
        _, response = await answers(app, 2, path)
        assert response.status_code == 429 and response.json() == {"mine": True}, path


# §5 identifiers -------------------------------------------------------------------------------------------


async def test_s5_sync_get_remote_address_and_partial_identifiers() -> None:
    backend = InMemoryBackend()
    direct = http_throttle("s5:direct", "1/min", identifier=get_remote_address, backend=backend)
    partial = http_throttle(
        "s5:partial",
        "1/min",
        backend=backend,
        identifier=functools.partial(get_remote_address, trusted_proxies=["127.0.0.1"]),
    )
    assert await statuses(fastapi_app(direct), 2) == [200, 429]
    app = fastapi_app(partial)
    async with client(app) as http:
        a = await http.get("/x", headers={"X-Forwarded-For": "1.2.3.4"})
        b = await http.get("/x", headers={"X-Forwarded-For": "5.6.7.8"})
        c = await http.get("/x", headers={"X-Forwarded-For": "1.2.3.4"})
    assert (a.status_code, b.status_code, c.status_code) == (200, 200, 429)


async def test_s5_spoofed_header_from_an_untrusted_peer_changes_nothing() -> None:
    throttle = http_throttle(
        "s5:spoof",
        "1/min",
        identifier=functools.partial(get_remote_address, trusted_proxies=["10.0.0.1"]),
    )
    async with client(fastapi_app(throttle)) as http:
        a = await http.get("/x", headers={"X-Forwarded-For": "1.1.1.1"})
        b = await http.get("/x", headers={"X-Forwarded-For": "2.2.2.2"})
    assert (a.status_code, b.status_code) == (200, 429)


def test_s5_get_remote_address_walk() -> None:
    import ipaddress

    from starlette.requests import Request as R

    def req(peer: str, xff: str) -> R:
        return R(
            {"type": "http", "client": (peer, 1), "headers": [(b"x-forwarded-for", xff.encode())]}
        )

    trusted = [ipaddress.ip_network("10.0.0.0/8")]
    assert (
        get_remote_address(req("10.0.0.1", "9.9.9.9, 10.0.0.2"), trusted_proxies=trusted)
        == "9.9.9.9"
    )
    assert get_remote_address(req("8.8.8.8", "9.9.9.9"), trusted_proxies=trusted) == "8.8.8.8"
    assert get_remote_address(req("10.0.0.1", "9.9.9.9")) == "10.0.0.1"
    none_client = R({"type": "http", "client": None, "headers": []})
    assert get_remote_address(none_client) is None


async def test_s5_identifier_cached_per_uid_and_none_not_cached() -> None:
    calls: list[str] = []

    async def ident(conn: Any) -> Any:
        calls.append("x")
        return None

    throttle = http_throttle("s5:none", "10/min", identifier=ident)

    async def body(request: Any) -> None:
        await throttle.hit(request)
        await throttle.hit(request)

    assert await statuses(starlette_app(body), 1) == [200]
    assert len(calls) == 2


# §6.2 Starlette decorator ---------------------------------------------------------------------------------


async def test_s6_2_starlette_throttled_on_sync_and_async_routes() -> None:
    from traffik import throttled

    backend = InMemoryBackend()
    t1 = http_throttle("s6:async", "1/min", backend=backend)
    t2 = http_throttle("s6:sync", "1/min", backend=backend)

    @throttled(t1)
    async def a(request: Any) -> PlainTextResponse:
        return PlainTextResponse("a")

    @throttled(t2)
    def s(request: Any) -> PlainTextResponse:
        return PlainTextResponse("s")

    app = Starlette(routes=[Route("/a", a), Route("/s", s)])
    assert await statuses(app, 2, "/a") == [200, 429]
    assert await statuses(app, 2, "/s") == [200, 429]


def test_s6_2_starlette_throttled_validation() -> None:
    from traffik import throttled

    with pytest.raises(ValueError):
        throttled()
    h = HTTPThrottle("s6:v1", "1/min", registry=ThrottleRegistry())
    w = WebSocketThrottle("s6:v2", "1/min", registry=ThrottleRegistry())
    with pytest.raises(ValueError):
        throttled(h, w)


async def test_s6_2_route_kwarg_returns_the_wrapped_route() -> None:
    from traffik import throttled

    t = http_throttle("s6:route", "1/min")

    async def a(request: Any) -> PlainTextResponse:
        return PlainTextResponse("a")

    wrapped = throttled(t, route=a)
    assert wrapped.__name__ == "a"
    app = Starlette(routes=[Route("/a", wrapped)])
    assert await statuses(app, 2, "/a") == [200, 429]


# §6.3 FastAPI decorator -----------------------------------------------------------------------------------


async def test_s6_3_fastapi_throttled_decorator_and_dependency_forms() -> None:
    from traffik.decorators import throttled

    backend = InMemoryBackend()
    t1 = http_throttle("s63:a", "2/min", backend=backend)
    t2 = http_throttle("s63:b", "1/min", backend=backend)
    app = FastAPI()

    @app.get("/dec")
    @throttled(t1, t2)
    async def dec(q: int = 0) -> dict[str, int]:
        return {"q": q}

    @app.get("/dep", dependencies=[throttled(t1)])
    def dep() -> dict[str, Any]:
        return {}

    async with client(app) as http:
        first = await http.get("/dec?q=3")
        second = await http.get("/dec")
        assert first.json() == {"q": 3} and second.status_code == 429
        assert [(await http.get("/dep")).status_code for _ in range(3)] == [200, 200, 429]
    params = app.openapi()["paths"]["/dec"]["get"]["parameters"]
    assert [p["name"] for p in params] == ["q"]


# §6.4 middleware ------------------------------------------------------------------------------------------


async def test_s6_4_middleware_methods_cost_and_skip_handler() -> None:
    posts = http_throttle("s64:posts", "2/min")
    seen: list[bool] = []

    async def endpoint(request: Any) -> PlainTextResponse:
        seen.append(is_throttled(request))
        return PlainTextResponse("ok")

    app = middleware_app(
        [MiddlewareThrottle(posts, methods={"post"}, cost=2)],
        routes=[Route("/x", endpoint, methods=["GET", "POST"])],
        skip_handler=True,
    )
    async with client(app) as http:
        codes = [(await http.get("/x")).status_code for _ in range(3)]
        posted = [(await http.post("/x")).status_code for _ in range(2)]
    assert codes == [200, 200, 200] and posted == [200, 200]
    assert seen == [False, False, False, False, True]


async def test_s6_4_middleware_explicit_cost_zero_counts_nothing() -> None:
    t = http_throttle("s64:zero", "1/min")
    assert await statuses(middleware_app([MiddlewareThrottle(t, cost=0)]), 3) == [200, 200, 200]


async def test_s6_4_middleware_backend_from_the_app_lifespan_and_lifespan_passthrough() -> None:
    backend = InMemoryBackend(persistent=False)
    t = HTTPThrottle("s64:life", "1/min", registry=ThrottleRegistry())
    app = FastAPI(
        lifespan=backend.lifespan,
        middleware=[Middleware(ThrottleMiddleware, middleware_throttles=[MiddlewareThrottle(t)])],
    )

    @app.get("/x")
    async def x() -> dict[str, Any]:
        return {}

    assert statuses_with_lifespan(app, 2) == [200, 429]


async def test_s6_4_middleware_context_precedence() -> None:
    seen: list[Any] = []

    async def cost(conn: Any, ctx: Any) -> int:
        seen.append((ctx.get("a"), ctx.get("b"), ctx.get("c")))
        return 1

    t = http_throttle(
        "s64:ctx", "5/min", cost=cost, context={"a": "throttle", "b": "throttle", "c": "throttle"}
    )
    app = middleware_app(
        [MiddlewareThrottle(t, context={"a": "mt", "b": "mt"})], context={"a": "mw"}
    )
    assert await statuses(app, 1) == [200]
    assert seen == [("mt", "mt", "throttle")]


async def test_s6_4_mixed_plain_and_middleware_throttles_sorted() -> None:
    backend = InMemoryBackend()
    a = http_throttle("s64:a", "1/min", backend=backend)
    b = http_throttle("s64:b", "5/min", backend=backend)
    ws = websocket_throttle("s64:ws", "5/min", backend=backend)
    assert await statuses(middleware_app([a, MiddlewareThrottle(b), ws]), 2) == [200, 429]


async def test_s6_1_middleware_throttle_as_a_dependency_applies_its_filter() -> None:
    mt = MiddlewareThrottle(http_throttle("s61:mt", "1/min"), methods=["POST"])
    app = FastAPI()

    @app.api_route("/x", methods=["GET", "POST"])
    async def x(request: Request = Depends(mt)) -> dict[str, Any]:
        return {}

    async with client(app) as http:
        gets = [(await http.get("/x")).status_code for _ in range(3)]
        posts = [(await http.post("/x")).status_code for _ in range(2)]
    assert gets == [200, 200, 200] and posts == [200, 429]


# §7 context backends -------------------------------------------------------------------------------------


async def test_s7_dynamic_backend_follows_the_innermost_context() -> None:
    outer, inner = InMemoryBackend(namespace="outer"), InMemoryBackend(namespace="inner")
    t = HTTPThrottle("s7:dyn", "1/min", dynamic_backend=True, registry=ThrottleRegistry())
    out: list[int] = []

    async def body(request: Any) -> None:
        async with outer(close_on_exit=False, persistent=True):
            await t.hit(request, skip_handler=True)
            out.append(is_throttled(request))
            async with inner(close_on_exit=False, persistent=True):
                await t.hit(request, skip_handler=True)
                out.append(is_throttled(request))
            await t.hit(request, skip_handler=True)
            out.append(is_throttled(request))

    assert await statuses(starlette_app(body), 1) == [200]
    assert out == [False, False, True]


async def test_s7_dynamic_backend_without_any_backend_is_a_configuration_error() -> None:
    from traffik.exceptions import ConfigurationError

    t = HTTPThrottle("s7:none", "1/min", dynamic_backend=True, registry=ThrottleRegistry())

    async def body(request: Any) -> None:
        with pytest.raises(ConfigurationError):
            await t.hit(request)

    assert await statuses(starlette_app(body), 1) == [200]


async def test_s7_backend_app_stores_the_backend_on_the_app_at_call_time() -> None:
    from traffik.backends.base import get_throttle_backend

    backend = InMemoryBackend()
    app = Starlette()
    backend(app)
    assert get_throttle_backend(app) is backend
    t = HTTPThrottle("s7:app", "1/min", registry=ThrottleRegistry())
    app.router.routes.append(Route("/x", ok))

    async def endpoint(request: Any) -> PlainTextResponse:
        await t.hit(request)
        return PlainTextResponse("ok")

    app.router.routes[-1] = Route("/x", endpoint)
    assert await statuses(app, 2) == [200, 429]


# §8 error handlers ----------------------------------------------------------------------------------------


async def test_s8_circuit_breaker_api() -> None:
    from traffik import CircuitBreaker, CircuitState

    breaker = CircuitBreaker(failure_threshold=2, recovery_timeout=60.0, success_threshold=2)
    assert await breaker.allow_execution()
    await breaker.record_failure()
    await breaker.record_failure()
    assert breaker.is_open and breaker.state == CircuitState.OPEN
    info = await breaker.info()
    for key in ("state", "failure_count", "success_count", "opened_at", "probe_in_progress"):
        assert key in info
    assert not await breaker.allow_execution()


async def test_s8_failover_uses_the_spare_when_the_primary_fails() -> None:
    from traffik.error_handlers import failover

    primary, spare = primary_and_spare()
    t = http_throttle(
        "s8:failover",
        "1/min",
        backend=primary,
        on_error=failover(spare, max_retries=1, retry_delay=0),
    )
    with primary.failing(RuntimeError("down")):
        assert await statuses(fastapi_app(t), 2) == [200, 429]


async def test_s8_retry_succeeds_on_a_blip() -> None:
    from traffik.error_handlers import retry

    primary = FailingBackend(InMemoryBackend())
    t = http_throttle(
        "s8:retry", "1/min", backend=primary, on_error=retry(max_retries=2, retry_delay=0)
    )
    with primary.failing(RuntimeError("blip"), times=1):
        assert await statuses(fastapi_app(t), 1) == [200]


# §9.1 headers ---------------------------------------------------------------------------------------------


def test_s9_1_header_api() -> None:
    from traffik import DEFAULT_HEADERS_ALWAYS, DEFAULT_HEADERS_THROTTLED, Header, Headers

    assert Header("x").condition == "throttled" and Header("x").always.condition == "always"
    assert Header("x").when("always").always is not None
    assert hash(Header("x", when="always")) == hash(Header("x", when="always"))
    assert Header.DISABLE == ":___disabled___:"
    hs = Headers({"A": "1", "B": Header.LIMIT(when="always")})
    assert isinstance(hs["A"], Header) and "A" in hs and len(hs) == 2 and bool(hs)
    merged = hs | {"A": "2"}
    assert merged["A"].value == "2" and hs["A"].value == "1"
    hs |= {"C": "3"}
    assert "C" in hs
    assert pickle.loads(pickle.dumps(hs)).keys() == hs.keys()
    assert set(DEFAULT_HEADERS_ALWAYS) == {
        "X-RateLimit-Limit",
        "X-RateLimit-Remaining",
        "Retry-After",
    }
    assert set(DEFAULT_HEADERS_THROTTLED) == set(DEFAULT_HEADERS_ALWAYS)


async def test_s9_1_get_headers_and_set_headers_by_hand() -> None:
    from traffik import Header

    t = http_throttle("s91:hand", "2/min", headers=None)
    out: dict[str, Any] = {}

    async def endpoint(request: Any) -> PlainTextResponse:
        await t.hit(request)
        response = PlainTextResponse("ok")
        await t.set_headers(
            response,
            request,
            headers={
                "X-L": Header.LIMIT(when="always"),
                "X-R": Header.REMAINING(when="always"),
                "X-S": "s",
                "X-Secs": Header.RESET_SECONDS(when="always"),
            },
        )
        out.update(await t.get_headers(request, headers={"X-S": "s", "X-D": Header.DISABLE}))
        return response

    [response] = await answers(Starlette(routes=[Route("/x", endpoint)]), 1)
    assert response.headers["x-l"] == "2" and response.headers["x-r"] == "1"
    assert response.headers["x-s"] == "s" and response.headers["x-secs"] == "0"
    assert out == {"X-S": "s"}


async def test_s9_1_default_headers_on_allowed_and_429() -> None:
    responses = await answers(fastapi_app(http_throttle("s91:ietf", "2/min")), 3)
    assert responses[0].headers["ratelimit-policy"] == '"s91:ietf";q=2;w=60'
    assert responses[0].headers["ratelimit"].startswith('"s91:ietf";r=1;t=')
    assert responses[2].status_code == 429 and responses[2].headers["ratelimit"].startswith(
        '"s91:ietf";r=0;t='
    )


async def test_s9_1_legacy_headers() -> None:
    responses = await answers(
        fastapi_app(http_throttle("s91:legacy", "2/min", headers="legacy")), 3
    )
    assert responses[0].headers["x-ratelimit-limit"] == "2"
    assert responses[0].headers["x-ratelimit-remaining"] == "1"
    assert responses[2].headers["x-ratelimit-remaining"] == "0"
    assert int(responses[2].headers["x-ratelimit-reset"]) >= 1


# §9.2 exemptions ------------------------------------------------------------------------------------------


async def test_s9_2_exempted_and_unlimited_touch_no_backend() -> None:
    from traffik.rates import Rate

    backend = FailingBackend(InMemoryBackend())

    async def ident(conn: Any) -> Any:
        return EXEMPTED

    async def rate(conn: Any, ctx: Any) -> Rate:
        return Rate()

    async def cost(conn: Any, ctx: Any) -> int:
        return 0

    throttles = [
        http_throttle("s92:ex", "1/min", identifier=ident, backend=backend),
        http_throttle("s92:unl", rate, backend=backend),
        http_throttle("s92:unls", "unlimited", backend=backend),
        http_throttle("s92:cost", "1/min", cost=cost, backend=backend),
    ]
    for t in throttles:
        with backend.failing(RuntimeError("touched")):
            assert await statuses(fastapi_app(t), 3) == [200, 200, 200], t.uid


# §9.5 registry --------------------------------------------------------------------------------------------


def test_s9_5_registry_api() -> None:
    from traffik.exceptions import ConfigurationError
    from traffik.rules import Bypass

    registry = ThrottleRegistry()
    t = HTTPThrottle("s95:t", "1/min", registry=registry)
    assert registry.exists("s95:t") and "s95:t" in registry and registry.exist("s95:t")
    assert len(registry) == registry.count() == 1
    assert registry.get_throttle("s95:t") is t
    registry.add_rules("s95:t")
    with pytest.raises(ConfigurationError, match="nope"):
        registry.add_rules("nope", Bypass(path="/x"))
    rule = Bypass(path="/h")
    registry.add_rules("s95:t", rule)
    assert registry.get_rules("s95:t") == [rule]
    registry.unregister("s95:t")
    assert not registry.exists("s95:t") and registry.get_rules("s95:t") == []
    registry.clear()


async def test_s9_5_registry_disable_all() -> None:
    registry = ThrottleRegistry()
    t = http_throttle("s95:dis", "1/min", registry=registry)
    assert await registry.disable("s95:dis") is True
    assert t.is_disabled
    await registry.enable_all()
    assert not t.is_disabled
    await registry.disable_all()
    assert await statuses(fastapi_app(t), 2) == [200, 200]
    assert await registry.disable("missing") is False


# §9.6 costs ---------------------------------------------------------------------------------------------


async def test_s9_6_async_cost_function_and_per_call_override() -> None:
    async def cost(conn: Any, ctx: Any) -> int:
        return 2

    t = http_throttle("s96:cost", "4/min", cost=cost)
    assert await statuses(fastapi_app(t), 3) == [200, 200, 429]


# §9.7 rules -------------------------------------------------------------------------------------------------


async def test_s9_7_rules_and_bypass() -> None:
    from traffik import Bypass, Rule, bypass_if, throttle_if

    def is_admin(conn: Any) -> bool:
        return conn.headers.get("x-admin") == "1"

    async def only_tenant(conn: Any, ctx: Any) -> bool:
        return ctx.get("tenant") == "t"

    t = http_throttle(
        "s97:rules",
        "1/min",
        rules=[
            Rule(path="/api/", methods=["get"]),
            bypass_if(predicate=is_admin),
            throttle_if(predicate=only_tenant),
        ],
        context={"tenant": "t"},
    )
    app = FastAPI()

    @app.api_route("/{p:path}", methods=["GET", "POST"])
    async def anything(p: str, request: Request = Depends(t)) -> dict[str, Any]:
        return {}

    async with client(app) as http:
        assert [(await http.get("/other")).status_code for _ in range(2)] == [200, 200]
        assert [(await http.post("/api/x")).status_code for _ in range(2)] == [200, 200]
        assert [
            (await http.get("/api/x", headers={"x-admin": "1"})).status_code for _ in range(2)
        ] == [200, 200]
        assert [(await http.get("/api/x")).status_code for _ in range(2)] == [200, 429]
    rule = Rule(path="/a")
    assert await rule.check(_request("/a")) is True and await rule(_request("/b")) is False
    assert await Bypass(path="/a").check(_request("/a"), context={}) is False


def _request(path: str, method: str = "GET") -> Request:
    return Request(
        {"type": "http", "method": method, "path": path, "headers": [], "client": ("1.1.1.1", 1)}
    )


def test_s9_7_deprecated_aliases() -> None:
    from traffik.registry import Bypass, BypassThrottleRule, Rule, ThrottleRule

    with pytest.warns(DeprecationWarning):
        r = ThrottleRule(path="/a")
    with pytest.warns(DeprecationWarning):
        b = BypassThrottleRule(path="/a")
    assert isinstance(r, Rule) and isinstance(b, Bypass)


# §9.9 statistics ------------------------------------------------------------------------------------------


async def test_s9_9_stat_fields_and_types_alias() -> None:
    from traffik.types import StrategyStat
    from traffik.typing import StrategyStat as Same

    assert StrategyStat is Same
    t = http_throttle("s99:stat", "2/min")
    out: list[Any] = []

    async def body(request: Any) -> None:
        await t.hit(request)
        out.append(await t.stat(request))

    await statuses(starlette_app(body), 1)
    stat = out[0]
    assert isinstance(stat, StrategyStat)
    assert stat.hits_remaining == 1 and stat.wait_ms == 0 and stat.rate.limit == 2
    assert stat.key.startswith("s99%3Astat:") and stat.metadata["strategy"]


# §9.10 throttled handlers -----------------------------------------------------------------------------------


async def test_s9_10_backend_handler_for_http_and_handler_exceptions_propagate() -> None:
    from starlette.exceptions import HTTPException

    async def backend_handler(conn: Any, wait: float, throttle: Any, ctx: Any) -> None:
        raise HTTPException(418, "teapot")

    t = http_throttle("s910:bh", "1/min", backend=InMemoryBackend(handle_throttled=backend_handler))
    assert await statuses(fastapi_app(t), 2) == [200, 418]


# §12.14 Starlette decorator on a websocket endpoint -------------------------------------------------------


def test_s6_2_starlette_throttled_on_a_websocket_endpoint_limits_connection_attempts() -> None:
    from traffik import throttled

    t = websocket_throttle("s62:ws", "1/min")
    second_handshake_is_denied(Starlette(routes=[WebSocketRoute("/ws", throttled(t)(say_hi))]))


# -- second pass: §9 as each section shows it used ---------------------------------------------------


async def test_s9_1_header_predicates_and_resolvers_see_the_context() -> None:
    from traffik import Header

    def tier(conn: Any, stat: Any, ctx: Any) -> str:
        return ctx["tier"]

    def low(conn: Any, stat: Any, ctx: Any) -> bool:
        return stat.hits_remaining < 2

    t = http_throttle(
        "s91:ctx",
        "3/min",
        context={"tier": "gold"},
        headers={
            "X-Tier": Header(tier, when="always"),
            "X-Low": Header("yes", when=low),
            "X-Quota": Header("100;w=60"),
            "X-Plain": "p",
        },
    )
    responses = await answers(fastapi_app(t), 4)
    assert [r.status_code for r in responses] == [200, 200, 200, 429]
    assert all(r.headers["x-tier"] == "gold" for r in responses)
    assert all(r.headers["x-plain"] == "p" for r in responses)
    assert ["x-low" in r.headers for r in responses] == [False, True, True, True]
    assert ["x-quota" in r.headers for r in responses] == [False, False, True, True]


async def test_s9_1_update_headers_none_clears() -> None:
    t = http_throttle("s91:upd", "3/min")
    await t.update_headers(None)
    [response] = await answers(fastapi_app(t), 1)
    assert "ratelimit" not in response.headers and "ratelimit-policy" not in response.headers
    await t.update_headers("legacy")
    [response] = await answers(fastapi_app(t), 1)
    assert response.headers["x-ratelimit-remaining"] == "1"


async def test_s9_1_headers_in_middleware_on_allowed_responses() -> None:
    t = http_throttle("s91:mw", "2/min", headers="both")
    responses = await answers(middleware_app([MiddlewareThrottle(t)]), 3)
    assert responses[0].headers["x-ratelimit-remaining"] == "1"
    assert responses[0].headers["ratelimit-policy"] == '"s91:mw";q=2;w=60'
    assert responses[2].status_code == 429 and responses[2].headers["x-ratelimit-remaining"] == "0"


async def test_s9_1_headers_with_the_fastapi_decorator() -> None:
    from traffik.decorators import throttled

    t = http_throttle("s91:dec", "2/min", headers="legacy")
    app = FastAPI()

    @app.get("/x")
    @throttled(t)
    async def x() -> dict[str, Any]:
        return {}

    [response] = await answers(app, 1)
    assert response.headers["x-ratelimit-remaining"] == "1"


async def test_s9_1_headers_with_the_starlette_decorator() -> None:
    from traffik import throttled

    t = http_throttle("s91:sdec", "2/min", headers="legacy")

    @throttled(t)
    async def x(request: Any) -> PlainTextResponse:
        return PlainTextResponse("ok")

    [response] = await answers(Starlette(routes=[Route("/x", x)]), 1)
    assert response.headers["x-ratelimit-remaining"] == "1"


async def test_s9_3_stacked_dependencies_tightest_first_and_no_rollback() -> None:
    backend = InMemoryBackend()
    burst = http_throttle("s93:burst", "2/min", backend=backend)
    sustained = http_throttle("s93:sustained", "3/min", backend=backend)
    app = FastAPI()

    @app.get("/x", dependencies=[Depends(burst), Depends(sustained)])
    async def x() -> dict[str, Any]:
        return {}

    assert await statuses(app, 3) == [200, 200, 429]


async def test_s9_6_cost_larger_than_limit_from_a_function_is_refused() -> None:
    async def cost(conn: Any, ctx: Any) -> int:
        return 5

    t = http_throttle("s96:big", "3/min", cost=cost)
    assert await statuses(fastapi_app(t), 1) == [429]


async def test_s9_6_negative_cost_function_is_an_error_not_a_pass() -> None:
    async def cost(conn: Any, ctx: Any) -> int:
        return -1

    t = http_throttle("s96:neg", "3/min", cost=cost)
    transport = httpx.ASGITransport(app=fastapi_app(t), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        response = await http.get("/x")
    assert response.status_code == 500 and response.text == "Internal Server Error"


async def test_s9_7_registry_rules_via_another_throttle_and_dynamic_rules() -> None:
    from traffik import Bypass

    registry = ThrottleRegistry()
    backend = InMemoryBackend()
    target = HTTPThrottle("s97:target", "1/min", backend=backend, registry=registry)
    other = HTTPThrottle("s97:other", "1/min", backend=backend, registry=registry)
    other.add_rules("s97:target", Bypass(path="/x"))
    assert await statuses(fastapi_app(target), 3) == [200, 200, 200]


async def test_s9_7_sync_predicate_with_context_parameter() -> None:
    from traffik import Rule

    def only_paid(conn: Any, ctx: Any) -> bool:
        return ctx.get("plan") == "paid"

    t = http_throttle(
        "s97:sync", "1/min", rules=[Rule(predicate=only_paid)], context={"plan": "free"}
    )
    assert await statuses(fastapi_app(t), 3) == [200, 200, 200]


async def test_s9_7_websocket_rule_with_methods_is_skipped_for_websockets() -> None:
    from traffik import Rule

    ws_throttle = websocket_throttle("s97:ws", "1/min", rules=[Rule(path="/ws", methods=["GET"])])
    echoes_then_refuses(ws_throttle, check=True)


async def test_s9_8_skip_handler_per_hit_and_in_quota() -> None:
    t = http_throttle("s98:skip", "1/min")
    out: list[Any] = []

    async def body(request: Any) -> None:
        await t.hit(request, skip_handler=True)
        out.append(is_throttled(request))
        async with t.quota(request) as quota:
            quota.consume(cost=1, skip_handler=True)
        out.append(is_throttled(request))

    assert await statuses(starlette_app(body), 1) == [200]
    assert out == [False, True]


async def test_s9_10_ws_handler_may_close_with_1008() -> None:
    from starlette.websockets import WebSocketDisconnect

    async def close(conn: Any, wait: float, throttle: Any, ctx: Any) -> None:
        await conn.close(code=1008)

    ws_throttle = websocket_throttle("s910:close", "1/min", handle_throttled=close)
    with TestClient(ws_echo_app(ws_throttle, check=True)).websocket_connect("/ws") as ws:
        ws.send_text("a")
        assert ws.receive_text() == "echo: a"
        ws.send_text("b")
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_text()
    assert closed.value.code == 1008


async def test_s1_12_as_middleware() -> None:
    t = http_throttle("s112:asmw", "1/min")
    app = Starlette(routes=[Route("/x", ok)], middleware=[t.as_middleware()])
    assert await statuses(app, 2) == [200, 429]


async def test_s1_12_as_middleware_with_path_and_the_apps_backend() -> None:
    backend = InMemoryBackend(persistent=False)
    t = HTTPThrottle("s112:asmw2", "1/min", registry=ThrottleRegistry())
    app = FastAPI(lifespan=backend.lifespan, middleware=[t.as_middleware(path="/x")])

    @app.get("/x")
    async def x() -> dict[str, Any]:
        return {}

    @app.get("/y")
    async def y() -> dict[str, Any]:
        return {}

    with TestClient(app) as http:
        assert [http.get("/y").status_code for _ in range(2)] == [200, 200]
        assert [http.get("/x").status_code for _ in range(2)] == [200, 429]


async def test_s6_4_middleware_websocket_throttle_denies_the_handshake() -> None:
    ws_throttle = websocket_throttle("s64:wsmw", "1/min")
    app = middleware_app([MiddlewareThrottle(ws_throttle)], routes=[WebSocketRoute("/ws", say_hi)])
    assert second_handshake_is_denied(app).status_code == 429


async def test_s6_4_exception_handler_getter() -> None:
    from starlette.responses import JSONResponse

    async def handler(request: Any, exc: Any) -> JSONResponse:
        return JSONResponse({"got": exc.status_code}, status_code=exc.status_code)

    t = http_throttle("s64:getter", "1/min")
    app = middleware_app([MiddlewareThrottle(t)], exception_handler_getter=lambda exc: handler)
    _, response = await answers(app, 2)
    assert response.json() == {"got": 429}


async def test_s6_4_middleware_predicate_with_context() -> None:
    async def premium(conn: Any, ctx: Any) -> bool:
        return ctx.get("only") == conn.headers.get("x-plan")

    t = http_throttle("s64:pred", "1/min")
    app = middleware_app([MiddlewareThrottle(t, predicate=premium, context={"only": "free"})])
    async with client(app) as http:
        paid = [(await http.get("/x", headers={"x-plan": "paid"})).status_code for _ in range(2)]
        free = [(await http.get("/x", headers={"x-plan": "free"})).status_code for _ in range(2)]
    assert paid == [200, 200] and free == [200, 429]


async def test_s7_async_with_backend_is_the_context_backend() -> None:
    backend = InMemoryBackend()
    t = HTTPThrottle("s7:ctx", "1/min", registry=ThrottleRegistry())
    app = fastapi_app(t)
    async with backend:
        assert await statuses(app, 2) == [200, 429]


async def test_s7_lifespan_resets_a_non_persistent_backend_on_shutdown() -> None:
    backend = InMemoryBackend(persistent=False)
    t = http_throttle("s7:life", "1/min", backend=backend)
    app = fastapi_app(t, lifespan=backend.lifespan)
    assert statuses_with_lifespan(app, 2) == [200, 429]
    assert statuses_with_lifespan(app, 1) == [200]


async def test_s5_1_backend_identifier_applies_to_throttles_without_one() -> None:
    async def by_key(conn: Any) -> str:
        return conn.headers.get("x-key", "anon")

    t = http_throttle("s51:bid", "1/min", backend=InMemoryBackend(identifier=by_key))
    async with client(fastapi_app(t)) as http:
        a = await http.get("/x", headers={"x-key": "a"})
        b = await http.get("/x", headers={"x-key": "b"})
        a2 = await http.get("/x", headers={"x-key": "a"})
    assert (a.status_code, b.status_code, a2.status_code) == (200, 200, 429)


async def test_s5_4_cache_ids_false_calls_every_time_and_true_once_per_uid() -> None:
    calls: list[str] = []

    def ident(conn: Any) -> str:
        calls.append("x")
        return "me"

    cached = http_throttle("s54:c", "10/min", identifier=ident)
    fresh = http_throttle("s54:f", "10/min", identifier=ident, cache_ids=False)

    async def body(request: Any) -> None:
        await cached.hit(request)
        await cached.hit(request)
        n = len(calls)
        await fresh.hit(request)
        await fresh.hit(request)
        calls.append(str(n))

    await statuses(starlette_app(body), 1)
    assert calls == ["x", "x", "x", "1"]


def test_s5_2_ipv6_grouped_by_64_and_proxy_headers_flags() -> None:
    from traffik import ProxyHeaders

    for name in (
        "NONE",
        "FORWARDED",
        "X_FORWARDED_FOR",
        "X_REAL_IP",
        "TRUE_CLIENT_IP",
        "CF_CONNECTING_IP",
        "ALL",
    ):
        assert hasattr(ProxyHeaders, name)


# -- third pass: integration shapes -----------------------------------------------------------------


async def test_s6_2_starlette_throttled_on_an_http_endpoint_method() -> None:
    from starlette.endpoints import HTTPEndpoint

    from traffik import throttled

    t = http_throttle("s62:cls", "1/min")

    class Items(HTTPEndpoint):
        @throttled(t)
        async def get(self, request: Any) -> PlainTextResponse:
            return PlainTextResponse("ok")

    assert await statuses(Starlette(routes=[Route("/x", Items)]), 2) == [200, 429]


async def test_s6_3_fastapi_decorator_with_request_response_and_path_params() -> None:
    from traffik.decorators import throttled

    t = http_throttle("s63:params", "1/min", headers="legacy")
    app = FastAPI()

    @app.get("/items/{item_id}")
    @throttled(t)
    def item(item_id: int, request: Request, response: Response) -> dict[str, Any]:
        response.headers["x-mine"] = "1"
        return {"id": item_id, "path": request.url.path}

    async with client(app) as http:
        first = await http.get("/items/1")
        second = await http.get("/items/2")
    assert first.json() == {"id": 1, "path": "/items/1"} and first.headers["x-mine"] == "1"
    assert first.headers["x-ratelimit-remaining"] == "0"
    assert second.status_code == 429


def test_s6_3_fastapi_decorator_on_a_websocket_route() -> None:
    from traffik.decorators import throttled

    t = websocket_throttle("s63:ws", "1/min")
    app = FastAPI()

    @app.websocket("/ws")
    @throttled(t)
    async def ws(websocket: WebSocket) -> None:
        await say_hi(websocket)

    second_handshake_is_denied(app)


async def test_s1_9_route_template_keys_in_dependency_and_middleware() -> None:
    backend = InMemoryBackend()
    dep = http_throttle("s19:dep", "2/min", backend=backend)
    mw = http_throttle("s19:mw", "2/min", backend=backend)
    app = FastAPI(
        middleware=[
            Middleware(
                ThrottleMiddleware, middleware_throttles=[MiddlewareThrottle(mw, path="/m/")]
            )
        ]
    )

    @app.get("/d/{i}")
    async def d(i: int, request: Request = Depends(dep)) -> dict[str, Any]:
        return {}

    @app.get("/m/{i}")
    async def m(i: int) -> dict[str, Any]:
        return {}

    async with client(app) as http:
        assert [(await http.get(f"/d/{i}")).status_code for i in range(3)] == [200, 200, 429]
        assert [(await http.get(f"/m/{i}")).status_code for i in range(3)] == [200, 200, 429]


async def test_s1_9_middleware_unknown_paths_share_a_budget() -> None:
    app = middleware_app([MiddlewareThrottle(http_throttle("s19:404", "2/min"))])
    async with client(app) as http:
        codes = [(await http.get(f"/nope/{i}")).status_code for i in range(3)]
    assert codes == [404, 404, 429]


async def test_s1_9_use_method_false_and_per_route_false() -> None:
    backend = InMemoryBackend()
    shared = http_throttle("s19:m", "2/min", backend=backend, use_method=False)
    everywhere = http_throttle("s19:r", "2/min", backend=backend, per_route=False)
    app = FastAPI()

    @app.api_route("/a", methods=["GET", "POST"])
    async def a(request: Request = Depends(shared)) -> dict[str, Any]:
        return {}

    @app.get("/b")
    async def b(request: Request = Depends(everywhere)) -> dict[str, Any]:
        return {}

    @app.get("/c")
    async def c(request: Request = Depends(everywhere)) -> dict[str, Any]:
        return {}

    async with client(app) as http:
        assert [
            (await http.get("/a")).status_code,
            (await http.post("/a")).status_code,
            (await http.get("/a")).status_code,
        ] == [200, 200, 429]
        assert [
            (await http.get("/b")).status_code,
            (await http.get("/c")).status_code,
            (await http.get("/b")).status_code,
        ] == [200, 200, 429]


async def test_s1_9_context_scope_is_a_separate_budget() -> None:
    t = http_throttle("s19:scope", "1/min")
    out: list[bool] = []

    async def body(request: Any) -> None:
        for tenant in ("a", "b", "a"):
            await t.hit(request, context={"scope": tenant}, skip_handler=True)
            out.append(is_throttled(request))

    await statuses(starlette_app(body), 1)
    assert out == [False, False, True]


def test_s3_1_two_sockets_of_one_client_share_a_counter() -> None:
    ws_throttle = websocket_throttle("s31:share", "2/min")
    http = TestClient(ws_echo_app(ws_throttle, check=True))
    with http.websocket_connect("/ws") as one, http.websocket_connect("/ws") as two:
        one.send_text("a")
        assert one.receive_text() == "echo: a"
        two.send_text("b")
        assert two.receive_text() == "echo: b"
        one.send_text("c")
        assert one.receive_json()["type"] == "rate_limit"


async def test_s1_6_module_level_throttle_serves_a_new_app_per_test() -> None:
    t = HTTPThrottle("s16:module", "1/min", registry=ThrottleRegistry())
    for _ in range(2):
        backend = InMemoryBackend(persistent=False)
        app = fastapi_app(t, lifespan=backend.lifespan)
        assert statuses_with_lifespan(app, 2) == [200, 429]


async def test_s1_6_no_backend_anywhere_is_a_configuration_error() -> None:
    from traffik.exceptions import ConfigurationError

    t = HTTPThrottle("s16:none", "1/min", registry=ThrottleRegistry())

    async def body(request: Any) -> None:
        with pytest.raises(ConfigurationError, match="backend"):
            await t.hit(request)

    await statuses(starlette_app(body), 1)


async def test_s1_8_on_error_policy_for_identifier_failures() -> None:
    def broken(conn: Any) -> str:
        raise RuntimeError("no id")

    t = http_throttle("s18:ident", "1/min", identifier=broken, on_error="allow")
    assert await statuses(fastapi_app(t), 2) == [200, 200]
    t2 = http_throttle("s18:ident2", "1/min", identifier=broken)
    [response] = await answers(fastapi_app(t2), 1)
    assert response.status_code == 429 and response.headers["retry-after"] == "1"


async def test_s8_fallback_spelled_as_the_docs_do() -> None:
    from traffik.error_handlers import backend_fallback
    from traffik.exceptions import BackendError

    primary, spare = primary_and_spare()
    t = http_throttle(
        "s8:fb",
        "1/min",
        backend=primary,
        on_error=backend_fallback(backend=spare, fallback_on=(BackendError,)),
    )
    app = fastapi_app(t)
    with primary.failing(BackendError("down")):
        assert await statuses(app, 2) == [200, 429]
    # not in `on`: re-raised; a handler's own exception propagates (a 500)
    with primary.failing(KeyError("not a backend error")), pytest.raises(KeyError):
        await statuses(app, 1)


# -- fourth pass ----------------------------------------------------------------------------------


async def test_s6_2_no_connection_found_is_a_type_error() -> None:
    # deliberately a TypeError (docs/guides/decorators.md); traffik 1.2 raised ValueError
    from traffik import throttled

    t = http_throttle("s62:noconn", "1/min")

    @throttled(t)
    async def helper(x: int) -> int:
        return x

    with pytest.raises(TypeError, match="without a Request or WebSocket"):
        await helper(1)


@pytest.mark.parametrize("sort", ["cheap_last", None, False, lambda t: 0])
async def test_s6_4_sort_modes(sort: Any) -> None:
    backend = InMemoryBackend()
    a = http_throttle("s64:sa", "1/min", backend=backend)
    b = http_throttle("s64:sb", "5/min", backend=backend)
    app = middleware_app([MiddlewareThrottle(a, cost=1), MiddlewareThrottle(b, cost=2)], sort=sort)
    assert await statuses(app, 2) == [200, 429]


def test_s6_4_bad_sort_is_refused() -> None:
    t = HTTPThrottle("s64:bad", "1/min", registry=ThrottleRegistry())
    with pytest.raises(ValueError, match="sort"):
        ThrottleMiddleware(Starlette(), [t], sort="random")


async def test_s9_4_quota_as_the_docs_write_it() -> None:
    t = http_throttle("s94:q", "5/min")
    out: list[Any] = []

    async def body(request: Any) -> None:
        async with t.quota(request) as quota:
            await quota(cost=2)
            await quota(cost=1)
            out.append(quota.queued_cost)
            out.append(await quota.check(cost=5))
            async with quota.nested() as child:
                child(cost=1)
        out.append((await t.stat(request)).hits_remaining)

    assert await statuses(starlette_app(body), 1) == [200]
    assert out == [3, True, 1]


def test_s3_2_ws_hit_after_close_raises_connection_throttled() -> None:
    from traffik.exceptions import ConnectionThrottled

    t = websocket_throttle("s32:closed", "1/min")
    seen: list[Any] = []

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        await t.hit(websocket)
        await websocket.close()
        try:
            await t.hit(websocket)
        except ConnectionThrottled as exc:
            seen.append(exc.status_code)

    from starlette.websockets import WebSocketDisconnect

    app = Starlette(routes=[WebSocketRoute("/ws", endpoint)])
    with TestClient(app).websocket_connect("/ws") as ws, pytest.raises(WebSocketDisconnect):
        ws.receive_text()
    assert seen == [429]


def test_s5_2_forwarded_header_and_ipv6_grouping() -> None:
    from starlette.requests import Request as R

    from traffik import ProxyHeaders

    def req(peer: str, name: bytes, value: str) -> R:
        return R({"type": "http", "client": (peer, 1), "headers": [(name, value.encode())]})

    fwd = req(
        "10.0.0.1", b"forwarded", 'for=1.1.1.1, for="[2001:db8::1]:4711";proto=https, for=10.0.0.2'
    )
    assert (
        get_remote_address(
            fwd, trusted_proxies=["10.0.0.0/8"], proxy_headers=ProxyHeaders.FORWARDED
        )
        == "2001:db8::/64"
    )
    real = req("10.0.0.1", b"x-real-ip", "9.9.9.9")
    assert (
        get_remote_address(real, trusted_proxies=["10.0.0.1"], proxy_headers=ProxyHeaders.X_REAL_IP)
        == "9.9.9.9"
    )
    one = req("2001:db8::1", b"x", "")
    two = req("2001:db8::ffff", b"x", "")
    assert get_remote_address(one) == get_remote_address(two)
    with pytest.raises(ValueError):
        get_remote_address(one, trusted_proxies=["10.0.0.1"], proxy_headers=ProxyHeaders.ALL)


async def test_s6_3_stacked_fastapi_decorators_both_count() -> None:
    from traffik.decorators import throttled

    backend = InMemoryBackend()
    outer = http_throttle("s63:outer", "3/min", backend=backend)
    inner = http_throttle("s63:inner", "1/min", backend=backend)
    app = FastAPI()

    @app.get("/x")
    @throttled(outer)
    @throttled(inner)
    async def x(q: int = 0) -> dict[str, int]:
        return {"q": q}

    async with client(app) as http:
        first = await http.get("/x?q=1")
        second = await http.get("/x")
    assert first.json() == {"q": 1} and second.status_code == 429


async def test_s7_dynamic_backend_uses_the_per_hit_backends_on_error() -> None:
    backend = FailingBackend(InMemoryBackend(on_error="allow"))
    t = HTTPThrottle("s7:dynerr", "1/min", dynamic_backend=True, registry=ThrottleRegistry())

    async def body(request: Any) -> None:
        async with backend(close_on_exit=False, persistent=True):
            with backend.failing(RuntimeError("down")):
                await t.hit(request)
                await t.hit(request)

    assert await statuses(starlette_app(body), 1) == [200]


async def test_s4_1_a_traffik12_handler_delegating_to_connection_throttled() -> None:
    from traffik import connection_throttled

    async def handler(conn: Any, wait_ms: float, throttle: Any, ctx: Any) -> None:
        await connection_throttled(conn, wait_ms, throttle, {**ctx, "detail": "later"})

    t = http_throttle("s41:deleg", "1/min", handle_throttled=handler)
    _, response = await answers(fastapi_app(t), 2)
    assert response.status_code == 429 and response.json() == {"detail": "later"}
    assert response.headers["retry-after"] == "60"
