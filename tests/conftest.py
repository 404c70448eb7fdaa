"""Shared fixtures: Traffik runs on asyncio; real Redis and Memcached servers for the session.

`redis_url` and `memcached_url` start a server on a free loopback port (or take
`TRAFFIK_REDIS_URL` / `TRAFFIK_MEMCACHED_URL`); `make_backend` makes backends of each store in
turn (memory, SQLite, Redis, Memcached), each in a namespace of its own. `SKIP_REDIS_TESTS=true` /
`SKIP_MEMCACHED_TESTS=true` skip the tests that need one; a missing binary skips them too,
except with `CI=true`, where it fails the run.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Callable

import pytest

from traffik.backends import from_url
from traffik.backends.base import ThrottleBackend
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


STORES = [
    "memory",
    "sqlite",
    pytest.param("redis", marks=pytest.mark.redis),
    pytest.param("memcached", marks=pytest.mark.memcached),
]
"""Every store a backend keeps its state in (`make_backend`)."""


@pytest.fixture(params=STORES)
def make_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., ThrottleBackend]:
    """`make(**options)`: a backend of one store (a test module may define its own), each in a
    namespace of its own; `make.kind` names the store."""
    kind = request.param
    if kind == "memory":
        url = "memory://"
    elif kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'traffik.db'}"
    else:
        url = request.getfixturevalue(f"{kind}_url")

    def make(**options: Any) -> ThrottleBackend:
        return from_url(url, namespace=f"t{uuid.uuid4().hex[:12]}", **options)

    make.kind = kind  # type: ignore[attr-defined]
    return make


@pytest.fixture
async def clocked_backend(
    make_backend: Callable[..., ThrottleBackend],
) -> AsyncIterator[ThrottleBackend]:
    """A backend of `make_backend`'s store on a `ManualClock`, entered for the test."""
    from traffik.clock import ManualClock

    backend = make_backend(clock=ManualClock(1_700_000_000.0))
    async with backend():
        yield backend
