"""Each script runs the Redis commands it was designed to run, and no more.

A state strategy's decision reads the server's clock and the state, and writes the new state
with its time to live in one command (TIME, GET, PSETEX); a refused hit or a peek writes
nothing. FixedWindow's counter is INCRBY and PTTL, plus PEXPIRE when its window opens. Counted
from the server's `INFO commandstats`, before and after each decision.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from typing import Callable

import pytest
from redis.asyncio import Redis

from traffik.backends.redis import RedisBackend
from traffik.rates import Rate
from traffik.strategies import BUILTIN_STRATEGIES, FixedWindow, StateStrategy

pytestmark = [pytest.mark.redis, pytest.mark.anyio]

STATE_STRATEGIES = [cls() for cls in BUILTIN_STRATEGIES if cls is not FixedWindow]


@pytest.fixture
async def meter(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def backend(redis_url: str) -> AsyncIterator[RedisBackend]:
    backend = RedisBackend(redis_url, namespace="script-commands")
    yield backend
    await backend.reset()
    await backend.close()


async def _calls(meter: Redis) -> dict[str, int]:
    found = await meter.info("commandstats")
    return {name[len("cmdstat_") :]: int(stats["calls"]) for name, stats in found.items()}


async def _commands(meter: Redis, action: Callable[[], Awaitable[object]]) -> dict[str, int]:
    """The commands the server ran while `action` did (the measuring INFO left out)."""
    before = await _calls(meter)
    await action()
    after = await _calls(meter)
    ran = {name: n - before.get(name, 0) for name, n in after.items() if name != "info"}
    return {name: n for name, n in ran.items() if n}


@pytest.mark.parametrize("strategy", STATE_STRATEGIES, ids=repr)
async def test_a_state_strategy_reads_the_clock_and_state_and_writes_once(
    meter: Redis, backend: RedisBackend, strategy: StateStrategy
) -> None:
    rate = Rate.parse("1/hour")
    key = backend.get_key("client") + strategy.suffix
    await backend.get("warm-up")  # connects and loads the scripts
    admitted = await _commands(meter, lambda: backend.evaluate(key, strategy, rate, 1))
    peek = await _commands(meter, lambda: backend.evaluate(key, strategy, rate, 1, commit=False))
    refused = await _commands(meter, lambda: backend.evaluate(key, strategy, rate, 1))
    assert admitted == {"evalsha": 1, "time": 1, "get": 1, "psetex": 1}
    assert peek == refused == {"evalsha": 1, "time": 1, "get": 1}


async def test_the_counter_increments_and_reads_its_time_to_live(
    meter: Redis, backend: RedisBackend
) -> None:
    strategy, rate = FixedWindow(), Rate.parse("5/hour")
    await backend.get("warm-up")
    opened = await _commands(meter, lambda: strategy.decide("client", rate, backend, 1))
    counted = await _commands(meter, lambda: strategy.decide("client", rate, backend, 1))
    assert opened == {"evalsha": 1, "incrby": 1, "pttl": 1, "pexpire": 1}
    assert counted == {"evalsha": 1, "incrby": 1, "pttl": 1}
