"""The largest rates `Rate` admits are decided on Redis (a counter's TTL, a deadline of now plus
the period, all within what Redis and its Lua numbers hold), never a store error per request."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from traffik.backends.redis import RedisBackend
from traffik.exceptions import ConfigurationError
from traffik.rates import MAX_LIMIT, MAX_PERIOD_MS, Rate
from traffik.strategies import BUILTIN_STRATEGIES, FixedWindow

pytestmark = [pytest.mark.redis, pytest.mark.anyio]


@pytest.fixture
async def backend(redis_url: str) -> AsyncIterator[RedisBackend]:
    backend = RedisBackend(redis_url, namespace="rate-bounds")
    yield backend
    await backend.reset()
    await backend.close()


@pytest.mark.parametrize("text", ["2/36500d", f"{MAX_LIMIT}/s", f"{MAX_LIMIT}/36500d"])
async def test_the_largest_rates_are_decided(backend: RedisBackend, text: str) -> None:
    rate = Rate.parse(text)
    for cls in BUILTIN_STRATEGIES:
        strategy = cls()
        try:
            backend.validate(strategy, rate)
            check_scale = getattr(strategy, "check_scale", None)
            if check_scale is not None:
                check_scale(rate)
        except ConfigurationError:
            assert cls is not FixedWindow
            continue
        decisions = [await strategy.decide(f"k:{cls.__name__}", rate, backend) for _ in range(3)]
        assert decisions[0].allowed and decisions[0].remaining == rate.limit - 1
        if rate.limit == 2 and cls is FixedWindow:
            assert [d.allowed for d in decisions] == [True, True, False]
            assert MAX_PERIOD_MS - 5_000 <= decisions[2].wait_ms <= MAX_PERIOD_MS
