"""The Lua scripts reproduce each strategy's Python `transition` exactly: decisions, state and TTL."""

from __future__ import annotations

import math
import random
import sys
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from traffik.backends.redis import RedisBackend
from traffik.backends.redis.native import native_script
from traffik.backends.redis.scripts import decode_state
from traffik.clock import ManualClock
from traffik.decision import Decision
from traffik.rates import Rate
from traffik.strategies import (
    GCRA,
    LeakyBucket,
    LeakyBucketWithQueue,
    SlidingWindowCounter,
    SlidingWindowLog,
    StateStrategy,
    TokenBucket,
    TokenBucketWithDebt,
)
from traffik.strategies.state import encode_state

pytestmark = [pytest.mark.redis, pytest.mark.anyio]

STRATEGIES = [
    SlidingWindowCounter(),
    SlidingWindowLog(),
    TokenBucket(),
    TokenBucket(burst_size=7),
    TokenBucketWithDebt(max_debt=3),
    TokenBucketWithDebt(burst_size=2, max_debt=1),
    LeakyBucket(),
    LeakyBucketWithQueue(),
    GCRA(),
    GCRA(burst_tolerance_ms=0),
    GCRA(burst_tolerance_ms=1234.5),
]
RATES = [Rate.parse(r) for r in ("5/s", "3/min", "7/1500ms", "100/hour", "1/s", "10/3s")]


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


def _same_state(lua: list[float] | None, python: list[float] | None, exact: bool) -> bool:
    if lua is None or python is None or exact:
        return lua == python
    return lua == pytest.approx(python, rel=1e-12, abs=1e-9)


def _same_decision(lua: Decision, python: Decision, exact: bool) -> bool:
    if exact:
        return lua == python
    fields = ("allowed", "wait_ms", "remaining", "reset_ms", "limit")
    return [getattr(lua, f) for f in fields] == pytest.approx(
        [getattr(python, f) for f in fields], rel=1e-12, abs=1e-9
    )


@pytest.mark.parametrize("strategy", STRATEGIES, ids=repr)
async def test_script_matches_transition(
    redis_url: str, raw: Redis, strategy: StateStrategy
) -> None:
    assert native_script(strategy) is not None
    # Python 3.12+ sums floats with compensation; LeakyBucketWithQueue's `sum(queue[1::2])`
    # may then differ from a plain left-to-right sum in the last bit.
    exact = not (isinstance(strategy, LeakyBucketWithQueue) and sys.version_info >= (3, 12))
    rng = random.Random(f"{strategy!r}")
    clock = ManualClock(1_700_000_000.0)
    backend = RedisBackend(redis_url, namespace="scripts", clock=clock)
    try:
        for rate in RATES:
            key = backend.get_key(f"{strategy!r}:{rate}") + strategy.suffix
            state: list[float] | None = None
            for step in range(150):
                clock.advance(ms=rng.choice([0, 0, 1, 7, 33.3, rate.expire / rate.limit, 250.0]))
                if step % 40 == 39:
                    clock.advance(ms=rate.expire * rng.choice([0.5, 1, 2.5]))
                cost = rng.choice([1, 1, 1, 2, 3, 0.5])
                if cost > strategy.capacity(rate):
                    continue
                commit = step % 11 != 5
                expected, new_state, ttl_ms = strategy.transition(
                    state, clock() * 1000.0, rate, cost
                )
                got = await backend.evaluate(key, strategy, rate, cost, commit=commit)
                assert _same_decision(got, expected, exact), (step, rate, cost, state)
                assert type(got.remaining) is int
                # Keys expire on the server's clock, not the test clock: check the TTL just
                # written, then remove it so the next step sees the state Python expects.
                pipe = raw.pipeline(transaction=True)
                pttl, stored, _ = await pipe.pttl(key).get(key).persist(key).execute()
                if commit and new_state is not None:
                    state = new_state
                    assert 0 < pttl <= math.ceil(ttl_ms), (pttl, ttl_ms)
                assert _same_state(decode_state(stored), state, exact), (step, rate, cost)
                if state is not None and step % 7 == 3:
                    # State written by earlier versions (text) still reads the same.
                    await raw.set(key, encode_state(state))
    finally:
        await backend.reset()
        await backend.close()


async def test_corrupt_state_counts_as_a_fresh_key(redis_url: str, raw: Redis) -> None:
    backend = RedisBackend(redis_url, namespace="corrupt")
    rate = Rate.parse("2/min")
    try:
        for strategy in (TokenBucket(), SlidingWindowLog(), GCRA(), LeakyBucketWithQueue()):
            key = backend.get_key("k") + strategy.suffix
            for garbage in (
                *("not,numbers", "1,,2", "inf", "nan,1", "", "1e400"),
                *(
                    b"#",
                    b"#1234567",
                    b"#" + b"\xff" * 8,
                    b"#" + b"\x00\x00\x00\x00\x00\x00\xf0\x7f",
                ),
            ):
                await raw.set(key, garbage)
                decision = await backend.evaluate(key, strategy, rate, 1)
                assert decision.allowed
                assert decision.remaining == 1, (strategy, garbage)
                await raw.delete(key)
    finally:
        await backend.reset()
        await backend.close()


async def test_get_stat_writes_nothing(redis_url: str, raw: Redis) -> None:
    backend = RedisBackend(redis_url, namespace="readonly")
    rate = Rate.parse("3/min")
    try:
        for strategy in STRATEGIES:
            await strategy.get_stat("quiet", rate, backend)
        assert await raw.keys("readonly:*") == []
    finally:
        await backend.close()
