"""Several limits as one decision, through throttles: several rates, throttles combined by
the decorators and the middleware, refunds, and charging by outcome."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import BackgroundTasks, Depends, FastAPI, HTTPException, Request, Response
from fastapi.responses import StreamingResponse
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from traffik import HTTPThrottle, InMemoryBackend, ManualClock, Rate, ThrottleMiddleware, throttled
from traffik.exceptions import ConfigurationError, ConnectionThrottled
from traffik.fastapi import throttled as fastapi_throttled
from traffik.strategies import BUILTIN_STRATEGIES, FixedWindow, Strategy, TokenBucket

pytestmark = pytest.mark.anyio

STRATEGIES = [cls() for cls in BUILTIN_STRATEGIES]
IDS = [cls.__name__ for cls in BUILTIN_STRATEGIES]


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


def app_with(*throttles: HTTPThrottle) -> FastAPI:
    app = FastAPI()

    @app.get("/r", dependencies=[Depends(t) for t in throttles])
    async def route() -> dict[str, bool]:
        return {"ok": True}

    return app


# -- several rates in one throttle ------------------------------------------------------------


async def test_one_per_second_and_ten_per_minute() -> None:
    clock = ManualClock(1_700_000_040.0)
    throttle = HTTPThrottle("api", rate="1/s;10/min", backend=InMemoryBackend(clock=clock))
    async with client(app_with(throttle)) as http:
        assert (await http.get("/r")).status_code == 200
        for _ in range(20):  # refused by the second: nothing taken from the minute
            clock.advance(ms=40)
            assert (await http.get("/r")).status_code == 429
        clock.set(1_700_000_041.0)
        for _ in range(9):
            response = await http.get("/r")
            assert response.status_code == 200
            clock.advance(1)
        eleventh = await http.get("/r")
    assert eleventh.status_code == 429
    assert int(eleventh.headers["retry-after"]) >= 50  # the minute's wait, not the second's
    assert response.headers["ratelimit-policy"] == '"api:1/s";q=1;w=1, "api:10/min";q=10;w=60'
    assert response.headers["ratelimit"] == '"api:1/s";r=0;t=1, "api:10/min";r=0;t=51'
    # (the second still has its one unit: the minute refused, so the second took nothing)
    assert eleventh.headers["ratelimit"].startswith('"api:1/s";r=1;t=1, "api:10/min";r=0;t=5')


@pytest.mark.parametrize(
    "rate",
    ["2/min;3/hour", ["2/min", "3/hour"], [Rate.parse("2/min"), "3/hour"]],
    ids=["string", "list", "rates-and-strings"],
)
async def test_the_ways_to_give_several_rates(rate: Any) -> None:
    clock = ManualClock()
    throttle = HTTPThrottle("forms", rate=rate, backend=InMemoryBackend(clock=clock))
    assert throttle.rates == (Rate.parse("2/min"), Rate.parse("3/hour"))
    async with client(app_with(throttle)) as http:
        assert [(await http.get("/r")).status_code for _ in range(3)] == [200, 200, 429]
        clock.advance(61)
        assert [(await http.get("/r")).status_code for _ in range(2)] == [200, 429]


async def test_a_rate_callable_may_give_several_rates() -> None:
    def plan(request: Any, context: Any) -> str:
        return "1/min;2/hour" if request.headers.get("x-plan") != "pro" else "5/min"

    throttle = HTTPThrottle("plans", rate=plan, backend=InMemoryBackend(clock=ManualClock()))
    async with client(app_with(throttle)) as http:
        assert [(await http.get("/r")).status_code for _ in range(2)] == [200, 429]
        pro = [(await http.get("/r", headers={"x-plan": "pro"})).status_code for _ in range(6)]
    # (each rate is keyed by its place: the free minute's hit counts in the pro minute, as it
    # does when each plan has one rate)
    assert pro == [200] * 4 + [429] * 2


async def test_the_answer_names_the_rate_that_refused() -> None:
    seen: list[Any] = []

    async def handler(connection: Any, wait_ms: float, throttle: Any, context: Any) -> None:
        seen.append((context["rate"], wait_ms))
        raise ConnectionThrottled(429, "slow down", wait_period=1, rate=context["rate"])

    clock = ManualClock()
    throttle = HTTPThrottle(
        "named", rate="5/min;1/hour", backend=InMemoryBackend(clock=clock), handle_throttled=handler
    )
    async with client(app_with(throttle)) as http:
        await http.get("/r")
        await http.get("/r")
    assert seen == [(Rate.parse("1/hour"), 3_600_000)]


@pytest.mark.parametrize("strategy", STRATEGIES, ids=IDS)
async def test_stat_reports_the_binding_rate(strategy: Strategy) -> None:
    clock = ManualClock()
    throttle = HTTPThrottle(
        "stat", rate="10/min;3/hour", strategy=strategy, backend=InMemoryBackend(clock=clock)
    )
    app = FastAPI()

    @app.get("/r", dependencies=[Depends(throttle)])
    async def route(request: Request) -> dict[str, Any]:
        stat = await throttle.stat(request)
        assert stat is not None
        return {"rate": str(stat.rate), "left": stat.hits_remaining}

    async with client(app) as http:
        body = (await http.get("/r")).json()
    assert body == {"rate": "3/h", "left": 2}


def test_several_rates_need_a_built_in_strategy() -> None:
    async def mine(key: Any, rate: Rate, backend: Any, cost: int = 1) -> float:
        return 0

    with pytest.raises(ConfigurationError, match="several rates"):
        HTTPThrottle("x", rate="1/s;1/min", strategy=mine)
    with pytest.raises(ConfigurationError, match="the same rate is given twice"):
        HTTPThrottle("x", rate="1/s;1/s")


# -- refunds -----------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", STRATEGIES, ids=IDS)
async def test_a_refund_gives_every_rate_its_units_back(strategy: Strategy) -> None:
    clock = ManualClock()
    throttle = HTTPThrottle(
        "refund", rate="2/hour;5/day", strategy=strategy, backend=InMemoryBackend(clock=clock)
    )
    app = FastAPI()

    @app.get("/r", dependencies=[Depends(throttle)])
    async def route(request: Request, refund: bool = False) -> dict[str, bool]:
        if refund:
            await throttle.refund(request)
        return {"ok": True}

    async with client(app) as http:
        assert (await http.get("/r", params={"refund": True})).status_code == 200
        assert [(await http.get("/r")).status_code for _ in range(3)] == [200, 200, 429]


# -- throttles combined ----------------------------------------------------------------------------


def throttles(clock: ManualClock, strategy: Strategy) -> tuple[HTTPThrottle, HTTPThrottle]:
    backend = InMemoryBackend(clock=clock)
    per_second = HTTPThrottle("per-second", rate="2/s", backend=backend, strategy=strategy)
    per_day = HTTPThrottle("per-day", rate="3/day", backend=backend, strategy=strategy)
    return per_second, per_day


async def ok(request: Any) -> PlainTextResponse:
    return PlainTextResponse("ok")


def combined_apps(per_second: HTTPThrottle, per_day: HTTPThrottle) -> dict[str, Any]:
    starlette = Starlette(routes=[Route("/r", throttled(per_second, per_day)(ok))])
    fastapi = FastAPI()

    @fastapi.get("/r", dependencies=[fastapi_throttled(per_second, per_day)])
    async def route() -> dict[str, bool]:
        return {"ok": True}

    middleware = Starlette(
        routes=[Route("/r", ok)],
        middleware=[Middleware(ThrottleMiddleware, middleware_throttles=[per_second, per_day])],
    )
    return {"starlette": starlette, "fastapi": fastapi, "middleware": middleware}


@pytest.mark.parametrize("where", ["starlette", "fastapi", "middleware"])
@pytest.mark.parametrize(
    "strategy", [FixedWindow(), STRATEGIES[3]], ids=["FixedWindow", "TokenBucket"]
)
async def test_combined_throttles_are_one_decision(where: str, strategy: Strategy) -> None:
    clock = ManualClock()
    per_second, per_day = throttles(clock, strategy)
    app = combined_apps(per_second, per_day)[where]
    async with client(app) as http:
        codes = []
        for _ in range(3):
            codes.append((await http.get("/r")).status_code)
            clock.advance(1)
        refused = await http.get("/r")
        clock.advance(1)
        again = await http.get("/r")
    assert codes == [200, 200, 200]
    assert refused.status_code == 429 and again.status_code == 429
    # the day refused: told to wait for the day, not the second
    assert int(refused.headers["retry-after"]) > 3600
    stat = await per_second.stat(_request(), path="/r")
    assert stat is not None and stat.hits_remaining == 2  # the refusals took nothing


def _request() -> Request:
    return Request(
        {"type": "http", "method": "GET", "path": "/r", "headers": [], "client": ("127.0.0.1", 1)}
    )


@pytest.mark.parametrize("where", ["starlette", "fastapi", "middleware"])
@pytest.mark.parametrize(
    "strategy", [FixedWindow(), STRATEGIES[3]], ids=["FixedWindow", "TokenBucket"]
)
async def test_when_both_refuse_the_throttle_with_the_longest_wait_answers(
    where: str, strategy: Strategy
) -> None:
    """Both throttles spent: the 429 is the day's, whose wait is the answer, so its
    `RateLimit-Policy`, `RateLimit` and `Retry-After` describe one policy (not the second's
    policy with the day's wait)."""
    clock = ManualClock()
    per_second, per_day = throttles(clock, strategy)
    app = combined_apps(per_second, per_day)[where]
    async with client(app) as http:
        assert (await http.get("/r")).status_code == 200
        clock.advance(1)
        for _ in range(2):  # the second's 2 of 2, the day's second and third
            assert (await http.get("/r")).status_code == 200
        refused = await http.get("/r")  # both refuse now
    assert refused.status_code == 429
    assert refused.headers["ratelimit-policy"] == '"per-day";q=3;w=86400'
    wait = int(refused.headers["retry-after"])
    assert wait > 3600
    assert refused.headers["ratelimit"] == f'"per-day";r=0;t={wait}'


async def test_throttles_on_different_backends_give_back_on_refusal() -> None:
    clock = ManualClock()
    first = HTTPThrottle("first", rate="5/min", backend=InMemoryBackend(clock=clock))
    second = HTTPThrottle("second", rate="1/min", backend=InMemoryBackend(clock=clock))
    app = Starlette(routes=[Route("/r", throttled(first, second)(ok))])
    async with client(app) as http:
        assert [(await http.get("/r")).status_code for _ in range(3)] == [200, 429, 429]
    stat = await first.stat(_request(), path="/r")
    assert stat is not None and stat.hits_remaining == 4  # the two refusals were given back


# -- charging by outcome -----------------------------------------------------------------------------


def failed(outcome: Any) -> bool:
    return outcome.status_code >= 400


async def login(request: Request) -> JSONResponse:
    body = await request.json()
    if body.get("password") != "secret":
        return JSONResponse({"error": "wrong password"}, status_code=401)
    return JSONResponse({"token": "t"})


def login_apps(throttle: HTTPThrottle) -> dict[str, Any]:
    starlette = Starlette(routes=[Route("/login", throttled(throttle)(login), methods=["POST"])])
    middleware = Starlette(
        routes=[Route("/login", login, methods=["POST"])],
        middleware=[Middleware(ThrottleMiddleware, middleware_throttles=[throttle])],
    )
    decorated = FastAPI()

    @decorated.post("/login")
    @fastapi_throttled(throttle)
    async def fastapi_login(request: Request) -> Any:
        return await login(request)

    dependency = FastAPI()

    @dependency.post("/login")
    async def dependency_login(
        request: Request = Depends(throttle.charge_by_outcome),
    ) -> dict[str, str]:
        body = await request.json()
        if body.get("password") != "secret":
            raise HTTPException(401, "wrong password")
        return {"token": "t"}

    return {
        "starlette": starlette,
        "middleware": middleware,
        "fastapi-decorator": decorated,
        "fastapi-dependency": dependency,
    }


@pytest.mark.parametrize(
    "where", ["starlette", "middleware", "fastapi-decorator", "fastapi-dependency"]
)
@pytest.mark.parametrize("strategy", STRATEGIES, ids=IDS)
async def test_only_failed_logins_count(where: str, strategy: Strategy) -> None:
    throttle = HTTPThrottle(
        "login",
        rate="3/min",
        strategy=strategy,
        backend=InMemoryBackend(clock=ManualClock()),
        charge_when=failed,
        per_route=False,
    )
    app = login_apps(throttle)[where]
    async with client(app) as http:
        good = [await http.post("/login", json={"password": "secret"}) for _ in range(5)]
        bad = [await http.post("/login", json={"password": "guess"}) for _ in range(3)]
        blocked = await http.post("/login", json={"password": "secret"})
    assert [r.status_code for r in good] == [200] * 5  # successes are not counted
    assert [r.status_code for r in bad] == [401] * 3
    assert blocked.status_code == 429  # over the limit: refused before the endpoint runs


def send_mail() -> None:
    raise RuntimeError("smtp down")


async def failing_body() -> AsyncIterator[bytes]:
    yield b"part"
    raise RuntimeError("mid-stream")


def settling_dependency(throttle: HTTPThrottle, form: str) -> Any:
    """The FastAPI dependency that applies `throttle` and settles its charge, in `form`."""
    if form == "charge_by_outcome":
        return Depends(throttle.charge_by_outcome)
    return fastapi_throttled(throttle)


@pytest.mark.parametrize("form", ["charge_by_outcome", "throttled"])
@pytest.mark.parametrize(("method", "path"), [("POST", "/login"), ("GET", "/stream")])
async def test_a_failure_after_the_response_started_does_not_count(
    form: str, method: str, path: str
) -> None:
    """A login answered 200 whose background task fails, a 200 stream whose body fails: each
    counts as the status it started with, not as the failure that came after."""
    throttle = HTTPThrottle(
        "after", rate="3/min", backend=InMemoryBackend(clock=ManualClock()), charge_when=failed
    )
    app = FastAPI()
    guard = [settling_dependency(throttle, form)]

    @app.post("/login", dependencies=guard)
    async def login(tasks: BackgroundTasks) -> dict[str, str]:
        tasks.add_task(send_mail)
        return {"token": "t"}

    @app.get("/stream", dependencies=guard)
    async def stream() -> StreamingResponse:
        return StreamingResponse(failing_body())

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        codes = [(await http.request(method, path)).status_code for _ in range(5)]
    assert codes == [200] * 5


@pytest.mark.parametrize("form", ["charge_by_outcome", "throttled"])
async def test_a_status_set_on_the_injected_response_is_the_outcome(form: str) -> None:
    throttle = HTTPThrottle(
        "set-status", rate="3/min", backend=InMemoryBackend(clock=ManualClock()), charge_when=failed
    )
    app = FastAPI()

    @app.post("/login", dependencies=[settling_dependency(throttle, form)])
    async def login(password: str, response: Response) -> dict[str, str]:
        if password != "secret":
            response.status_code = 401
            return {"error": "wrong password"}
        return {"token": "t"}

    async with client(app) as http:
        good = [(await http.post("/login?password=secret")).status_code for _ in range(4)]
        bad = [(await http.post("/login?password=guess")).status_code for _ in range(4)]
    assert good == [200] * 4
    assert bad == [401, 401, 401, 429]


# -- refunds: what may be given back ----------------------------------------------------------------


def _client(ip: str = "203.0.113.9") -> Request:
    return Request(
        {"type": "http", "method": "GET", "path": "/r", "headers": [], "client": (ip, 1)}
    )


async def hits_left(throttle: HTTPThrottle, **options: Any) -> int:
    """What `throttle` has left for a new request of the client (`options` go to `stat`)."""
    stat = await throttle.stat(_client(), **options)
    assert stat is not None
    return stat.hits_remaining


@pytest.mark.parametrize("cost", [-2, 1.5, True, "2"])
async def test_a_refund_cost_must_be_a_whole_number(cost: Any) -> None:
    throttle = HTTPThrottle("refund-cost", rate="3/min", backend=InMemoryBackend())
    await throttle.hit(_client())
    with pytest.raises(ConfigurationError, match=f"cost={cost!r}"):
        await throttle.refund(_client(), cost=cost)
    assert await hits_left(throttle) == 2  # nothing taken, nothing given


@pytest.mark.parametrize("refunds", [[None, None], [3], [None, 1]], ids=["twice", "3", "1-more"])
async def test_a_plain_dependency_refund_gives_back_what_the_request_took_once(
    refunds: list[Any],
) -> None:
    throttle = HTTPThrottle("took", rate="5/min", backend=InMemoryBackend(clock=ManualClock()))
    app = FastAPI()

    @app.get("/r", dependencies=[Depends(throttle)])
    async def route(request: Request, refund: bool = False) -> dict[str, bool]:
        if refund:
            for cost in refunds:
                await throttle.refund(request, cost=cost)
        return {"ok": True}

    async with client(app) as http:
        for _ in range(3):
            await http.get("/r")
        await http.get("/r", params={"refund": True})  # took 1, gives back 1
        codes = [(await http.get("/r")).status_code for _ in range(4)]
    assert codes == [200, 200, 429, 429]


async def test_a_direct_hit_is_given_back_as_far_as_it_took() -> None:
    throttle = HTTPThrottle("took-direct", rate="5/min", backend=InMemoryBackend())
    request = _client()
    await throttle.hit(request, cost=2)
    await throttle.refund(request, cost=1)  # in parts: 1, then the 1 left, then nothing
    await throttle.refund(request, cost=4)
    await throttle.refund(request)
    assert await hits_left(throttle) == 5
    await throttle.hit(_client(), cost=3)
    await throttle.refund(_client())  # another request of the client: it took nothing
    assert await hits_left(throttle) == 2


async def test_a_refund_gives_nothing_for_a_request_another_throttle_charged() -> None:
    backend = InMemoryBackend()
    guard = HTTPThrottle("guard", rate="5/min", backend=backend, per_route=False)
    other = HTTPThrottle("other", rate="5/min", backend=backend, per_route=False)
    await other.hit(_client())
    request = _client()
    await guard.hit(request)
    await other.refund(request)  # `other` took nothing from this request
    assert await hits_left(other) == 4


async def test_a_refused_request_of_a_charge_when_throttle_gets_nothing_back() -> None:
    throttle = HTTPThrottle(
        "refused-refund",
        rate="1/min",
        backend=InMemoryBackend(),
        strategy=TokenBucket(),  # (a refusal takes nothing)
        charge_when=failed,
        skip_handler=True,
    )
    await throttle.hit(_client())
    refused = _client()
    await throttle.hit(refused)  # refused (skip_handler: the endpoint still runs)
    await throttle.refund(refused)  # it took nothing, so nothing is given back
    assert await hits_left(throttle) == 0


async def test_a_refund_after_the_window_rolled_over_gives_nothing_to_the_new_window() -> None:
    clock = ManualClock()
    throttle = HTTPThrottle(
        "rolled", rate="2/min", backend=InMemoryBackend(clock=clock), charge_when=failed
    )
    slow = _client()
    await throttle.hit(slow)  # charged in the first window
    clock.advance(61)
    for _ in range(2):
        await throttle.hit(_client())  # the new window is full
    await throttle.refund(slow)  # the first window's charge: not the new window's units
    assert await hits_left(throttle) == 0


def charged_on_failure(
    uid: str, kind: str, tmp_path: Any, **options: Any
) -> tuple[HTTPThrottle, ManualClock]:
    """A `charge_when=failed` throttle on a `kind` backend, and the clock that backend reads."""
    from traffik.backends.sqlite import SQLiteBackend

    clock = ManualClock()
    if kind == "memory":
        backend: Any = InMemoryBackend(clock=clock)
    else:
        backend = SQLiteBackend(tmp_path / "refunds.db", clock=clock)
    return HTTPThrottle(uid, backend=backend, charge_when=failed, **options), clock


BACKENDS = ["memory", "sqlite"]


@pytest.mark.parametrize("kind", BACKENDS)
@pytest.mark.parametrize("strategy", STRATEGIES, ids=IDS)
async def test_a_refund_gives_back_only_what_each_rate_still_holds(
    strategy: Strategy, kind: str, tmp_path: Any
) -> None:
    throttle, clock = charged_on_failure(
        "held", kind, tmp_path, rate="2/min;3/hour", strategy=strategy
    )
    slow = _client()
    await throttle.hit(slow)
    clock.advance(121)  # the minute's charge is gone (its window, or its refill), the hour's not
    for _ in range(2):
        await throttle.hit(_client())  # the minute is full, the hour too
    await throttle.refund(slow)
    stat = await throttle.stat(_client())
    assert stat is not None and stat.metadata is not None
    left = [each["hits_remaining"] for each in stat.metadata["rates"]]
    assert left == [0, 1]  # the hour got its unit back; the new minute got nothing


@pytest.mark.parametrize("kind", BACKENDS)
@pytest.mark.parametrize("strategy", STRATEGIES[3:], ids=IDS[3:])  # (the buckets and GCRA)
async def test_a_refund_gives_back_no_more_than_the_refill_left_of_the_charge(
    strategy: Strategy, kind: str, tmp_path: Any
) -> None:
    throttle, clock = charged_on_failure(
        "drained", kind, tmp_path, rate="10/min", strategy=strategy, cost=5
    )
    slow = _client()
    await throttle.hit(slow)  # 5 of a whole budget of 10: whole again in 30 s
    clock.advance(29)
    await throttle.hit(_client())
    # Without the slow request the budget was whole all along (what refilled past it was
    # lost): 5 left now. The slow charge holds what one more second refills: under a unit.
    await throttle.refund(slow)
    assert await hits_left(throttle) == 5


@pytest.mark.parametrize("kind", BACKENDS)
@pytest.mark.parametrize("strategy", STRATEGIES, ids=IDS)
async def test_a_refund_right_after_the_charge_gives_it_all_back(
    strategy: Strategy, kind: str, tmp_path: Any
) -> None:
    throttle, clock = charged_on_failure("whole", kind, tmp_path, rate="2/min", strategy=strategy)
    first, second = _client(), _client()
    await throttle.hit(first)
    await throttle.hit(second)
    clock.advance(ms=5)
    await throttle.refund(second)
    assert await hits_left(throttle) == 1


async def test_settling_after_a_fallback_gives_back_on_the_fallback_backend() -> None:
    from traffik.error_handlers import fallback
    from traffik.exceptions import BackendError
    from traffik.outcomes import Outcome, settle
    from traffik.testing.failing import FailingBackend

    primary, secondary = FailingBackend(InMemoryBackend()), InMemoryBackend()
    throttle = HTTPThrottle(
        "settle-fallback",
        rate="3/min",
        backend=primary,
        strategy=TokenBucket(),
        on_error=fallback(backend=secondary, fallback_on=(BackendError,)),
        charge_when=failed,
    )
    await throttle.hit(_client())  # one unit on the primary
    request = _client()
    with primary.failing(BackendError("store down")):
        await throttle.hit(request)  # decided, and charged, on the secondary
    await settle(request, Outcome(200))  # a success does not count: given back
    assert await hits_left(throttle) == 2  # on the primary
    assert await hits_left(throttle, backend=secondary) == 3


def send_messages(socket: Any, count: int, *, handshake: Any) -> None:
    """Opens /ws, served by `socket` behind `ThrottleMiddleware` with the `handshake` throttle,
    and sends `count` messages."""
    from starlette.routing import WebSocketRoute
    from starlette.testclient import TestClient

    app = Starlette(
        routes=[WebSocketRoute("/ws", socket)],
        middleware=[Middleware(ThrottleMiddleware, middleware_throttles=[handshake])],
    )
    with TestClient(app) as http, http.websocket_connect("/ws") as ws:
        for _ in range(count):
            ws.send_text("m")


def test_a_websocket_does_not_keep_a_charge_per_message() -> None:
    from traffik import WebSocketThrottle
    from traffik.outcomes import CHARGES_KEY

    backend = InMemoryBackend()
    handshake = WebSocketThrottle("ws-handshake", rate="100/min", backend=backend)
    messages = WebSocketThrottle("ws-messages", rate="10000/min", backend=backend)
    kept: list[int] = []

    async def socket(websocket: Any) -> None:
        await websocket.accept()
        for _ in range(100):
            await websocket.receive_text()
            await messages.hit(websocket)
            kept.append(len(websocket.scope["state"].get(CHARGES_KEY) or ()))
        await websocket.close()

    send_messages(socket, 100, handshake=handshake)
    # the handshake's charge and the latest message's: one per throttle, however many messages
    assert len(kept) == 100 and set(kept) == {2}


def test_a_websocket_message_is_refunded_as_its_own_request() -> None:
    from traffik import WebSocketThrottle
    from traffik.outcomes import CHARGES_KEY, REFUNDED_KEY

    backend = InMemoryBackend(clock=ManualClock())
    handshake = WebSocketThrottle("ws-open", rate="100/min", backend=backend)
    messages = WebSocketThrottle("ws-each", rate="3/min", backend=backend)
    seen: list[Any] = []

    async def left(websocket: Any) -> int:
        stat = await messages.stat(websocket)
        assert stat is not None
        return stat.hits_remaining

    async def socket(websocket: Any) -> None:
        await websocket.accept()
        state = websocket.scope["state"]
        for _ in range(20):  # each message charged, then given back: the budget stays whole
            await websocket.receive_text()
            await messages.hit(websocket)
            await messages.refund(websocket)
        seen.append(await left(websocket))
        seen.append((len(state[CHARGES_KEY]), len(state[REFUNDED_KEY])))
        await websocket.receive_text()
        await messages.hit(websocket)
        await websocket.receive_text()
        await messages.hit(websocket)
        await messages.refund(websocket)  # the latest message's charge
        await messages.refund(websocket)  # given back already: nothing more
        seen.append(await left(websocket))
        await websocket.close()

    send_messages(socket, 22, handshake=handshake)
    assert seen == [3, (1, 1), 2]


@pytest.mark.parametrize("noted_by", ["middleware", "charge_when", "dependency", "nothing"])
def test_a_websocket_message_hit_twice_by_one_throttle_gives_back_both(noted_by: str) -> None:
    """A message's charges of one throttle are kept together: `refund(websocket)` gives back
    every one of them (each at most what it took, once), and the next message starts over."""
    from fastapi import WebSocket
    from starlette.routing import WebSocketRoute
    from starlette.testclient import TestClient

    from traffik import WebSocketThrottle

    backend = InMemoryBackend(clock=ManualClock())
    # ("nothing": no charge noted, the units a message's hits took kept together all the same)
    charge_when = (lambda outcome: True) if noted_by not in ("middleware", "nothing") else None
    messages = WebSocketThrottle(
        f"ws-twice-{noted_by}", rate="10/min", backend=backend, charge_when=charge_when
    )
    opened = WebSocketThrottle(
        f"ws-twice-open-{noted_by}", rate="100/min", backend=backend, charge_when=charge_when
    )
    seen: list[Any] = []

    async def left(websocket: Any) -> None:
        stat = await messages.stat(websocket)
        assert stat is not None
        seen.append(stat.hits_remaining)

    async def socket(websocket: Any) -> None:
        await websocket.accept()
        await websocket.receive_text()  # two hits, both given back
        await messages.hit(websocket)
        await messages.hit(websocket, cost=2)
        await messages.refund(websocket)
        await left(websocket)
        await websocket.receive_text()  # two hits, kept
        await messages.hit(websocket)
        await messages.hit(websocket)
        await left(websocket)
        await websocket.receive_text()  # a new message: only its own charge is given back
        await messages.hit(websocket)
        await messages.refund(websocket)
        await messages.refund(websocket)
        await left(websocket)
        await websocket.receive_text()  # given back in part: the latest charge first
        await messages.hit(websocket, cost=2)
        await messages.hit(websocket, cost=3)
        await left(websocket)
        await messages.refund(websocket, cost=4)
        await left(websocket)
        await messages.refund(websocket)
        await messages.refund(websocket)
        await left(websocket)
        await websocket.close()

    if noted_by in ("dependency", "nothing"):  # the handshake's hit on the endpoint's socket
        app: Any = FastAPI()

        @app.websocket("/ws")
        async def endpoint(websocket: WebSocket = Depends(opened)) -> None:
            await socket(websocket)

    else:
        app = Starlette(
            routes=[WebSocketRoute("/ws", socket)],
            middleware=[Middleware(ThrottleMiddleware, middleware_throttles=[opened])],
        )
    with TestClient(app) as http, http.websocket_connect("/ws") as ws:
        for _ in range(4):
            ws.send_text("m")
    assert seen == [10, 8, 8, 3, 7, 8]


@pytest.mark.parametrize("earlier", ["handshake", "none"])
def test_a_websocket_message_refused_by_a_later_throttle_gives_back_the_others(
    earlier: str,
) -> None:
    from starlette.routing import WebSocketRoute
    from starlette.testclient import TestClient

    from traffik import WebSocketThrottle
    from traffik.quotas import QuotaContext

    clock = ManualClock()
    handshake = WebSocketThrottle("ws-opened", rate="100/min", backend=InMemoryBackend())
    many = WebSocketThrottle("ws-many", rate="10/min", backend=InMemoryBackend(clock=clock))
    few = WebSocketThrottle("ws-few", rate="2/min", backend=InMemoryBackend(clock=clock))
    seen: list[Any] = []

    async def socket(websocket: Any) -> None:
        await websocket.accept()
        for _ in range(4):  # 2 admitted; then `few` refuses, after `many` (its own store) took one
            await websocket.receive_text()
            async with QuotaContext(websocket) as quota:
                quota(many)
                quota(few)
            seen.append((quota.admitted, quota.applied_cost))
            await websocket.send_json({"type": "done"})
        stat = await many.stat(websocket)
        seen.append(stat.hits_remaining if stat is not None else None)
        await websocket.close()

    middleware = [Middleware(ThrottleMiddleware, middleware_throttles=[handshake])]
    app = Starlette(
        routes=[WebSocketRoute("/ws", socket)],
        middleware=middleware if earlier == "handshake" else [],
    )
    with TestClient(app) as http, http.websocket_connect("/ws") as ws:
        answers = []
        for _ in range(4):
            ws.send_text("m")
            answers.append(ws.receive_json()["type"])
            if answers[-1] == "rate_limit":
                assert ws.receive_json()["type"] == "done"
    assert answers == ["done", "done", "rate_limit", "rate_limit"]
    # each admitted message took 2 units (one per throttle); the refused ones took nothing
    assert seen == [(True, 2), (True, 2), (False, 0), (False, 0), 8]
