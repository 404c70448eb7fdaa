"""The memory of refused clients on Redis: a flood from one client costs the store one round
trip per wait, not one per request (`traffik.refusals`); turned off, every request is one."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import Depends, FastAPI
from redis.asyncio import Redis

from traffik import HTTPThrottle
from traffik.backends.redis import RedisBackend

pytestmark = [pytest.mark.redis, pytest.mark.anyio]


async def _reads(meter: Redis) -> int:
    return int((await meter.info("stats"))["total_reads_processed"])


@pytest.fixture
async def meter(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.mark.parametrize("remember", [True, False])
async def test_a_flood_from_one_client_spares_the_store(
    redis_url: str, meter: Redis, remember: bool
) -> None:
    backend = RedisBackend(redis_url, namespace=f"flood-{remember}", cache_refusals=remember)
    throttle = HTTPThrottle("flood", rate="10/min", backend=backend)
    app = FastAPI()

    @app.get("/", dependencies=[Depends(throttle)])
    async def index() -> dict[str, bool]:
        return {"ok": True}

    transport = httpx.ASGITransport(app=app)
    async with backend(), httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        await backend.ready()  # connected, scripts aside
        idle = await _reads(meter)
        idle = (await _reads(meter)) - idle
        before = await _reads(meter)
        statuses = [(await http.get("/")).status_code for _ in range(1000)]
        trips = (await _reads(meter)) - before - idle
    assert statuses == [200] * 10 + [429] * 990
    if remember:
        assert trips <= 100  # at least 90 % fewer: 10 admitted, 1 refusal, then memory
        assert trips <= 15
    else:
        assert trips >= 1000
