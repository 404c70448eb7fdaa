"""CostBasedTokenBucket's states of one run or none, which its program decides without a table,
decide as the Python does: a cost window of one (a hit of another cost pushes the only run
out) and a history longer than the window (written under a larger `cost_window`)."""

from __future__ import annotations

import random

import pytest
from redis.asyncio import Redis

from traffik.backends.redis import RedisBackend
from traffik.backends.redis.scripts import decode_state
from traffik.clock import ManualClock
from traffik.rates import Rate
from traffik.strategies import CostBasedTokenBucket

pytestmark = [pytest.mark.redis, pytest.mark.anyio]

_RATE = Rate.parse("1000/day")
"""A bucket that never fills again in these walks: no short TTLs on the server's clock."""


async def test_a_window_of_one_decides_as_in_python(
    clocked: tuple[RedisBackend, ManualClock], raw: Redis
) -> None:
    backend, clock = clocked
    rng = random.Random("a window of one")
    strategy = CostBasedTokenBucket(cost_window=1, min_refill_rate=0.25)
    key = backend.get_key("window of one") + strategy.suffix
    state: list[int] | None = None
    for step in range(60):
        clock.advance(ms=rng.choice([0, 1, 30]))
        cost = rng.choice([1, 1, 2, 3])
        expected, new_state, _ = strategy.transition(state, clock.ms(), _RATE, cost)
        assert await backend.evaluate(key, strategy, _RATE, cost) == expected, step
        state = new_state if new_state is not None else state
        assert decode_state(await raw.get(key)) == state, step
    assert state is not None and len(state) == 5  # tokens, last_ms, one cost, the rate


async def test_a_history_longer_than_the_window_decides_as_in_python(
    clocked: tuple[RedisBackend, ManualClock], raw: Redis
) -> None:
    backend, clock = clocked
    longer, strategy = CostBasedTokenBucket(cost_window=8), CostBasedTokenBucket(cost_window=3)
    key = backend.get_key("longer history") + strategy.suffix
    for cost in (2, 2, 2, 2, 2, 2):  # one run of six costs of 2, under a window of 8
        assert (await backend.evaluate(key, longer, _RATE, cost)).allowed
        clock.advance(ms=5)
    state = decode_state(await raw.get(key))
    assert state is not None and state[2:8] == [2] * 6
    for step, cost in enumerate((2, 1, 1, 2)):  # the window of 3 takes over
        clock.advance(ms=5)
        expected, new_state, _ = strategy.transition(state, clock.ms(), _RATE, cost)
        assert await backend.evaluate(key, strategy, _RATE, cost) == expected, step
        state = new_state if new_state is not None else state
        assert decode_state(await raw.get(key)) == state, step
