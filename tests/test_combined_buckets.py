"""Several throttles as one step, on every backend (memory, SQLite, Redis, Memcached): hits
that land on one bucket are charged together, and a shadow throttle never joins the enforced
all-or-nothing step."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any, Callable

import httpx
import pytest
from fastapi import Depends, FastAPI
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from traffik import HTTPThrottle, InMemoryBackend, ThrottleMiddleware, throttled
from traffik.backends.base import ThrottleBackend
from traffik.clock import ManualClock
from traffik.fastapi import throttled as fastapi_throttled
from traffik.strategies import FixedWindow, TokenBucket

pytestmark = pytest.mark.anyio


@pytest.fixture
async def backend(make_backend: Callable[..., ThrottleBackend]) -> AsyncIterator[ThrottleBackend]:
    backend = make_backend()
    async with backend():
        yield backend


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


async def ok(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


def connection() -> Request:
    scope = {"type": "http", "method": "GET", "path": "/r", "headers": [], "client": ("1.2.3.4", 1)}
    return Request(scope)


def combined(where: str, *throttles: HTTPThrottle) -> Any:
    if where == "starlette":
        return Starlette(routes=[Route("/r", throttled(*throttles)(ok))])
    if where == "middleware":
        return Starlette(
            routes=[Route("/r", ok)],
            middleware=[Middleware(ThrottleMiddleware, middleware_throttles=list(throttles))],
        )
    app = FastAPI()

    @app.get("/r", dependencies=[fastapi_throttled(*throttles)])
    async def route() -> str:
        return "ok"

    return app


# -- one bucket, hit twice in one step -------------------------------------------------------


@pytest.mark.parametrize("strategy", [TokenBucket(), FixedWindow()], ids=["TokenBucket", "Fixed"])
async def test_a_throttle_given_twice_counts_twice(backend: ThrottleBackend, strategy: Any) -> None:
    api = HTTPThrottle("api", rate="4/min", backend=backend, strategy=strategy)
    async with client(combined("fastapi", api, api)) as http:
        codes = [(await http.get("/r")).status_code for _ in range(4)]
    assert codes == [200, 200, 429, 429]


async def test_quota_hits_of_one_bucket_are_charged_together(backend: ThrottleBackend) -> None:
    throttle = HTTPThrottle("t", rate="5/min", backend=backend, strategy=TokenBucket())
    conn = connection()
    with pytest.raises(Exception) as refused:
        async with throttle.quota(conn) as quota:
            quota(cost=3, context={"step": "a"})
            quota(cost=3)
    assert getattr(refused.value, "status_code", None) == 429
    assert quota.admitted is False and quota.applied_cost == 0
    stat = await throttle.stat(conn)
    assert stat is not None and stat.hits_remaining == 5  # the refusal took nothing

    async with throttle.quota(conn) as quota:
        quota(cost=2, context={"step": "a"})
        quota(cost=2, skip_handler=True)
    assert quota.admitted is True and quota.applied_cost == 4
    stat = await throttle.stat(conn)
    assert stat is not None and stat.hits_remaining == 1


async def test_two_throttles_sharing_a_uid_share_one_charge(backend: ThrottleBackend) -> None:
    first = HTTPThrottle("shared", rate="3/min", backend=backend, strategy=TokenBucket())
    second = HTTPThrottle("shared", rate="3/min", backend=backend, strategy=TokenBucket())
    async with client(combined("starlette", first, second)) as http:
        codes = [(await http.get("/r")).status_code for _ in range(3)]
    assert codes == [200, 429, 429]  # 2 units a request: the second would need 4 of 3


# -- a shadow throttle beside an enforced one ------------------------------------------------


@pytest.mark.parametrize("where", ["starlette", "fastapi", "middleware"])
@pytest.mark.parametrize("order", ["enforced-first", "shadow-first"])
async def test_a_shadow_throttle_never_stops_the_enforced_one(
    backend: ThrottleBackend, where: str, order: str
) -> None:
    enforced = HTTPThrottle("enforced", rate="5/min", backend=backend)
    watched = HTTPThrottle("watched", rate="2/min", backend=backend, shadow=True)
    seen: list[str] = []
    watched.on_decision = lambda event: seen.append(event.outcome)
    pair = (enforced, watched) if order == "enforced-first" else (watched, enforced)
    async with client(combined(where, *pair)) as http:
        codes = [(await http.get("/r")).status_code for _ in range(8)]
    assert codes == [200] * 5 + [429] * 3
    # the shadow throttle counted the admitted requests and saw the refused ones not at all
    assert seen == ["allowed", "allowed", "shadow_refused", "shadow_refused", "shadow_refused"]


async def test_a_shadow_backend_with_an_enforcing_throttle(
    make_backend: Callable[..., ThrottleBackend],
) -> None:
    backend = make_backend(shadow=True)
    async with backend():
        enforced = HTTPThrottle("enforced", rate="3/min", backend=backend, shadow=False)
        watched = HTTPThrottle("watched", rate="1/min", backend=backend)
        async with client(combined("starlette", watched, enforced)) as http:
            codes = [(await http.get("/r")).status_code for _ in range(5)]
    assert codes == [200, 200, 200, 429, 429]


# -- several rates under concurrency, and refunds, on every backend ------------------------------


@pytest.mark.parametrize("strategy", [TokenBucket(), FixedWindow()], ids=["TokenBucket", "Fixed"])
@pytest.mark.parametrize("rate", [["10/h", "100/d"], ["10/h", "5/d"]], ids=["hour", "day"])
async def test_fifty_hits_at_once_admit_what_one_by_one_would(
    backend: ThrottleBackend, strategy: Any, rate: list[str]
) -> None:
    throttle = HTTPThrottle("burst", rate=rate, backend=backend, strategy=strategy)
    app = FastAPI()

    @app.get("/r", dependencies=[fastapi_throttled(throttle)])
    async def route() -> str:
        return "ok"

    binding_is_the_day = rate[1] == "5/d"
    async with client(app) as http:
        answers = await asyncio.gather(*(http.get("/r") for _ in range(50)))
    codes = sorted(response.status_code for response in answers)
    allowed = 5 if binding_is_the_day else 10
    assert codes == [200] * allowed + [429] * (50 - allowed)
    refused = next(response for response in answers if response.status_code == 429)
    wait = int(refused.headers["retry-after"])
    assert (wait > 3600) if binding_is_the_day else (wait <= 3600)  # the binding rate's wait
    stat = await throttle.stat("127.0.0.1", path="/r")  # (the client httpx's transport gives)
    assert stat is not None and str(stat.rate) == ("5/d" if binding_is_the_day else "10/h")
    hour, day = stat.metadata["rates"]
    # a refusal by one rate took nothing from the other
    assert (hour["hits_remaining"], day["hits_remaining"]) == (
        (5, 0) if binding_is_the_day else (0, 90)
    )


def _api_key(request: Any) -> str:
    return str(request.headers["x-api-key"])


def _plan(request: Any, context: Any) -> str:
    return "7/h" if request.headers["x-api-key"] == "pro" else "3/h"


def _size(request: Any, context: Any) -> int:
    return 2


@pytest.mark.parametrize("strategy", [TokenBucket(), FixedWindow()], ids=["TokenBucket", "Fixed"])
@pytest.mark.parametrize(
    ("options", "admitted"),
    [
        ({"rate": "5/h", "identifier": _api_key}, {"pro": 5, "free": 5}),
        ({"rate": ["5/h", "8/d"], "identifier": _api_key}, {"pro": 5, "free": 5}),
        ({"rate": _plan, "identifier": _api_key}, {"pro": 7, "free": 3}),
        ({"rate": "9/h", "cost": _size, "identifier": _api_key}, {"pro": 4, "free": 4}),
    ],
    ids=["an identifier", "two rates", "a rate callable", "a cost callable"],
)
async def test_fifty_hits_at_once_per_client_admit_exactly_the_limit(
    backend: ThrottleBackend, strategy: Any, options: dict[str, Any], admitted: dict[str, int]
) -> None:
    # A throttle with an identifier, several rates, a rate or a cost callable is decided by
    # the backend's deciders (in place, or in shared rounds): fifty hits at once from each
    # of two clients admit exactly what the client's limit allows, on every store.
    throttle = HTTPThrottle("per-client", backend=backend, strategy=strategy, **options)
    app = FastAPI()

    @app.get("/r", dependencies=[Depends(throttle)])
    async def route() -> str:
        return "ok"

    async with client(app) as http:
        answers = await asyncio.gather(
            *(http.get("/r", headers={"x-api-key": key}) for key in ["pro", "free"] * 50)
        )
    for key, expected in admitted.items():
        codes = [a.status_code for a, k in zip(answers, ["pro", "free"] * 50) if k == key]
        assert codes.count(200) == expected and codes.count(429) == 50 - expected, key
    made = [throttle._decider, *throttle._deciders_kept.values()]
    if isinstance(backend, InMemoryBackend):  # (decided in place, not by the strategy)
        assert any(on is backend and decide is not None for on, decide, _ in made)


@pytest.mark.parametrize("strategy", [TokenBucket(), FixedWindow()], ids=["TokenBucket", "Fixed"])
async def test_a_refund_never_gives_back_more_than_the_request_took(
    backend: ThrottleBackend, strategy: Any
) -> None:
    throttle = HTTPThrottle(
        "capped", rate="3/min", backend=backend, strategy=strategy, charge_when=lambda _: True
    )
    requests = [connection() for _ in range(3)]
    for request in requests:
        await throttle.hit(request)
    await throttle.refund(requests[0], cost=10)  # it took 1: the others' units stay taken
    stat = await throttle.stat(connection())
    assert stat is not None and stat.hits_remaining == 1


@pytest.mark.parametrize("strategy", [TokenBucket(), FixedWindow()], ids=["TokenBucket", "Fixed"])
async def test_a_request_is_refunded_once(backend: ThrottleBackend, strategy: Any) -> None:
    throttle = HTTPThrottle(
        "once", rate="4/min", backend=backend, strategy=strategy, charge_when=lambda _: True
    )
    requests = [connection() for _ in range(4)]
    for request in requests:
        await throttle.hit(request)
    for _ in range(3):
        await throttle.refund(requests[0])
    stat = await throttle.stat(connection())
    assert stat is not None and stat.hits_remaining == 1


async def test_a_charge_refunded_in_parts_gives_back_what_it_took(
    backend: ThrottleBackend,
) -> None:
    throttle = HTTPThrottle(
        "parts", rate="4/min", backend=backend, strategy=TokenBucket(), charge_when=lambda _: True
    )
    await throttle.hit(connection())  # another request's unit
    request = connection()
    await throttle.hit(request, cost=3)
    await throttle.refund(request, cost=2)  # in parts: 2, the 1 left, then nothing
    await throttle.refund(request, cost=2)
    await throttle.refund(request)
    stat = await throttle.stat(connection())
    assert stat is not None and stat.hits_remaining == 3  # the other request's unit stays taken


@pytest.mark.parametrize("strategy", [FixedWindow(), TokenBucket()], ids=["Fixed", "Token"])
async def test_a_refund_gives_back_only_what_each_rate_still_holds(
    make_backend: Callable[..., ThrottleBackend], strategy: Any
) -> None:
    """The first rate's charge lapses, the second's not: a refund gives back the second's.
    Its steps after the lapse must end within the first rate's period, on a loaded machine
    too, so that period is long: on a manual clock, a minute (a key the store drops on its
    own clock lives that long too); a FixedWindow window on Redis is a key's time to live,
    which only real time ends: 4 s there, slept."""
    real_time = make_backend.kind == "redis" and isinstance(strategy, FixedWindow)  # type: ignore[attr-defined]
    clock = None if real_time else ManualClock(1_700_000_000.0)
    backend = make_backend() if clock is None else make_backend(clock=clock)
    async with backend():
        throttle = HTTPThrottle(
            f"held-{uuid.uuid4().hex[:8]}",
            rate="2/4s;3/min" if real_time else "2/min;3/hour",
            strategy=strategy,
            backend=backend,
            charge_when=lambda outcome: outcome.status_code >= 400,
        )
        slow = connection()
        await throttle.hit(slow)
        # the first rate's charge is gone (on the store's clock), the second's not
        if clock is None:
            await asyncio.sleep(4.1)
        else:
            clock.advance(61)
        for _ in range(2):
            await throttle.hit(connection())  # the first rate is full, the second too
        await throttle.refund(slow)
        stat = await throttle.stat(connection())
    assert stat is not None and stat.metadata is not None
    assert [each["hits_remaining"] for each in stat.metadata["rates"]] == [0, 1]
