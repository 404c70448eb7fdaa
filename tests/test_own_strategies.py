"""A strategy of your own (traffik 1.2's `async (key, rate, backend, cost) -> wait_ms`, or a
`Strategy` that decides itself) beside built-in ones, on every backend: it cannot give units
back, so it is decided after the throttles that can, refunds and `charge_when` refuse it, and
what it keeps is logged once, never as a traceback per request."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any, Callable

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from traffik import HTTPThrottle, ThrottleMiddleware, throttled
from traffik.backends.base import ThrottleBackend
from traffik.decision import Decision
from traffik.exceptions import ConfigurationError
from traffik.rates import Rate
from traffik.strategies import Strategy, TokenBucket

pytestmark = pytest.mark.anyio

CLIENT = "203.0.113.7"


class Counting(Strategy):
    """A strategy of your own that decides itself: a counter, as `FixedWindow` keeps one, that
    no backend knows how to give units back to."""

    name, suffix = "counting", ":counting"

    def __init__(self) -> None:
        super().__init__()
        self.keys: list[str] = []

    async def decide(
        self, key: Any, rate: Rate, backend: ThrottleBackend, cost: int = 1
    ) -> Decision:
        counter = backend.get_key(key) + self.suffix
        self.keys.append(counter)
        count = await backend.increment_with_ttl(counter, amount=cost, ttl=rate.expire // 1000)
        if count > rate.limit:
            return Decision(False, rate.expire, 0, rate.expire, rate.limit)
        return Decision(True, 0, rate.limit - count, rate.expire, rate.limit)


def function() -> Any:
    """traffik 1.2's strategy function, which answers a wait only; `keys` are its counters."""
    keys: list[str] = []

    async def strategy(key: Any, rate: Rate, backend: ThrottleBackend, cost: int = 1) -> float:
        counter = backend.get_key(key) + ":function"
        keys.append(counter)
        count = await backend.increment_with_ttl(counter, amount=cost, ttl=rate.expire // 1000)
        return float(rate.expire) if count > rate.limit else 0.0

    strategy.keys = keys  # type: ignore[attr-defined]
    return strategy


OWN = {"function": function, "Strategy subclass": Counting}


@pytest.fixture(params=list(OWN))
def own(request: pytest.FixtureRequest) -> Callable[[], Any]:
    """Makes a strategy of your own; its `keys` are the counters it kept."""
    return OWN[request.param]


@pytest.fixture
async def backend(make_backend: Callable[..., ThrottleBackend]) -> AsyncIterator[ThrottleBackend]:
    backend = make_backend()
    async with backend():
        yield backend


def client(app: Any) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(CLIENT, 1))
    return httpx.AsyncClient(transport=transport, base_url="http://t")


async def ok(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


def combined(where: str, *throttles: HTTPThrottle) -> Starlette:
    if where == "throttled":
        return Starlette(routes=[Route("/r", throttled(*throttles)(ok))])
    return Starlette(
        routes=[Route("/r", ok)],
        middleware=[Middleware(ThrottleMiddleware, middleware_throttles=list(throttles))],
    )


def throttle(uid: str, rate: str, backend: ThrottleBackend, strategy: Any = None) -> HTTPThrottle:
    return HTTPThrottle(uid, rate=rate, backend=backend, strategy=strategy, per_route=False)


async def counted(backend: ThrottleBackend, strategy: Any) -> int:
    """What `strategy` (of your own) counts for the one client."""
    return int(await backend.get(strategy.keys[-1]) or 0)


async def left(built_in: HTTPThrottle) -> int:
    stat = await built_in.stat(CLIENT)
    assert stat is not None
    return int(stat.hits_remaining)


# -- several throttles as one -----------------------------------------------------------------


@pytest.mark.parametrize("where", ["throttled", "middleware"])
@pytest.mark.parametrize("order", ["own-first", "own-last"])
async def test_a_refusal_of_the_others_charges_a_strategy_of_your_own_nothing(
    backend: ThrottleBackend, own: Callable[[], Any], where: str, order: str
) -> None:
    strategy = own()
    mine = throttle("mine", "100/min", backend, strategy)
    built_in = throttle("built-in", "1/min", backend)
    pair = (mine, built_in) if order == "own-first" else (built_in, mine)
    async with client(combined(where, *pair)) as http:
        codes = [(await http.get("/r")).status_code for _ in range(4)]
    assert codes == [200, 429, 429, 429]
    assert await counted(backend, strategy) == 1  # both or neither
    assert await left(built_in) == 0


@pytest.mark.parametrize("where", ["throttled", "middleware"])
async def test_a_refusal_of_a_strategy_of_your_own_gives_the_others_back(
    backend: ThrottleBackend, own: Callable[[], Any], where: str
) -> None:
    strategy = own()
    mine = throttle("mine", "1/min", backend, strategy)
    built_in = throttle("built-in", "5/min", backend, TokenBucket())
    async with client(combined(where, mine, built_in)) as http:
        answers = [await http.get("/r") for _ in range(3)]
    assert [answer.status_code for answer in answers] == [200, 429, 429]
    assert int(answers[1].headers["retry-after"]) == 60  # the refusing throttle's answer
    assert await left(built_in) == 4  # the refused requests took nothing from it


async def test_what_a_strategy_of_your_own_cannot_give_back_is_logged_once(
    backend: ThrottleBackend, own: Callable[[], Any], caplog: pytest.LogCaptureFixture
) -> None:
    first, second = own(), own()
    keeps = throttle("keeps", "100/min", backend, first)
    refuses = throttle("refuses", "1/min", backend, second)
    with caplog.at_level(logging.INFO, logger="traffik"):
        async with client(combined("throttled", keeps, refuses)) as http:
            codes = [(await http.get("/r")).status_code for _ in range(4)]
    assert codes == [200, 429, 429, 429]
    assert await counted(backend, first) == 4  # decided before the refusal, it keeps them
    lines = [record for record in caplog.records if "'keeps'" in record.getMessage()]
    assert len(lines) == 1, caplog.text
    assert lines[0].exc_info is None  # a line, never a traceback
    assert "cannot give units back" in lines[0].getMessage()
    assert "could not be given back" not in caplog.text


# -- refunds and charge_when ------------------------------------------------------------------


async def test_a_refund_of_a_strategy_of_your_own_is_a_configuration_error(
    backend: ThrottleBackend, own: Callable[[], Any], caplog: pytest.LogCaptureFixture
) -> None:
    mine = throttle("mine", "2/min", backend, own())
    errors: list[str] = []

    async def endpoint(request: Request) -> PlainTextResponse:
        await mine.hit(request)
        try:
            await mine.refund(request)
        except ConfigurationError as exc:
            errors.append(str(exc))
        return PlainTextResponse("ok")

    with caplog.at_level(logging.WARNING, logger="traffik"):
        async with client(Starlette(routes=[Route("/r", endpoint)])) as http:
            await http.get("/r")
        with pytest.raises(ConfigurationError, match="cannot give units back"):
            await mine.refund(CLIENT, cost=1)
    assert len(errors) == 1
    assert "HTTPThrottle('mine'" in errors[0] and "cannot give units back" in errors[0]
    assert "StateStrategy" in errors[0]
    assert caplog.records == []  # raised, not logged


def test_charge_when_needs_a_strategy_that_gives_back(own: Callable[[], Any]) -> None:
    def failed(outcome: Any) -> bool:
        return bool(outcome.status_code >= 400)

    with pytest.raises(ConfigurationError, match="charge_when") as refused:
        HTTPThrottle("login", rate="3/min", strategy=own(), charge_when=failed)
    assert "HTTPThrottle('login'" in str(refused.value)
    login = HTTPThrottle("login", rate="3/min", strategy=TokenBucket(), charge_when=failed)
    with pytest.raises(ConfigurationError, match="charge_when"):
        login.update_strategy(own())
    assert login.strategy == TokenBucket()  # unchanged
    plain = HTTPThrottle("plain", rate="3/min", strategy=own())
    plain.update_strategy(TokenBucket())
    plain.update_strategy(own())  # without charge_when, any strategy
