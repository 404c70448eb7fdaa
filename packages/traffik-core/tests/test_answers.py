"""What a client is told: a handler's own Response, headers that agree with the answer,
`ConnectionThrottled` in `HTTPException`'s order, and configuration errors kept loud."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient, WebSocketDenialResponse
from starlette.websockets import WebSocket

from traffik import (
    HTTPThrottle,
    InMemoryBackend,
    ManualClock,
    ThrottleMiddleware,
    WebSocketThrottle,
    throttled,
)
from traffik.exceptions import BackendError, ConfigurationError, ConnectionThrottled
from traffik.testing import FailingBackend

pytestmark = pytest.mark.anyio


def client_for(app: Any, **kwargs: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, **kwargs), base_url="http://t")


def fastapi_app(throttle: HTTPThrottle) -> FastAPI:
    app = FastAPI()

    @app.get("/r", dependencies=[Depends(throttle)])
    async def route() -> dict[str, bool]:
        return {"endpoint": True}

    return app


async def custom_answer(connection: Any, wait_ms: float, throttle: Any, context: Any) -> Response:
    return JSONResponse(
        {"error": "slow down", "retry_in_ms": wait_ms}, status_code=429, headers=context["headers"]
    )


# -- a Response returned by handle_throttled is the answer ------------------------------------


async def test_a_returned_response_is_sent_by_a_fastapi_dependency() -> None:
    ran: list[bool] = []
    throttle = HTTPThrottle(
        "answer",
        rate="1/min",
        backend=InMemoryBackend(clock=ManualClock()),
        handle_throttled=custom_answer,
    )
    app = FastAPI()

    @app.get("/r", dependencies=[Depends(throttle)])
    async def route() -> dict[str, bool]:
        ran.append(True)
        return {"endpoint": True}

    async with client_for(app) as client:
        assert (await client.get("/r")).status_code == 200
        response = await client.get("/r")
    assert response.status_code == 429
    assert response.json() == {"error": "slow down", "retry_in_ms": 60000}
    assert response.headers["ratelimit"] == '"answer";r=0;t=60'
    assert ran == [True], "the endpoint ran for a throttled request"


async def test_a_returned_response_is_sent_by_the_decorator_and_the_middleware() -> None:
    backend = InMemoryBackend()
    by_decorator = HTTPThrottle(
        "dec", rate="1/min", backend=backend, handle_throttled=custom_answer
    )
    by_middleware = HTTPThrottle(
        "mw", rate="1/min", backend=backend, handle_throttled=custom_answer
    )

    @throttled(by_decorator)
    async def decorated(request: Any) -> PlainTextResponse:
        return PlainTextResponse("endpoint")

    async def plain(request: Any) -> PlainTextResponse:
        return PlainTextResponse("endpoint")

    decorated_app = Starlette(routes=[Route("/", decorated)])
    middleware_app = Starlette(
        routes=[Route("/", plain)],
        middleware=[Middleware(ThrottleMiddleware, middleware_throttles=[by_middleware])],
    )
    for app in (decorated_app, middleware_app):
        async with client_for(app) as client:
            assert (await client.get("/")).text == "endpoint"
            response = await client.get("/")
        assert response.status_code == 429 and response.json()["error"] == "slow down"


def answer_with_a_dict(connection: Any, wait_ms: float, throttle: Any, context: Any) -> Any:
    return {"error": "slow down"}  # (meant as the body: not a Response)


async def test_a_handler_returning_neither_a_response_nor_none_refuses_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # It let the refused request through, silently: the limit was gone. The request gets
    # the default answer (429), and a warning names what the handler returned.
    backend = InMemoryBackend()

    def throttle(uid: str) -> HTTPThrottle:
        return HTTPThrottle(uid, rate="1/min", backend=backend, handle_throttled=answer_with_a_dict)

    async def plain(request: Any) -> PlainTextResponse:
        return PlainTextResponse("endpoint")

    apps = [
        fastapi_app(throttle("dict-dep")),
        Starlette(routes=[Route("/r", throttled(throttle("dict-dec"))(plain))]),
        Starlette(
            routes=[Route("/r", plain)],
            middleware=[Middleware(ThrottleMiddleware, middleware_throttles=[throttle("dict-mw")])],
        ),
    ]
    caplog.set_level(logging.WARNING, logger="traffik")
    for app in apps:
        async with client_for(app) as client:
            assert (await client.get("/r")).status_code == 200
            refused = await client.get("/r")
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "60"
    warned = [r.getMessage() for r in caplog.records if "returned a dict" in r.getMessage()]
    assert len(warned) == 3, caplog.text
    assert "return a Response" in warned[0] and "None" in warned[0]


def test_a_returned_response_denies_a_websocket_handshake() -> None:
    backend = InMemoryBackend()
    ws_throttle = WebSocketThrottle(
        "ws", rate="1/min", backend=backend, handle_throttled=custom_answer
    )

    async def socket(websocket: WebSocket) -> None:
        await ws_throttle.hit(websocket)
        await websocket.accept()
        await websocket.send_text("hello")
        await websocket.close()

    app = Starlette(routes=[WebSocketRoute("/ws", socket)])
    client = TestClient(app)
    with client.websocket_connect("/ws") as websocket:
        assert websocket.receive_text() == "hello"
    with pytest.raises(WebSocketDenialResponse) as denied, client.websocket_connect("/ws"):
        pass
    assert denied.value.status_code == 429


# -- headers agree with the answer ----------------------------------------------------------------


async def test_retry_after_and_ratelimit_t_tell_the_same_wait() -> None:
    throttle = HTTPThrottle(
        "min-wait", rate="1/min", backend=InMemoryBackend(), min_wait_period=90_000
    )
    async with client_for(fastapi_app(throttle)) as client:
        await client.get("/r")
        response = await client.get("/r")
    assert response.headers["retry-after"] == "90"
    assert response.headers["ratelimit"] == '"min-wait";r=0;t=90'


async def test_a_sub_second_period_is_never_advertised_as_another_rate() -> None:
    clock = ManualClock()
    throttle = HTTPThrottle("fast", rate="5/500ms", backend=InMemoryBackend(clock=clock))
    async with client_for(fastapi_app(throttle)) as client:
        response = await client.get("/r")
    assert response.headers["ratelimit-policy"] == '"fast";q=5'  # no w: not whole seconds
    whole = HTTPThrottle("whole", rate="10/2s", backend=InMemoryBackend(clock=clock))
    async with client_for(fastapi_app(whole)) as client:
        assert (await client.get("/r")).headers["ratelimit-policy"] == '"whole";q=10;w=2'


@pytest.mark.parametrize(("on_error", "status"), [("allow", 200), ("throttle", 429)])
async def test_an_outage_answer_makes_no_quota_claim(on_error: str, status: int) -> None:
    backend = FailingBackend(InMemoryBackend())
    throttle = HTTPThrottle(
        "outage", rate="5/min", backend=backend, on_error=on_error, headers="both"
    )
    async with client_for(fastapi_app(throttle)) as client:
        with backend.failing(BackendError("down")):
            response = await client.get("/r")
    assert response.status_code == status
    assert not {"ratelimit", "ratelimit-policy", "x-ratelimit-remaining"} & set(response.headers)
    if status == 429:
        assert response.headers["retry-after"] == "1"


# -- errors ------------------------------------------------------------------------------------


def test_connection_throttled_takes_http_exceptions_order() -> None:
    exc = ConnectionThrottled(429, "slow down")
    assert exc.status_code == 429 and exc.detail == "slow down"
    assert "Retry-After" not in exc.headers
    legacy = ConnectionThrottled(wait_period=5, status_code=503, detail="later", headers={"X": "1"})
    assert legacy.status_code == 503 and legacy.headers == {"X": "1", "Retry-After": "5"}
    assert (
        ConnectionThrottled(wait_period=2).detail == "Too Many Requests. Retry after 2 second(s)."
    )


@pytest.mark.parametrize(
    ("status", "detail", "headers", "wait", "rate"),
    [
        (429, "slow down", {"X": "1"}, 7, "5/min"),
        (503, None, None, 2, None),
        (429, None, {}, None, None),
        (418, "teapot", {"Retry-After": "9"}, 1.2, None),
    ],
)
def test_connection_throttled_of_is_the_constructor_by_name(
    status: int, detail: Any, headers: Any, wait: Any, rate: Any
) -> None:
    """`ConnectionThrottled.of` (the default handler's way) makes what the constructor makes
    from the same arguments by name, and refuses what it refuses."""
    made = ConnectionThrottled.of(status, detail, headers, wait, rate)
    built = ConnectionThrottled(status, detail, headers, wait_period=wait, rate=rate)
    fields = ("status_code", "detail", "headers", "wait_period", "rate", "args")
    assert [getattr(made, name) for name in fields] == [getattr(built, name) for name in fields]
    assert type(made) is ConnectionThrottled and str(made) == str(built)
    for bad in (0, 99, 600, True, "429"):
        with pytest.raises(ConfigurationError, match="must be an HTTP status"):
            ConnectionThrottled.of(bad, None, None, 1)  # type: ignore[arg-type]


async def test_a_bad_rate_from_a_callable_is_a_loud_configuration_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    throttle = HTTPThrottle(
        "bad-rate", rate=lambda connection, context: "5/fortnight", backend=InMemoryBackend()
    )
    caplog.set_level(logging.ERROR, logger="traffik")
    async with client_for(fastapi_app(throttle), raise_app_exceptions=False) as client:
        response = await client.get("/r")
    assert response.status_code == 500
    assert "fortnight" not in response.text
    [record] = [r for r in caplog.records if r.name == "traffik"]
    assert record.levelno == logging.ERROR
    assert "bad-rate" in record.getMessage() and "fortnight" in record.getMessage()
    with pytest.raises(ConfigurationError, match="unknown unit 'fortnight'"):
        async with client_for(fastapi_app(throttle)) as client:
            await client.get("/r")


async def test_a_bad_cost_from_a_callable_is_a_configuration_error() -> None:
    throttle = HTTPThrottle(
        "bad-cost", rate="5/min", cost=lambda connection, context: -2, backend=InMemoryBackend()
    )
    with pytest.raises(ConfigurationError, match="cost=-2 is negative"):
        async with client_for(fastapi_app(throttle)) as client:
            await client.get("/r")


def test_a_bad_rate_string_is_a_configuration_error_and_a_value_error() -> None:
    from traffik import Rate

    with pytest.raises(ConfigurationError) as caught:
        Rate.parse("5/fortnight")
    assert isinstance(caught.value, ValueError)


async def test_fallback_reraises_errors_it_was_not_given() -> None:
    from traffik.error_handlers import fallback

    def broken(connection: Any) -> str:
        raise LookupError("no user table")

    throttle = HTTPThrottle(
        "fb",
        rate="5/min",
        backend=InMemoryBackend(),
        identifier=broken,
        on_error=fallback(InMemoryBackend(namespace="spare")),
    )
    async with client_for(fastapi_app(throttle), raise_app_exceptions=False) as client:
        response = await client.get("/r")
    assert response.status_code == 500  # re-raised as documented, not a silent 429


async def test_handle_throttled_gets_the_request() -> None:
    seen: list[Any] = []

    async def handler(connection: Any, wait_ms: float, throttle: Any, context: Any) -> None:
        seen.append((type(connection).__name__, wait_ms))
        raise ConnectionThrottled(429, "custom")

    backend = InMemoryBackend(clock=ManualClock())
    throttle = HTTPThrottle("h", rate="1/min", backend=backend, handle_throttled=handler)
    async with client_for(fastapi_app(throttle)) as client:
        await client.get("/r")
        response = await client.get("/r")
    assert response.status_code == 429 and response.json() == {"detail": "custom"}
    assert seen == [("Request", 60000)]


@pytest.mark.parametrize("rate", ["2/min", "10/s;2/min"])
async def test_a_cost_no_wait_admits_says_so_in_the_429(rate: str) -> None:
    """Its `Retry-After` (one period) spaces out retries, none of which passes: the detail
    says that, instead of promising an admission."""
    throttle = HTTPThrottle(  # (a cost fixed above it is refused when the throttle is built)
        "never", rate=rate, cost=lambda request, context: 5, backend=InMemoryBackend()
    )
    async with client_for(fastapi_app(throttle)) as http:
        answer = await http.get("/r")
    assert answer.status_code == 429 and answer.headers["retry-after"] == "60"
    detail = answer.json()["detail"]
    assert "costs 5 units, more than the rate 2/min can ever admit" in detail, detail
    assert "Retry in" not in detail


async def test_a_cost_a_wait_admits_keeps_the_usual_detail_and_a_context_detail_wins() -> None:
    clock = ManualClock()
    throttle = HTTPThrottle("usual", rate="2/min", cost=2, backend=InMemoryBackend(clock=clock))
    own = HTTPThrottle(
        "own-detail",
        rate="2/min",
        cost=lambda request, context: 5,
        backend=InMemoryBackend(clock=clock),
        context={"detail": "plan limit reached"},
    )
    async with client_for(fastapi_app(throttle)) as http:
        assert (await http.get("/r")).status_code == 200
        assert (await http.get("/r")).json()["detail"].startswith("Too many requests. Retry in")
    async with client_for(fastapi_app(own)) as http:
        assert (await http.get("/r")).json()["detail"] == "plan limit reached"
