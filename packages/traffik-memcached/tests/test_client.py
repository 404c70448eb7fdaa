"""The node client's pool: grows on demand up to `pool_size`, never reuses a connection mid-reply."""

from __future__ import annotations

import asyncio
from typing import Any

import aiomcache
import pytest

from traffik.backends.memcached import MemcachedBackend
from traffik.exceptions import BackendConnectionError

pytestmark = [pytest.mark.memcached, pytest.mark.anyio]


async def _connections(port: int) -> int:
    client = aiomcache.Client("127.0.0.1", port)
    try:
        stats = await client.stats()
        return int(stats[b"curr_connections"] or 0) - 1  # minus this client's own
    finally:
        await client.close()


async def test_the_pool_grows_to_pool_size_and_no_further(memcached_server: Any) -> None:
    base = await _connections(memcached_server.port)
    backend = MemcachedBackend(memcached_server.url, namespace="pool", pool_size=4)
    try:
        await asyncio.gather(*(backend.increment("n") for _ in range(50)))
        assert await _connections(memcached_server.port) - base == 4
        assert await backend.get("n") == "50"
    finally:
        await backend.close()
    await asyncio.sleep(0.05)
    assert await _connections(memcached_server.port) == base


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
