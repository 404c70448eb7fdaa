"""A user whose ACL refuses a command the scripts run, on a real server.

The scripts read the stored state through `redis.pcall`, so that a value no strategy wrote
(another type at the key, a string that is no number) counts as no state. An ACL refusal (or
any other error) must not count as no state: that admitted every request, with nothing
logged. It is the script's error instead: the request gets its throttle's `on_error` (by
default a 429), a line is logged naming the refusal and what to grant, and nothing is
admitted past the limit. The ACL is changed while the app runs (a user refused these commands
from the start fails the start: `test_access.py`)."""

from __future__ import annotations

import itertools
import logging
from collections.abc import AsyncIterator

import httpx
import pytest
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from traffik import HTTPThrottle, throttled
from traffik.backends.health import CircuitState
from traffik.backends.redis import RedisBackend
from traffik.exceptions import BackendError
from traffik.rates import Rate
from traffik.strategies import (
    ADVANCED_STRATEGIES,
    BUILTIN_STRATEGIES,
    FixedWindow,
    PriorityQueue,
    Strategy,
    TokenBucket,
)
from traffik.strategies.steps import Item

pytestmark = [pytest.mark.redis, pytest.mark.anyio]

RATES = ("10/min", "10/min;1000/day")
_USERS = itertools.count()


def _read_by(strategy: Strategy, rates: str) -> list[str]:
    """The commands the strategy's script runs through `pcall` (the first of them refused
    makes every decision fail): FixedWindow's counter alone INCRBYs (`increment_with_ttl`);
    with another rate it GETs its count, then INCRBYs; PriorityQueue GETRANGEs its block; the
    other strategies GET their state."""
    if isinstance(strategy, FixedWindow):
        return ["incrby"] if ";" not in rates else ["get", "incrby"]
    if isinstance(strategy, PriorityQueue):
        return ["getrange"]
    return ["get"]


CASES = [
    pytest.param(cls(), rates, command, id=f"{cls.__name__}-{rates}-{command}")
    for cls in (*BUILTIN_STRATEGIES, *ADVANCED_STRATEGIES)
    for rates in RATES
    for command in _read_by(cls(), rates)
]


@pytest.fixture
async def user(raw: Redis) -> AsyncIterator[str]:
    """An ACL user (password `pw`) allowed every command on every key, deleted afterwards."""
    name = f"acl-{next(_USERS)}"
    await raw.execute_command("ACL", "SETUSER", name, "reset", "on", ">pw", "~*", "+@all")
    yield name
    await raw.execute_command("ACL", "DELUSER", name)


def _as(url: str, user: str) -> str:
    return url.replace("redis://", f"redis://{user}:pw@", 1)


def _app(throttle: HTTPThrottle, backend: RedisBackend) -> Starlette:
    async def ok(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    return Starlette(routes=[Route("/", throttled(throttle, route=ok))], lifespan=backend.lifespan)


async def _forget(raw: Redis, namespace: str) -> None:
    """Delete what a test wrote in `namespace`."""
    keys = [key async for key in raw.scan_iter(f"{namespace}:*")]
    if keys:
        await raw.delete(*keys)


async def _statuses(http: httpx.AsyncClient, n: int) -> list[int]:
    return [(await http.get("/")).status_code for _ in range(n)]


@pytest.mark.parametrize(("strategy", "rates", "command"), CASES)
async def test_a_command_the_acl_refuses_inside_a_script_refuses_and_logs_never_admits(
    redis_url: str,
    raw: Redis,
    user: str,
    strategy: Strategy,
    rates: str,
    command: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    namespace = f"acl-{user}"
    backend = RedisBackend(_as(redis_url, user), namespace=namespace)
    throttle = HTTPThrottle("acl", rates, backend=backend, strategy=strategy)
    app = _app(throttle, backend)
    transport = httpx.ASGITransport(app=app, client=("10.0.0.1", 1234))
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://test") as http,
        ):
            assert await _statuses(http, 3) == [200, 200, 200]
            await raw.execute_command("ACL", "SETUSER", user, f"-{command}")
            with caplog.at_level(logging.WARNING, logger="traffik"):
                assert await _statuses(http, 12) == [429] * 12  # on_error="throttle"
            logged = [r.getMessage() for r in caplog.records if r.name.startswith("traffik")]
            assert any("can't run this command" in line for line in logged), logged
            assert any(f"+{command}" in line and "ACL" in line for line in logged), logged
            assert backend.circuit.state is CircuitState.CLOSED  # it answers: not an outage
            await raw.execute_command("ACL", "SETUSER", user, f"+{command}")
            assert (await http.get("/")).status_code == 200  # 3 of 10 taken: room left
    finally:
        await backend.close()
        await _forget(raw, namespace)


@pytest.mark.parametrize("command", ["get", "incrby"])
async def test_a_counter_refused_a_command_raises_rather_than_opening_a_new_window(
    redis_url: str, raw: Redis, user: str, command: str
) -> None:
    """FixedWindow's counter within a step of several rates (its GET), and its INCRBY when it
    charges: an error, not a count of 0 (admitted for ever) or a counter set anew."""
    backend = RedisBackend(_as(redis_url, user), namespace=f"acl-{user}")
    rates = [Rate.parse("3/min"), Rate.parse("100/day")]
    hit = [Item(FixedWindow(), f"client:{rate}", rate, 1) for rate in rates]
    try:
        assert (await backend.evaluate_all(hit)).allowed
        await raw.execute_command("ACL", "SETUSER", user, f"-{command}")
        for _ in range(4):
            with pytest.raises(BackendError, match="can't run this command"):
                await backend.evaluate_all(hit)
        await raw.execute_command("ACL", "SETUSER", user, f"+{command}")
        assert [(await backend.evaluate_all(hit)).allowed for _ in range(3)] == [True, True, False]
    finally:
        await backend.reset()
        await backend.close()


async def test_a_refund_refused_its_read_raises_rather_than_giving_back_nothing(
    redis_url: str, raw: Redis, user: str
) -> None:
    backend = RedisBackend(_as(redis_url, user), namespace=f"acl-{user}")
    rate = Rate.parse("3/min")
    items = [
        [Item(FixedWindow(), "counter", rate, 1), Item(FixedWindow(), "counter:day", rate, 1)],
        [Item(TokenBucket(), "state", rate, 1)],
    ]
    try:
        for hit in items:
            assert (await backend.evaluate_all(hit)).allowed
        await raw.execute_command("ACL", "SETUSER", user, "-get")
        for hit in items:
            with pytest.raises(BackendError, match="can't run this command"):
                await backend.refund_all(hit)
    finally:
        await raw.execute_command("ACL", "SETUSER", user, "+get")
        await backend.reset()
        await backend.close()
