"""spec/core.md §6 and §7, audited on real servers: the Redis and Memcached claims and `[BUG]`s
a traffik 1.2 user meets first (1.2 constructor forms, init failures, keys and long windows)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from traffik.backends.memcached.aiomcache import MemcachedBackend
from traffik.backends.redis.aioredis import RedisBackend
from traffik.exceptions import BackendConnectionError
from traffik.rates import Rate
from traffik.strategies import BUILTIN_STRATEGIES, FixedWindow
from traffik.testing.servers import RedisServer, free_port, require_binaries

pytestmark = pytest.mark.anyio


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("strategy", BUILTIN_STRATEGIES, ids=lambda s: s.__name__)
async def test_redis_traffik12_form_decides_with_every_strategy(
    redis_url: str, strategy: type
) -> None:
    backend = RedisBackend(connection=redis_url, namespace=f"audit12-{strategy.__name__}")
    rate = Rate.parse("2/min")
    try:
        await backend.reset()
        waits = [await strategy()("client", rate, backend, 1) for _ in range(3)]
        assert waits[:2] == [0, 0] and waits[2] > 0
    finally:
        await backend.reset()
        await backend.close()


async def test_redis_client_without_decode_responses_still_throttles(redis_url: str) -> None:
    """§6.1 [BUG]: a client returning bytes silently disabled stateful strategies."""
    from traffik.strategies import TokenBucket

    client = aioredis.from_url(redis_url)  # decode_responses=False
    backend = RedisBackend(client, namespace="audit-bytes")
    try:
        await backend.reset()
        waits = [await TokenBucket()("client", Rate.parse("2/min"), backend, 1) for _ in range(3)]
        assert waits[:2] == [0, 0] and waits[2] > 0
    finally:
        await backend.reset()
        await backend.close()
        await client.aclose()


async def test_redis_failed_init_is_not_half_initialised(tmp_path: Path) -> None:
    """§6.2 [BUG]: after a failed init, later initialize() calls skipped the set-up."""
    require_binaries(("redis-server",), "SKIP_REDIS_TESTS", "install redis-server")
    port = free_port()
    backend = RedisBackend(f"redis://127.0.0.1:{port}/0", namespace="audit-half")
    with pytest.raises(BackendConnectionError):
        await backend.initialize()
    assert not await backend.ready()
    server = RedisServer(tmp_path, port).start()  # the server comes up
    try:
        await backend.initialize()
        assert await backend.ready()
        assert await FixedWindow()("client", Rate.parse("1/min"), backend, 1) == 0
    finally:
        await backend.close()
        server.stop()


async def test_redis_unreachable_at_op_time_is_a_connection_error() -> None:
    """§6.2 [DECIDE]: connection-class errors map to `BackendConnectionError`."""
    down = f"redis://127.0.0.1:{closed_port()}/0"
    backend = RedisBackend(down, namespace="audit-down", connect_timeout=0.2)
    with pytest.raises(BackendConnectionError):
        await backend.get("k")


async def test_memcached_ready_never_leaks_os_errors() -> None:
    """§7.2 [BUG]: `ready()` on a refused connection raised `ConnectionRefusedError`."""
    backend = MemcachedBackend(url=f"memcached://127.0.0.1:{closed_port()}", connect_timeout=0.2)
    assert await backend.ready() is False
    with pytest.raises(BackendConnectionError):
        await backend.get("k")


async def test_memcached_keys_with_spaces_and_long_keys_work(memcached_url: str) -> None:
    """§7.2 [BUG]/[DECIDE]: keys with spaces or over 250 bytes errored; ours hashes them."""
    backend = MemcachedBackend(url=memcached_url, namespace="audit-keys")
    rate = Rate.parse("2/min")
    try:
        for key in ("a client with spaces", "x" * 400, "ünïcode\tclient"):
            waits = [await FixedWindow()(key, rate, backend, 1) for _ in range(3)]
            assert waits[:2] == [0, 0] and waits[2] > 0
    finally:
        await backend.reset()
        await backend.close()


@pytest.mark.parametrize("strategy", BUILTIN_STRATEGIES, ids=lambda s: s.__name__)
async def test_memcached_windows_over_30_days_throttle(memcached_url: str, strategy: type) -> None:
    """§7.2 [BUG]: an exptime over 30 days was read as a Unix time, so `2/40days` never
    throttled."""
    backend = MemcachedBackend(url=memcached_url, namespace=f"audit-long-{strategy.__name__}")
    rate = Rate.parse("2/40days")
    try:
        waits = [await strategy()("client", rate, backend, 1) for _ in range(3)]
        assert waits[:2] == [0, 0] and waits[2] > 0
    finally:
        await backend.reset()
        await backend.close()
