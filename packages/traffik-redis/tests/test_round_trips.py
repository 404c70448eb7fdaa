"""Every built-in strategy decides in exactly one round trip to Redis, allowed or rejected, and
so does a throttle of three rates (`evaluate_all`), and its refund (`refund_all`).

Measured on the server: `total_reads_processed` from `INFO stats` counts the requests the
server read from clients. A measuring connection reads it before and after one decision;
the same reading with nothing in between (the cost of the INFO call itself) is subtracted.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable
from typing import Callable

import pytest
from redis.asyncio import Redis
from starlette.requests import Request

from traffik import HTTPThrottle, is_throttled
from traffik.backends.redis import RedisBackend
from traffik.exceptions import ConnectionThrottled
from traffik.quotas import QuotaContext
from traffik.rates import Rate, parse_rates
from traffik.strategies import (
    BUILTIN_STRATEGIES,
    GCRA,
    FixedWindow,
    PriorityQueue,
    Strategy,
    TieredRate,
    TokenBucket,
)
from traffik.strategies.steps import Item, items

pytestmark = [pytest.mark.redis, pytest.mark.anyio]


async def _reads(meter: Redis) -> int:
    return int((await meter.info("stats"))["total_reads_processed"])


async def _measure(meter: Redis, action: Callable[[], Awaitable[object]]) -> int:
    idle_before = await _reads(meter)
    idle_after = await _reads(meter)
    before = await _reads(meter)
    await action()
    after = await _reads(meter)
    return (after - before) - (idle_after - idle_before)


async def _round_trips(meter: Redis, backend: RedisBackend, strategy: Strategy, rate: Rate) -> int:
    return await _measure(meter, lambda: strategy.decide("client", rate, backend, 1))


@pytest.fixture
async def meter(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.mark.parametrize("strategy", [cls() for cls in BUILTIN_STRATEGIES], ids=repr)
async def test_one_round_trip_per_decision(
    redis_url: str, meter: Redis, strategy: Strategy
) -> None:
    backend = RedisBackend(redis_url, namespace="round-trips")
    rate = Rate.parse("3/hour")
    try:
        await strategy.decide("warm-up", rate, backend, 1)  # connects and loads the scripts
        allowed = []
        for _ in range(rate.limit):
            allowed.append(await _round_trips(meter, backend, strategy, rate))
        rejected = await _round_trips(meter, backend, strategy, rate)
        assert (await strategy.decide("client", rate, backend, 1)).allowed is False
        assert allowed == [1, 1, 1]
        assert rejected == 1
    finally:
        await backend.reset()
        await backend.close()


@pytest.mark.parametrize("strategy", [cls() for cls in BUILTIN_STRATEGIES], ids=repr)
async def test_one_round_trip_per_decision_and_refund_of_three_rates(
    redis_url: str, meter: Redis, strategy: Strategy
) -> None:
    backend = RedisBackend(redis_url, namespace="round-trips-rates")
    hit = items(strategy, "client", parse_rates("3/hour;5/day;9/2d"), 1, backend)
    try:
        await backend.evaluate_all(items(strategy, "warm-up", parse_rates("1/s"), 1, backend))
        answers: list[bool] = []
        trips = [await _measure(meter, lambda: _answer(backend, hit, answers)) for _ in range(4)]
        refund = await _measure(meter, lambda: backend.refund_all(hit))
        peek = await _measure(meter, lambda: _answer(backend, hit, answers, commit=False))
        # The refund gives one back (the refused hit took nothing, a fixed window's included).
        assert answers == [True, True, True, False, True]
        assert trips == [1, 1, 1, 1]
        assert (refund, peek) == (1, 1)
    finally:
        await backend.reset()
        await backend.close()


async def test_one_round_trip_for_throttles_of_several_strategies(
    redis_url: str, meter: Redis
) -> None:
    backend = RedisBackend(redis_url, namespace="round-trips-mixed")
    hit = [
        *items(FixedWindow(), "a:{client}", parse_rates("2/min;5/hour"), 1, backend),
        *items(GCRA(), "b:{client}", parse_rates("3/min"), 1, backend),
        *items(TokenBucket(), "c:{client}", parse_rates("4/min;9/day"), 1, backend),
    ]
    try:
        await backend.evaluate_all(hit[:1], commit=False)
        answers: list[bool] = []
        trips = [await _measure(meter, lambda: _answer(backend, hit, answers)) for _ in range(3)]
        assert answers == [True, True, False]
        assert trips == [1, 1, 1]
        assert await _measure(meter, lambda: backend.refund_all(hit)) == 1
    finally:
        await backend.reset()
        await backend.close()


async def test_one_round_trip_per_backend_for_a_quota_context(redis_url: str, meter: Redis) -> None:
    """A quota context's queued hits: one `EVALSHA` per backend (admitted or refused), for
    throttles of several strategies and rates, and for advanced strategies."""
    first = RedisBackend(redis_url, namespace="round-trips-quota-a")
    second = RedisBackend(redis_url, namespace="round-trips-quota-b")
    tiered = HTTPThrottle("q:tiered", rate="6/min", backend=first, strategy=TieredRate())
    bucket = HTTPThrottle("q:bucket", rate="6/min;20/day", backend=first, strategy=TokenBucket())
    queue = HTTPThrottle("q:queue", rate="10/min", backend=second, strategy=PriorityQueue())
    connection = Request(
        {"type": "http", "method": "GET", "path": "/", "headers": [], "client": ("9.9.9.9", 1)}
    )

    async def apply(both: bool) -> None:
        quota = QuotaContext(connection)
        quota(tiered, cost=2)
        quota(bucket, cost=1)
        quota(tiered, cost=1)
        if both:
            quota(queue, cost=3)
        with contextlib.suppress(ConnectionThrottled):
            await quota.apply()

    try:
        await first.get("warm-up")
        await second.get("warm-up")
        one = [await _measure(meter, lambda: apply(False)) for _ in range(2)]
        refused = await _measure(meter, lambda: apply(False))  # 3 + 3 + 3 > 6
        assert one == [1, 1] and refused == 1
        assert is_throttled(connection)
        await first.reset()
        assert await _measure(meter, lambda: apply(True)) == 2  # one per backend
        assert not is_throttled(connection)
    finally:
        for backend in (first, second):
            await backend.reset()
            await backend.close()


async def _answer(
    backend: RedisBackend, hit: list[Item], answers: list[bool], commit: bool = True
) -> None:
    answers.append((await backend.evaluate_all(hit, commit=commit)).allowed)


async def test_scripts_reload_after_script_flush(redis_url: str, meter: Redis) -> None:
    backend = RedisBackend(redis_url, namespace="noscript")
    strategy, rate = TokenBucket(), Rate.parse("3/hour")
    try:
        assert (await strategy.decide("k", rate, backend, 1)).allowed
        await meter.script_flush()
        assert (await strategy.decide("k", rate, backend, 1)).remaining == 1
        assert await _round_trips(meter, backend, strategy, rate) == 1
    finally:
        await backend.reset()
        await backend.close()


async def test_the_meter_counts_each_round_trip(redis_url: str, meter: Redis) -> None:
    backend = RedisBackend(redis_url, namespace="meter")
    try:
        await backend.get("warm-up")

        async def three_gets() -> None:
            for _ in range(3):
                await backend.get("k")

        assert await _measure(meter, three_gets) == 3
    finally:
        await backend.close()
