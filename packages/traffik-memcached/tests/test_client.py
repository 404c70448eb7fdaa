"""The node client's pool: grows on demand up to `pool_size`, never reuses a connection mid-reply."""

from __future__ import annotations

import asyncio
from typing import Any

import aiomcache
import pytest

from traffik.backends.memcached import MemcachedBackend
from traffik.exceptions import BackendConnectionError

pytestmark = [pytest.mark.memcached, pytest.mark.anyio]


async def _connections(stats_client: aiomcache.Client) -> int:
    return int((await stats_client.stats())[b"curr_connections"] or 0)


async def test_the_pool_grows_to_pool_size_and_no_further(memcached_server: Any) -> None:
    stats = aiomcache.Client("127.0.0.1", memcached_server.port, pool_size=1)
    base = await _connections(stats)
    backend = MemcachedBackend(memcached_server.url, namespace="pool", pool_size=4)
    try:
        await asyncio.gather(*(backend.increment("n") for _ in range(50)))
        assert await _connections(stats) - base == 4
        assert await backend.get("n") == "50"
        await backend.close()
        for _ in range(100):  # the server notices closed connections a moment later
            if await _connections(stats) == base:
                break
            await asyncio.sleep(0.01)
        assert await _connections(stats) == base
    finally:
        await backend.close()
        await stats.close()


async def test_a_timed_out_reply_is_never_read_by_the_next_command(memcached_server: Any) -> None:
    backend = MemcachedBackend(
        memcached_server.url, namespace="stale", pool_size=1, command_timeout=0.2
    )
    try:
        await backend.set("a", "A")
        await backend.set("b", "B")
        memcached_server.pause()
        try:
            with pytest.raises(BackendConnectionError):
                await backend.get("a")  # sent, but its answer comes only after the timeout
        finally:
            memcached_server.resume()
        assert await backend.get("b") == "B"
        assert await backend.get("a") == "A"
    finally:
        await backend.close()
