"""The Lua scripts reproduce each strategy's Python `transition` exactly: decisions, state and TTL."""

from __future__ import annotations

import random
import struct
from collections.abc import AsyncIterator
from importlib import resources

import pytest
from redis.asyncio import Redis

from traffik.backends.redis import RedisBackend
from traffik.backends.redis.native import native_script
from traffik.backends.redis.scripts import decode_state
from traffik.clock import ManualClock
from traffik.rates import Rate
from traffik.strategies import (
    BUILTIN_STRATEGIES,
    GCRA,
    FixedWindow,
    LeakyBucket,
    LeakyBucketWithQueue,
    SlidingWindowCounter,
    SlidingWindowLog,
    StateStrategy,
    TokenBucket,
    TokenBucketWithDebt,
)

pytestmark = [pytest.mark.redis, pytest.mark.anyio]

STRATEGIES: list[StateStrategy] = [
    SlidingWindowCounter(),
    SlidingWindowLog(),
    TokenBucket(),
    TokenBucket(burst_size=7),
    TokenBucketWithDebt(max_debt=3),
    TokenBucketWithDebt(burst_size=2, max_debt=1),
    TokenBucketWithDebt(burst_size=1, max_debt=6),
    LeakyBucket(),
    LeakyBucketWithQueue(),
    GCRA(),
    GCRA(burst_tolerance_ms=0),
    GCRA(burst_tolerance_ms=0.3),
    GCRA(burst_tolerance_ms=1234.5),
    GCRA(burst_tolerance_ms=90_000),
]
SMALL_RATES = [
    *(Rate.parse(r) for r in ("5/s", "3/min", "7/1500ms", "100/hour", "1/s", "10/3s")),
    Rate(limit=7, milliseconds=997),
]
RATES = [*SMALL_RATES, Rate(limit=1_000_003, milliseconds=2_147_483_647)]
"""The last one takes the numbers to about 2**52, where a double quotient may round wrong."""
CORRUPT = [
    *(text.encode() for text in ("not,numbers", "1,2", "1,,2", "inf", "nan,1", "", "1e400")),
    b"i1234567",
    b"i" + b"\xff" * 8,  # NaN
    b"i" + struct.pack("<2d", 1.5, 2),  # not whole
    b"i" + struct.pack("<2d", 2**53, 2),  # not exact
    b"i" + struct.pack("<2d", float("inf"), 2),
    b"#" + struct.pack("<2d", 1.0, 1_700_000_000_000.0),  # the float-era format
]
"""Stored values that are no state: the scripts start a fresh key on each."""


def _packed(state: list[int]) -> bytes:
    """A state as the scripts store it (`save_state` in `lua/_prelude.lua`)."""
    return b"i" + struct.pack(f"<{len(state)}d", *state)


def _foreign_state(rng: random.Random, rate: Rate, now: int) -> list[int]:
    """Whole numbers of any count: amounts, times near `now`, window ids, counts."""
    period = rate.expire
    kinds = [
        lambda: rng.randint(-3 * period, 3 * rate.limit * period),
        lambda: now + rng.randint(-2 * period, 2 * period),
        lambda: now // period + rng.randint(-2, 1),
        lambda: rng.randint(0, rate.limit),
    ]
    return [rng.choice(kinds)() for _ in range(rng.choice([0, 1, 2, 2, 3, 3, 4, 5, 7]))]


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def clocked(redis_url: str) -> AsyncIterator[tuple[RedisBackend, ManualClock]]:
    clock = ManualClock(1_700_000_000.0)
    backend = RedisBackend(redis_url, namespace="scripts", clock=clock)
    yield backend, clock
    await backend.reset()
    await backend.close()


def test_every_scripted_strategy_is_covered() -> None:
    scripted = {cls for cls in BUILTIN_STRATEGIES if cls is not FixedWindow}
    assert {type(strategy) for strategy in STRATEGIES} == scripted
    assert all(native_script(strategy) is not None for strategy in STRATEGIES)


@pytest.mark.parametrize("strategy", STRATEGIES, ids=repr)
async def test_script_matches_transition(
    clocked: tuple[RedisBackend, ManualClock], raw: Redis, strategy: StateStrategy
) -> None:
    backend, clock = clocked
    rng = random.Random(f"{strategy!r}")
    lowest = 0  # the fewest tokens a token bucket held: below 0 means in debt
    for rate in RATES:
        key = backend.get_key(f"{strategy!r}:{rate}") + strategy.suffix
        state: list[int] | None = None
        capacity = strategy.capacity(rate)
        interval = rate.expire // rate.limit
        for step in range(150):
            clock.advance(ms=rng.choice([0, 0, 1, 7, 33, interval - 1, interval, 250]))
            if step % 40 == 39:
                clock.advance(ms=rng.choice([rate.expire // 2, rate.expire, 5 * rate.expire // 2]))
            cost = min(rng.choice([1, 1, 1, 2, 3, capacity, rng.randint(1, capacity)]), capacity)
            commit = step % 11 != 5
            expected, new_state, ttl_ms = strategy.transition(state, clock.ms(), rate, cost)
            got = await backend.evaluate(key, strategy, rate, cost, commit=commit)
            assert got == expected, (step, rate, cost, state)
            assert all(type(n) is int for n in (got.wait_ms, got.remaining, got.reset_ms))
            # Keys expire on the server's clock, not the test clock: check the TTL just
            # written, then remove it so the next step sees the state Python expects.
            pipe = raw.pipeline(transaction=True)
            pttl, stored, _ = await pipe.pttl(key).get(key).persist(key).execute()
            if commit and new_state is not None:
                state = new_state
                gone_in = max(ttl_ms, 2)  # the shortest life Redis gives a key
                assert gone_in - 1_000 < pttl + 1 <= gone_in, (pttl, ttl_ms)
            assert decode_state(stored) == state, (step, rate, cost)
            if state is not None and isinstance(strategy, TokenBucket):
                lowest = min(lowest, state[0])
    if isinstance(strategy, TokenBucketWithDebt):
        assert lowest < 0, "the walk never took the bucket into debt"


@pytest.mark.parametrize("strategy", STRATEGIES, ids=repr)
async def test_any_valid_state_is_read_as_python_reads_it(
    clocked: tuple[RedisBackend, ManualClock], raw: Redis, strategy: StateStrategy
) -> None:
    """States the scripts never write (any length, values out of their usual ranges) still
    decide exactly as the Python transition decides on them."""
    backend, clock = clocked
    rng = random.Random(f"foreign {strategy!r}")
    key = backend.get_key(f"foreign {strategy!r}") + strategy.suffix
    for _ in range(300):
        rate = rng.choice(SMALL_RATES)
        now = clock.ms()
        state = _foreign_state(rng, rate, now)
        await raw.set(key, _packed(state))
        assert decode_state(await raw.get(key)) == state
        cost = rng.randint(1, strategy.capacity(rate))
        expected, new_state, _ = strategy.transition(state, now, rate, cost)
        assert await backend.evaluate(key, strategy, rate, cost) == expected, (rate, cost, state)
        assert decode_state(await raw.get(key)) == (state if new_state is None else new_state)
        clock.advance(ms=rng.randint(0, 2 * rate.expire))


async def test_floordiv_and_ceildiv_round_like_python(raw: Redis) -> None:
    prelude = resources.files("traffik.backends.redis").joinpath("lua", "_prelude.lua")
    body = """
local out = {}
for i = 1, #ARGV, 2 do
  local a, b = tonumber(ARGV[i]), tonumber(ARGV[i + 1])
  out[#out + 1] = floordiv(a, b)
  out[#out + 1] = ceildiv(a, b)
end
return out
"""
    rng = random.Random("division")
    top = 2**53 - 1
    pairs = [(a, b) for a in (top, -top, 0, 1, -1) for b in (1, 2, 3, 7, 2**26 + 1, top)]
    while len(pairs) < 2_000:
        b = rng.choice([1, 2, 3, 7, 1000, rng.randint(1, 2**26), rng.randint(1, 2**52)])
        a = rng.randint(-top // b, top // b) * b + rng.choice([-1, 0, 1, rng.randint(-b, b)])
        if abs(a) <= top:
            pairs.append((a, b))
    replies = await raw.eval(
        prelude.read_text(encoding="utf-8") + body, 0, *[str(n) for pair in pairs for n in pair]
    )
    assert replies == [n for a, b in pairs for n in (a // b, -(-a // b))]


def test_anything_else_is_no_state() -> None:
    assert decode_state(b"i") == []
    assert all(decode_state(garbage) is None for garbage in CORRUPT)


async def test_corrupt_state_counts_as_a_fresh_key(redis_url: str, raw: Redis) -> None:
    backend = RedisBackend(redis_url, namespace="corrupt")
    rate = Rate.parse("2/min")
    try:
        for strategy in (TokenBucket(), SlidingWindowLog(), GCRA(), LeakyBucketWithQueue()):
            key = backend.get_key("k") + strategy.suffix
            for garbage in (*CORRUPT, b"i"):  # b"i": the empty state, fresh for every strategy
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
