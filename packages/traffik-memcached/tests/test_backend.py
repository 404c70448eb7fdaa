"""Configuration, exports, counters' edge cases and life across event loops."""

from __future__ import annotations

import asyncio
import time

import pytest

import traffik.backends.memcached as package
from traffik.backends import from_url, get_backend_class
from traffik.backends.memcached import MemcachedBackend
from traffik.backends.memcached._servers import Server
from traffik.exceptions import ConfigurationError
from traffik.rates import Rate
from traffik.strategies import FixedWindow, TokenBucket


def test_public_api() -> None:
    assert package.__all__ == sorted(package.__all__)
    assert all(hasattr(package, name) for name in package.__all__)
    from traffik.backends.memcached.aiomcache import MemcachedBackend as Legacy

    assert Legacy is MemcachedBackend


def test_found_by_name_and_url() -> None:
    assert get_backend_class("memcached") is MemcachedBackend
    backend = from_url("memcached://h1:11211,h2:11212", namespace="app", pool_size=4)
    assert isinstance(backend, MemcachedBackend)
    assert backend.servers == [Server("h1", 11211), Server("h2", 11212)]
    assert backend.namespace == "app" and backend.pool_size == 4


@pytest.mark.parametrize(
    ("options", "servers"),
    [
        ({}, [Server("localhost", 11211)]),
        ({"host": "cache", "port": 11212}, [Server("cache", 11212)]),
        ({"url": "memcached://cache"}, [Server("cache", 11211)]),
        ({"url": "memcached://"}, [Server("localhost", 11211)]),
        (
            {"url": "memcached://[::1]:11300,10.0.0.2"},
            [Server("::1", 11300), Server("10.0.0.2", 11211)],
        ),
        ({"servers": ["a:1", ("b", 2)]}, [Server("a", 1), Server("b", 2)]),
    ],
)
def test_where_the_servers_are(options: dict, servers: list) -> None:
    backend = MemcachedBackend(**options)
    assert backend.servers == servers
    assert backend.namespace == "memcached"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"url": "memcached://a:1", "host": "b"}, "either url"),
        ({"url": "memcached://a:1", "port": 2}, "either url"),
        ({"url": "memcached://a:1", "servers": ["b:1"]}, "either url"),
        ({"servers": ["b:1"], "host": "c"}, "either servers"),
        ({"url": "redis://a:1"}, "scheme must be memcached"),
        ({"url": "memcached://a:1/0"}, "only host:port"),
        ({"url": "memcached://a:notaport"}, "port 'notaport'"),
        ({"url": "memcached://a:1,a:1"}, "listed twice"),
        ({"servers": []}, "at least one"),
        ({"servers": "a:1"}, "pass a list"),
        ({"pool_size": 0}, "pool_size=0"),
        ({"command_timeout": 0}, "command_timeout=0"),
        ({"connect_timeout": float("inf")}, "connect_timeout=inf"),
        ({"generation_refresh": -1}, "generation_refresh=-1"),
        ({"namespace": ""}, "namespace"),
        ({"on_error": "explode"}, "on_error"),
    ],
)
def test_bad_configuration_is_refused(options: dict, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        MemcachedBackend(**options)


@pytest.mark.parametrize(
    "options",
    [
        {"url": "memcached://user:s3cret@a:1"},
        {"url": "memcached://user:s3cret@a:1", "host": "b"},
        {"url": "memcache://user:s3cret@a:1"},
    ],
)
def test_a_refused_url_is_named_without_its_password(options: dict) -> None:
    with pytest.raises(ConfigurationError) as raised:
        MemcachedBackend(**options)
    assert "s3cret" not in str(raised.value) and "user:***@a:1" in str(raised.value)


@pytest.mark.memcached
@pytest.mark.anyio
async def test_counters_are_signed_and_stay_exact(memcached_url: str) -> None:
    backend = MemcachedBackend(memcached_url, namespace=f"counters-{time.time_ns()}")
    try:
        assert await backend.decrement("missing") == -1  # traffik 1.2 stores "-1"
        assert await backend.get("missing") == "-1"
        assert await backend.increment("missing", 3) == 2
        await backend.set("ten", "10")
        assert await backend.decrement("ten", 2) == 8
        assert await backend.get("ten") == "8"  # memcached pads a shorter number with spaces
        assert await backend.increment("ten", 2.0) == 10  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError, match="whole"):
            await backend.increment("ten", 0.5)  # type: ignore[arg-type]
        assert await backend.get("never-set") is None
    finally:
        await backend.reset()
        await backend.close()


@pytest.mark.memcached
def test_one_backend_serves_successive_event_loops(memcached_url: str) -> None:
    backend = MemcachedBackend(memcached_url, namespace=f"loops-{time.time_ns()}")
    rate = Rate.parse("3/hour")

    async def hit() -> bool:
        return (await TokenBucket().decide("u", rate, backend, 1)).allowed and (
            await FixedWindow().decide("u", rate, backend, 1)
        ).allowed

    assert asyncio.run(hit())
    assert asyncio.run(hit())
    assert asyncio.run(hit())
    assert not asyncio.run(hit())

    async def finish() -> None:
        await backend.reset()
        await backend.close()

    asyncio.run(finish())


@pytest.mark.memcached
@pytest.mark.anyio
async def test_scan_reads_a_dump_larger_than_a_stream_buffer(memcached_url: str) -> None:
    # `lru_crawler metadump` of a busy server runs to megabytes; it was read as one chunk,
    # which asyncio's stream limit (64 KiB) refused: scan (and `python -m traffik`) failed on
    # any server holding more than about a thousand keys.
    other = MemcachedBackend(memcached_url, namespace="scan-crowd")
    mine = MemcachedBackend(memcached_url, namespace="scan-few")
    try:
        await asyncio.gather(
            *(other.set(other.get_key(f"{'k' * 150}{i}"), "1", 60) for i in range(1500))
        )
        await mine.set(mine.get_key("a"), "1", 60)
        await mine.set(mine.get_key("b"), "1", 60)
        assert sorted(await mine.scan(mine.get_key(""))) == [mine.get_key("a"), mine.get_key("b")]
        assert len(await other.scan(other.get_key(""), limit=10)) == 10
        assert await mine.get(mine.get_key("a")) == "1"  # (the connection is still in step)
    finally:
        await other.reset()
        await mine.reset()
        await other.close()
        await mine.close()
