"""The Redis and Memcached backends take traffik 1.2's constructor arguments (spec: core.md §6.1, §7.1),
and Redis locks take traffik 1.2's lock arguments (core.md §4.2).

Building a backend does no I/O, so only the lock test needs a server.
"""

from __future__ import annotations

import asyncio

import pytest

from traffik.backends.memcached import MemcachedBackend
from traffik.backends.memcached.aiomcache import MemcachedBackend as LegacyMemcachedBackend
from traffik.backends.redis import RedisBackend
from traffik.backends.redis.aioredis import RedisBackend as LegacyRedisBackend
from traffik.exceptions import ConfigurationError, LockTimeoutError


def test_redis_backend_takes_traffik12_arguments() -> None:
    backend = RedisBackend(
        connection="redis://localhost:6379/0",
        namespace="legacy",
        identifier=None,
        handle_throttled=None,
        persistent=False,
        on_error="allow",
        lock_type="redis",
        lock_blocking=True,
        lock_ttl=2.0,
        lock_blocking_timeout=1.0,
        lock_contention_threshold=3,
        url_kwargs={"max_connections": 4},
    )
    assert (backend.namespace, backend.persistent, backend.on_error) == ("legacy", False, "allow")
    assert (backend.lock_ttl, backend.lock_blocking_timeout) == (2.0, 1.0)
    assert LegacyRedisBackend is RedisBackend


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"lock_type": "redlock"}, "lock_type='redlock' was dropped"),
        ({"lock_contention_threshold": 0}, "lock_contention_threshold=0"),
    ],
)
def test_redis_backend_refuses_what_it_cannot_honour(options: dict, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        RedisBackend("redis://localhost:6379/0", namespace="x", **options)


def test_memcached_backend_takes_traffik12_arguments() -> None:
    backend = MemcachedBackend(
        host="localhost",
        port=11211,
        pool_size=4,
        pool_minsize=1,
        connection_args=None,
        namespace=":memcached:",
        identifier=None,
        handle_throttled=None,
        persistent=False,
        on_error="throttle",
        lock_blocking=None,
        lock_ttl=None,
        lock_blocking_timeout=None,
        lock_contention_threshold=1,
        track_keys=True,
        number_of_tracking_shards=16,
    )
    assert (backend.namespace, backend.pool_size, backend.persistent) == (":memcached:", 4, False)
    assert MemcachedBackend(url="memcached://localhost:11211", connection_args={}) is not None
    assert LegacyMemcachedBackend is MemcachedBackend


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"number_of_tracking_shards": 0}, "number_of_tracking_shards=0"),
        ({"pool_minsize": -1}, "pool_minsize=-1"),
        ({"connection_args": {"ssl": True}}, "connection options .* are not supported"),
    ],
)
def test_memcached_backend_refuses_what_it_cannot_honour(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MemcachedBackend(**options)


@pytest.mark.anyio
async def test_a_redis_lock_enforces_its_ttl_locally(redis_url: str) -> None:
    backend = RedisBackend(redis_url, namespace="traffik12-locks")
    try:
        with pytest.raises(LockTimeoutError, match=r"ttl=0\.2 x local_ttl_factor=0\.5"):
            async with backend.lock(
                "slow", ttl=0.2, enforce_ttl_locally=True, local_ttl_factor=0.5
            ):
                await asyncio.sleep(5)
        async with backend.lock("slow", blocking=False):  # released before the error
            pass
    finally:
        await backend.reset()
        await backend.close()
