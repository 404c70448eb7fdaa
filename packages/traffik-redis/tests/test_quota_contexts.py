"""Quota contexts on Redis: contexts applying at once, from two app instances, never over-admit."""

from __future__ import annotations

import asyncio

import pytest
from starlette.requests import Request

from traffik import HTTPThrottle
from traffik.backends.redis import RedisBackend
from traffik.quotas import QuotaContext
from traffik.strategies import PriorityQueue, SlidingWindowLog

pytestmark = [pytest.mark.redis, pytest.mark.anyio]


def _request() -> Request:
    return Request(
        {"type": "http", "method": "GET", "path": "/", "headers": [], "client": ("5.6.7.8", 1)}
    )


async def test_concurrent_contexts_of_two_instances_never_over_admit(redis_url: str) -> None:
    """Sixty contexts at once, half through each of two backends on one server, each taking
    2 from a 10/min throttle and 1 from a 100/min one: exactly five pass, and the looser
    throttle is charged for those five only."""
    instances = [RedisBackend(redis_url, namespace="quota-race") for _ in range(2)]
    pairs = [
        (
            HTTPThrottle("tight", rate="10/min", backend=backend, strategy=SlidingWindowLog()),
            HTTPThrottle("loose", rate="100/min", backend=backend, strategy=PriorityQueue()),
        )
        for backend in instances
    ]

    async def work(index: int) -> bool:
        tight, loose = pairs[index % 2]
        quota = QuotaContext(_request())
        quota(loose, cost=1)
        quota(tight, cost=2, skip_handler=True)
        return await quota.apply()

    try:
        results = await asyncio.gather(*(work(i) for i in range(60)))
        assert sum(results) == 5
        tight, loose = pairs[0]
        assert (await tight.stat(_request())).hits_remaining == 0  # type: ignore[union-attr]
        assert (await loose.stat(_request())).hits_remaining == 95  # type: ignore[union-attr]
    finally:
        await instances[0].reset()
        for backend in instances:
            await backend.close()
