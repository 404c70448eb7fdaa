"""RedisBackend through Redis Sentinel: by URL, and from a `redis.asyncio.Sentinel`."""

from __future__ import annotations

import pytest
from redis.asyncio import Sentinel

from traffik.backends.redis import RedisBackend
from traffik.rates import Rate
from traffik.strategies import BUILTIN_STRATEGIES

pytestmark = [pytest.mark.redis, pytest.mark.anyio]


async def _decides(backend: RedisBackend) -> None:
    rate = Rate.parse("1/min")
    try:
        for cls in BUILTIN_STRATEGIES:
            assert (await cls().decide("u", rate, backend, 1)).allowed
            assert not (await cls().decide("u", rate, backend, 1)).allowed
    finally:
        await backend.reset()
        await backend.close()


async def test_sentinel_url(redis_sentinel_url: str) -> None:
    await _decides(RedisBackend(redis_sentinel_url, namespace="sentinel-url"))


async def test_given_sentinel(redis_sentinel_url: str) -> None:
    host, port = redis_sentinel_url.split("://", 1)[1].split("/", 1)[0].split(":")
    sentinel = Sentinel([(host, int(port))])
    try:
        backend = RedisBackend(sentinel, sentinel_service_name="mymaster", namespace="sentinel")
        await _decides(backend)
    finally:
        for client in sentinel.sentinels:
            await client.aclose()
