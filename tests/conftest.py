"""Shared fixtures: Traffik runs on asyncio; real Redis and Memcached servers for the session.

`redis_url` and `memcached_url` start a server on a free loopback port (or take
`TRAFFIK_REDIS_URL` / `TRAFFIK_MEMCACHED_URL`). `SKIP_REDIS_TESTS=true` /
`SKIP_MEMCACHED_TESTS=true` skip the tests that need one; a missing binary skips them too,
except with `CI=true`, where it fails the run.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from traffik.testing.servers import MemcachedServer, RedisServer, free_port

_TRUE = ("1", "true", "yes", "on")


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


def _require(binary: str, skip_flag: str) -> str:
    """`binary`'s path, or a skip (`skip_flag`, or a missing binary; a failure under CI)."""
    if _flag(skip_flag):
        pytest.skip(f"{skip_flag}=true")
    path = shutil.which(binary)
    if path is None:
        message = f"{binary} is not on PATH"
        if _flag("CI"):
            pytest.fail(f"CI=true: {message}", pytrace=False)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis server's URL for the session."""
    if os.environ.get("TRAFFIK_REDIS_URL") and not _flag("SKIP_REDIS_TESTS"):
        yield os.environ["TRAFFIK_REDIS_URL"]
        return
    _require("redis-server", "SKIP_REDIS_TESTS")
    server = RedisServer(tmp_path_factory.mktemp("redis"), free_port()).start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def memcached_url() -> Iterator[str]:
    """A Memcached server's URL for the session."""
    if os.environ.get("TRAFFIK_MEMCACHED_URL") and not _flag("SKIP_MEMCACHED_TESTS"):
        yield os.environ["TRAFFIK_MEMCACHED_URL"]
        return
    server = MemcachedServer(_require("memcached", "SKIP_MEMCACHED_TESTS")).start()
    try:
        yield server.url
    finally:
        server.stop()
