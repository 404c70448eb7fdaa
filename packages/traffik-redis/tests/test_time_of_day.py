"""`TimeOfDay` on Redis: one `EVALSHA` per decision on the server's clock, as every strategy.

Its day of limits travels as an argument of its own (`script_table`), so a decision is the
program's TIME, GET and PSETEX and nothing else: no lock, with one rate or several. Counted
from the server's `INFO commandstats`, before and after each decision. That the program
decides as `TimeOfDay.transition` and `refund` do is shown in `test_scripts.py`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable
from typing import Any, Callable

import pytest
from redis.asyncio import Redis

import traffik.backends.base
from traffik.backends.redis import RedisBackend
from traffik.decision import Decision
from traffik.rates import Rate, parse_rates
from traffik.strategies import TimeOfDay
from traffik.strategies.steps import IN_PLACE_STATE, Item, items

pytestmark = [pytest.mark.redis, pytest.mark.anyio]

HOUR = 3600.0


@pytest.fixture
async def backend(redis_url: str) -> AsyncIterator[RedisBackend]:
    backend = RedisBackend(redis_url, namespace="time-of-day")
    yield backend
    await backend.reset()
    await backend.close()


async def _calls(raw: Redis) -> dict[str, int]:
    found = await raw.info("commandstats")
    return {name[len("cmdstat_") :]: int(stats["calls"]) for name, stats in found.items()}


async def _commands(raw: Redis, action: Callable[[], Awaitable[object]]) -> dict[str, int]:
    """The commands the server ran while `action` did (the measuring INFO left out)."""
    before = await _calls(raw)
    await action()
    after = await _calls(raw)
    ran = {name: n - before.get(name, 0) for name, n in after.items() if name != "info"}
    return {name: n for name, n in ran.items() if n}


async def test_a_decision_is_one_evalsha_without_a_lock(raw: Redis, backend: RedisBackend) -> None:
    strategy, rate = TimeOfDay(), Rate.parse("10/s")
    key = backend.get_key("one") + strategy.suffix
    await backend.get("warm-up")  # connects and loads the scripts
    admitted = await _commands(raw, lambda: strategy.decide("one", rate, backend))
    peek = await _commands(raw, lambda: backend.evaluate(key, strategy, rate, 1, commit=False))
    refund = await _commands(raw, lambda: backend.refund_all([Item(strategy, key, rate, 1)]))
    assert admitted == refund == {"evalsha": 1, "time": 1, "get": 1, "psetex": 1}
    assert peek == {"evalsha": 1, "time": 1, "get": 1}


async def test_two_rates_are_one_evalsha_without_a_lock(raw: Redis, backend: RedisBackend) -> None:
    strategy, rates = TimeOfDay(), parse_rates("10/s;1000/day")
    hit = items(strategy, "two", rates, 1, backend)
    await backend.get("warm-up")
    admitted = await _commands(raw, lambda: backend.evaluate_all(hit))
    refund = await _commands(raw, lambda: backend.refund_all(hit))
    assert admitted == refund == {"evalsha": 1, "time": 1, "get": 2, "psetex": 2}
    stored = await raw.mget([item.key for item in hit])
    assert all(value is not None and value[:1] == b"i" for value in stored)  # the program's


async def test_a_throttles_prepared_decision_is_one_evalsha(
    raw: Redis, backend: RedisBackend
) -> None:
    strategy, rate = TimeOfDay(), Rate.parse("10/s")
    decide = backend.waited_decider(strategy, rate, 1, IN_PLACE_STATE)
    assert decide is not None
    await backend.get("warm-up")
    admitted = await _commands(raw, lambda: decide("prepared"))
    assert admitted == {"evalsha": 1, "time": 1, "get": 1, "psetex": 1}


async def test_a_cost_no_hour_allows_is_never_admitted(backend: RedisBackend) -> None:
    """Above the most any hour allows (2x of 5 here), as `transition` answers: refused for
    one period, whatever the hour (`decide` answers it without the store; `evaluate` asks)."""
    strategy, rate = TimeOfDay([(0, 12, 2), (12, 24, 0.5)]), Rate.parse("5/min")
    key = backend.get_key("costly") + strategy.suffix
    never = Decision(False, 60_000, 0, 60_000, 5)
    assert strategy.transition(None, 0, rate, 11)[0] == never
    assert await backend.evaluate(key, strategy, rate, 11) == never
    assert await backend.evaluate_all([Item(strategy, key, rate, 11)]) == never
    fits = await backend.evaluate(key, strategy, rate, 10)  # the 2x hours allow it
    assert fits.allowed == (fits.limit == 10) and fits.wait_ms < 24 * HOUR * 1000


def _open_now(server_seconds: float) -> TimeOfDay:
    """2/min (1x) in the server's hour (UTC) and the next, none (0.4x: int(0.8)) in the rest."""
    hour = int(server_seconds // HOUR) % 24
    open_hours = {hour, (hour + 1) % 24}
    return TimeOfDay([(h, h + 1, 1.0 if h in open_hours else 0.4) for h in range(24)])


def _host(redis_url: str, offset: float, monkeypatch: Any) -> RedisBackend:
    """A backend on a host whose clock (`system_clock`, read when given no `clock=`) is
    `offset` seconds ahead."""
    with monkeypatch.context() as patch:
        patch.setattr(traffik.backends.base, "system_clock", lambda: time.time() + offset)
        backend = RedisBackend(redis_url, namespace="time-of-day-clock")
    assert abs(backend.clock() - time.time() - offset) < 5
    return backend


async def test_the_hour_is_the_servers(redis_url: str, raw: Redis, monkeypatch: Any) -> None:
    """A host whose clock is six hours ahead still decides in the server's hour, where the
    limit is 2; on its own clock (`clock=`) it would be in an hour whose limit is 0."""
    seconds, micros = await raw.time()
    strategy, rate = _open_now(seconds + micros / 1e6), Rate.parse("2/min")
    ahead = _host(redis_url, 6 * HOUR, monkeypatch)
    own_clock = RedisBackend(
        redis_url, namespace="time-of-day-own", clock=lambda: time.time() + 6 * HOUR
    )
    try:
        got = [await strategy.decide("client", rate, ahead) for _ in range(3)]
        assert [(d.allowed, d.remaining, d.limit) for d in got] == [
            (True, 1, 2),
            (True, 0, 2),
            (False, 0, 2),
        ]
        control = await strategy.decide("client", rate, own_clock)
        assert (control.allowed, control.limit) == (False, 0)
    finally:
        for backend in (ahead, own_clock):
            await backend.reset()
            await backend.close()
