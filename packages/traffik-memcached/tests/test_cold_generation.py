"""The first burst after a (re)start, when no process-local copy of the namespace generation
exists yet: one read of the generation serves every hit of the burst, and the hits on one
key are decided in arrival order (the order they reached the backend)."""

from __future__ import annotations

import asyncio

import aiomcache
import pytest
from starlette.requests import Request

from traffik import HTTPThrottle
from traffik.backends.memcached import MemcachedBackend
from traffik.exceptions import ConnectionThrottled
from traffik.strategies import TokenBucket
from traffik.testing.servers import MemcachedServer

pytestmark = [pytest.mark.memcached, pytest.mark.anyio]

HITS = 20
LIMIT = 10


def _request() -> Request:
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/items",
        "root_path": "",
        "headers": [],
        "client": ("10.1.2.3", 4000),
        "app": None,
    }
    return Request(scope)


async def _admitted(throttle: HTTPThrottle) -> bool:
    try:
        await asyncio.wait_for(throttle.hit(_request()), 10)
    except ConnectionThrottled:
        return False
    return True


async def _gets(meter: aiomcache.Client) -> int:
    return int((await meter.stats())[b"cmd_get"])


async def test_a_cold_burst_reads_the_generation_once_and_keeps_arrival_order(
    memcached_server: MemcachedServer,
) -> None:
    meter = aiomcache.Client("127.0.0.1", memcached_server.port)
    backend = MemcachedBackend(memcached_server.url, namespace="cold")
    throttle = HTTPThrottle("cold", f"{LIMIT}/h", backend=backend, strategy=TokenBucket())
    try:
        before = await _gets(meter)
        answers = await asyncio.gather(*(_admitted(throttle) for _ in range(HITS)))
        reads = await _gets(meter) - before
    finally:
        await backend.close()
        await meter.close()
    assert answers == [True] * LIMIT + [False] * (HITS - LIMIT)
    # one read of the generation, and one `gets` per round (the first hit's, then the rest)
    assert reads <= 3, f"{reads} reads for {HITS} hits on one key"
