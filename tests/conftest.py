"""Shared fixtures: Traffik runs on asyncio; real Redis and Memcached servers for the session.

`redis_url` and `memcached_url` start a server on a free loopback port (or take
`TRAFFIK_REDIS_URL` / `TRAFFIK_MEMCACHED_URL`). `SKIP_REDIS_TESTS=true` /
`SKIP_MEMCACHED_TESTS=true` skip the tests that need one; a missing binary skips them too,
except with `CI=true`, where it fails the run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from traffik.testing.servers import (
    MemcachedServer,
    RedisServer,
    env_flag,
    free_port,
    require_binaries,
)


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis server's URL for the session."""
    if os.environ.get("TRAFFIK_REDIS_URL") and not env_flag("SKIP_REDIS_TESTS"):
        yield os.environ["TRAFFIK_REDIS_URL"]
        return
    require_binaries(("redis-server",), "SKIP_REDIS_TESTS", "install redis-server")
    server = RedisServer(tmp_path_factory.mktemp("redis"), free_port()).start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def memcached_url() -> Iterator[str]:
    """A Memcached server's URL for the session."""
    if os.environ.get("TRAFFIK_MEMCACHED_URL") and not env_flag("SKIP_MEMCACHED_TESTS"):
        yield os.environ["TRAFFIK_MEMCACHED_URL"]
        return
    binary = require_binaries(("memcached",), "SKIP_MEMCACHED_TESTS", "install memcached")
    server = MemcachedServer(binary).start()
    try:
        yield server.url
    finally:
        server.stop()
