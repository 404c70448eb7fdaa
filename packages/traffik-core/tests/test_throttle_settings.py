"""A throttle's settings changed while it serves (`update_*`), identity caching and `use_method`
(spec: integration.md §1.1, §1.4, §1.11, §5.4)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI, Request
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket, WebSocketDisconnect

from traffik import HTTPThrottle, InMemoryBackend, WebSocketThrottle, get_wait
from traffik.exceptions import ConfigurationError, ConnectionThrottled
from traffik.rates import MAX_PERIOD_MS
from traffik.registry import ThrottleRegistry
from traffik.strategies import GCRA, TokenBucket
from traffik.testing import FailingBackend

pytestmark = pytest.mark.anyio


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def app_with(throttle: HTTPThrottle) -> FastAPI:
    app = FastAPI()

    @app.api_route("/items", methods=["GET", "POST"])
    async def items(request: Request = Depends(throttle)) -> dict[str, float]:
        return {"wait": get_wait(request)}

    return app


async def statuses(http: httpx.AsyncClient, n: int, method: str = "GET") -> list[int]:
    return [(await http.request(method, "/items")).status_code for _ in range(n)]


def throttle(uid: str, **options: Any) -> HTTPThrottle:
    options.setdefault("backend", InMemoryBackend())
    options.setdefault("rate", "2/min")
    return HTTPThrottle(uid, registry=ThrottleRegistry(), **options)


async def test_updates_apply_at_once_awaited_or_not() -> None:
    limited = throttle("set:rate")
    async with client(app_with(limited)) as http:
        limited.update_rate("1/min")
        assert await statuses(http, 2) == [200, 429]
        await limited.update_rate("5/min")
        assert await statuses(http, 1) == [200]
    assert str(limited.rate) == str(limited.static_rate) == "5/min"


async def test_a_refused_update_keeps_the_old_setting() -> None:
    limited = throttle("set:refused", rate="2/min", cost=2)
    with pytest.raises(ConfigurationError, match="cost=2 exceeds"):
        await limited.update_rate("1/min")
    with pytest.raises(ConfigurationError, match="cost=3 exceeds"):
        limited.update_cost(3)
    with pytest.raises(ConfigurationError, match="cost=2 exceeds"):
        limited.update_strategy(TokenBucket(burst_size=1))
    assert (str(limited.rate), limited.cost, type(limited.strategy).__name__) == (
        "2/min",
        2,
        "FixedWindow",
    )
    with pytest.raises(ConfigurationError, match="min_wait_period=-1"):
        await limited.update_min_wait_period(-1)
    with pytest.raises(ConfigurationError, match="on_error='sometimes'"):
        await limited.update_error_handler("sometimes")
    with pytest.raises(ConfigurationError, match="identifier=42"):
        limited.update_identifier(42)  # type: ignore[arg-type]


async def test_update_strategy_and_cost() -> None:
    limited = throttle("set:strategy", rate="4/min")
    async with client(app_with(limited)) as http:
        await limited.update_cost(2)
        assert await statuses(http, 3) == [200, 200, 429]
        await limited.update_strategy(GCRA())
        await limited.update_cost(lambda request, context: 4)
        assert limited.dynamic_cost
        assert await statuses(http, 2) == [200, 429]


@pytest.mark.parametrize("cache_refusals", [True, False])
async def test_a_new_strategy_is_not_refused_by_the_old_ones_refusals(cache_refusals: bool) -> None:
    # A backend that remembers refused clients answers a client refused a moment ago without
    # the store; the new strategy keeps state of its own, which has not refused anyone.
    limited = throttle(
        "set:strategy-refusals",
        rate="3/min",
        backend=InMemoryBackend(cache_refusals=cache_refusals),
    )
    async with client(app_with(limited)) as http:
        assert await statuses(http, 4) == [200, 200, 200, 429]
        await limited.update_strategy(GCRA())
        assert await statuses(http, 4) == [200, 200, 200, 429]


async def test_update_backend_and_dynamic_backends() -> None:
    first, second = InMemoryBackend(namespace="one"), InMemoryBackend(namespace="two")
    limited = throttle("set:backend", backend=first, rate="1/min")
    async with client(app_with(limited)) as http:
        assert await statuses(http, 2) == [200, 429]
        await limited.update_backend(second)
        assert await statuses(http, 2) == [200, 429]
        limited.update_backend("memory://three")
        assert limited.backend is not None and limited.backend.namespace == "three"
    with pytest.raises(ConfigurationError, match="not a ThrottleBackend"):
        limited.update_backend(object())  # type: ignore[arg-type]
    dynamic = throttle("set:dynamic", backend=None, dynamic_backend=True)
    assert dynamic.is_dynamic and not dynamic.use_fixed_backend
    with pytest.raises(ConfigurationError, match="dynamic_backend=True"):
        dynamic.update_backend(first)


async def test_update_identifier_handler_error_handler_and_min_wait() -> None:
    limited = throttle("set:reactions", rate="1/min")
    seen: list[float] = []

    async def record(connection: Any, wait_ms: float, throttle: Any, context: Any) -> None:
        seen.append(wait_ms)

    async with client(app_with(limited)) as http:
        await limited.update_identifier(lambda request: request.headers.get("x-user", "anon"))
        await limited.update_handle_throttled(record)
        await limited.update_min_wait_period(120_000)
        first = await http.get("/items", headers={"x-user": "a"})
        second = await http.get("/items", headers={"x-user": "a"})
        other = await http.get("/items", headers={"x-user": "b"})
        limited.update_handle_throttled(None)
        assert await statuses(http, 1) == [200]  # "anon" is a new client
        assert (await http.get("/items", headers={"x-user": "a"})).status_code == 429
    # min_wait_period lengthens a throttled wait only: allowed hits stay at 0.
    assert (first.json(), other.json()) == ({"wait": 0.0}, {"wait": 0.0})
    assert second.status_code == 200 and second.json() == {"wait": 120_000}
    assert seen == [120_000]
    await limited.update_error_handler("allow")
    assert limited.on_error == "allow"


@pytest.mark.parametrize(
    "bad", [float("inf"), float("-inf"), float("nan"), 1e300, MAX_PERIOD_MS + 1, -1, "1"]
)
async def test_min_wait_period_is_finite_and_bounded(bad: Any) -> None:
    with pytest.raises(ConfigurationError) as built:
        throttle("set:min-wait-bad", min_wait_period=bad)
    message = str(built.value)
    assert f"min_wait_period={bad!r}" in message
    assert f"from 0 to {MAX_PERIOD_MS} (MAX_PERIOD_MS" in message
    limited = throttle("set:min-wait-update", min_wait_period=5_000)
    with pytest.raises(ConfigurationError, match="MAX_PERIOD_MS"):
        limited.update_min_wait_period(bad)
    assert limited.min_wait_period == 5_000


async def test_the_longest_min_wait_period_is_told_in_whole_seconds() -> None:
    longest = throttle("set:min-wait-max", rate="1/min", min_wait_period=MAX_PERIOD_MS)
    longest.update_headers("both")
    failing = FailingBackend(InMemoryBackend())
    down = throttle(
        "set:min-wait-down", backend=failing, on_error="throttle", min_wait_period=MAX_PERIOD_MS
    )
    failing.fail()
    seconds = str(MAX_PERIOD_MS // 1000)
    async with client(app_with(longest)) as http:
        allowed, refused = await http.get("/items"), await http.get("/items")
    async with client(app_with(down)) as http:
        policy = await http.get("/items")
    assert allowed.status_code == 200 and allowed.headers["x-ratelimit-reset"] == "60"
    assert refused.status_code == policy.status_code == 429
    assert refused.headers["retry-after"] == policy.headers["retry-after"] == seconds
    assert refused.headers["ratelimit"] == f'"set:min-wait-max";r=0;t={seconds}'
    assert refused.headers["x-ratelimit-reset"] == seconds


async def test_a_cost_above_the_limit_fails_at_construction_or_waits_one_period() -> None:
    with pytest.raises(ConfigurationError) as built:
        throttle("set:big", rate="2/min", cost=5)
    assert "cost=5 exceeds what rate '2/min' with FixedWindow can ever admit (2)" in str(
        built.value
    )
    with pytest.raises(ConfigurationError, match="cost=3 exceeds"):
        throttle("set:big-bucket", rate="5/min", cost=3, strategy=TokenBucket(burst_size=2))
    # A cost function's cost is known per request: above the limit, that request is refused
    # with one full period's wait and takes nothing.
    per_request = throttle(
        "set:big-fn", rate="2/min", cost=lambda request, context: int(request.query_params["c"])
    )
    async with client(app_with(per_request)) as http:
        too_big = await http.get("/items", params={"c": 5})
        after = [(await http.get("/items", params={"c": 1})).status_code for _ in range(3)]
    assert too_big.status_code == 429 and too_big.headers["retry-after"] == "60"
    assert after == [200, 200, 429]


async def test_identities_are_cached_per_connection_and_uid() -> None:
    calls: list[str] = []

    def identify(connection: Any) -> str:
        calls.append("id")
        return "client"

    backend = InMemoryBackend()
    cached = WebSocketThrottle("set:ws", rate="10/min", backend=backend, identifier=identify)
    fresh = WebSocketThrottle(
        "set:ws-fresh", rate="10/min", backend=backend, identifier=identify, cache_ids=False
    )

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            while True:
                await websocket.receive_text()
                await cached.hit(websocket)
                await websocket.send_text("ok")
        except WebSocketDisconnect:
            pass

    app = Starlette(routes=[WebSocketRoute("/ws", endpoint)])
    with TestClient(app) as http, http.websocket_connect("/ws") as socket:
        for _ in range(3):
            socket.send_text("hi")
            assert socket.receive_text() == "ok"
    assert calls == ["id"]  # once for the socket's three messages

    async def unused() -> Any:
        raise AssertionError("admitted: nothing is sent or received")

    socket = WebSocket(
        {"type": "websocket", "path": "/", "headers": [], "state": {}}, unused, unused
    )
    await fresh.hit(socket)
    await fresh.hit(socket)
    assert calls == ["id", "id", "id"]


async def test_use_method_false_gives_every_method_one_budget() -> None:
    shared = throttle("set:methods", rate="2/min", use_method=False)
    split = throttle("set:split", rate="1/min")
    async with client(app_with(shared)) as http:
        assert await statuses(http, 1) == [200]
        assert await statuses(http, 2, method="POST") == [200, 429]
    async with client(app_with(split)) as http:
        assert await statuses(http, 2) == [200, 429]
        assert await statuses(http, 1, method="POST") == [200]
    assert not shared.use_method and split.use_method
    state = await shared.stat("127.0.0.1", path="/items", method="DELETE")
    assert state is not None and state.hits_remaining == 0  # any method names the bucket


async def test_hit_returns_the_connection_and_raises_429() -> None:
    limited = throttle("set:direct", rate="1/min")
    request = Request({"type": "http", "method": "GET", "path": "/", "headers": []})
    assert await limited(request) is request
    with pytest.raises(ConnectionThrottled) as caught:
        await limited.hit(request)
    assert caught.value.status_code == 429 and caught.value.wait_period == 60


def test_rate_and_cost_callables_must_take_connection_and_context() -> None:
    backend = InMemoryBackend()
    for bad in (lambda connection: "5/min", lambda: "5/min"):
        with pytest.raises(ConfigurationError, match=r"rate=.*\(connection, context\)"):
            HTTPThrottle("callables", rate=bad, backend=backend)
        with pytest.raises(ConfigurationError, match=r"cost=.*\(connection, context\)"):
            HTTPThrottle("callables", rate="5/min", cost=bad, backend=backend)
    throttle = HTTPThrottle("callables", rate="5/min", backend=backend)
    with pytest.raises(ConfigurationError, match=r"rate=.*\(connection, context\)"):
        throttle.update_rate(lambda connection: "1/min")
    for good in (lambda c, x: "5/min", lambda *args: "5/min", lambda c, x=None, y=1: "5/min"):
        HTTPThrottle("callables", rate=good, backend=backend)


@pytest.mark.parametrize(
    "flag", ["per_route", "skip_handler", "cache_ids", "dynamic_rules", "dynamic_backend", "shadow"]
)
@pytest.mark.parametrize("value", ["false", "no", 2, 0.0])
def test_on_off_settings_take_a_bool_and_refuse_a_string(flag: str, value: object) -> None:
    """`per_route="false"` (an environment variable read as is) would be true."""
    with pytest.raises(ConfigurationError) as info:
        HTTPThrottle("flags", rate="5/s", **{flag: value})
    assert f"{flag}={value!r} must be True or False" in str(info.value)
    assert "HTTPThrottle('flags')" in str(info.value)


@pytest.mark.parametrize("value", [True, False, 1, 0])
def test_on_off_settings_take_true_false_one_and_zero(value: object) -> None:
    throttle = HTTPThrottle("flags", rate="5/s", per_route=value, shadow=value, skip_handler=value)
    assert throttle.per_route is bool(value) and throttle.shadow is bool(value)
    assert throttle.skip_handler is bool(value)


@pytest.mark.parametrize("flag", ["skip_handler", "shadow"])
def test_a_middleware_throttles_on_off_settings_refuse_a_string(flag: str) -> None:
    from traffik.middleware import MiddlewareThrottle

    throttle = HTTPThrottle("mw-flags", rate="5/s")
    with pytest.raises(ConfigurationError, match=f"{flag}='false' must be True or False"):
        MiddlewareThrottle(throttle, path="/api/", **{flag: "false"})
    assert getattr(MiddlewareThrottle(throttle, **{flag: None}), flag) is None


def test_an_on_error_handler_of_the_wrong_shape_fails_when_given() -> None:
    """`on_error=lambda c: 0` made every store failure a 500 logged as "the handler decided"."""
    with pytest.raises(ConfigurationError) as info:
        HTTPThrottle("shapes", rate="5/s", on_error=lambda connection: 0)
    assert "on_error=" in str(info.value)
    assert "is called as (connection, exc_info)" in str(info.value)
    with pytest.raises(ConfigurationError, match=r"on_error=.*\(connection, exc_info\)"):
        InMemoryBackend(on_error=lambda: 0)

    async def handler(connection: Any, exc_info: Any) -> float:
        return 0.0

    assert HTTPThrottle("shapes", rate="5/s", on_error=handler).on_error is handler


@pytest.mark.parametrize(
    ("name", "value", "shape"),
    [
        ("identifier", lambda: "client", "(connection)"),
        ("handle_throttled", lambda request, response, pexpire: None, "(connection, wait_ms"),
        ("identifier", "client-ip", "must be a function called as (connection)"),
    ],
)
def test_a_backends_default_callables_are_checked_as_a_throttles(
    name: str, value: Any, shape: str
) -> None:
    """A backend's default `identifier` and `handle_throttled` are called as a throttle's
    own: one of the wrong shape made every request a 429, or a 500 at the first refusal."""
    with pytest.raises(ConfigurationError) as info:
        InMemoryBackend(**{name: value})
    assert f"{name}=" in str(info.value) and shape in str(info.value)
