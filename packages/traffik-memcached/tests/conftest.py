"""Memcached servers for the tests: started on free loopback ports, or given by the environment.

- `TRAFFIK_MEMCACHED_URL` (e.g. from docker-compose) replaces the local single server, and
  `TRAFFIK_MEMCACHED_CLUSTER_URL` (`memcached://h1:11211,h2:11211`) the local pair.
- `SKIP_MEMCACHED_TESTS=true` skips every test that needs a server.
- Without a `memcached` binary the tests are skipped, except with `CI=true`, where that fails.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Callable

import pytest

from traffik.testing.servers import MemcachedServer, env_flag, require_binaries


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def memcached_binary() -> str:
    """The `memcached` executable, or a skip (a failure under `CI=true`) saying why there is none."""
    return require_binaries(
        ("memcached",),
        "SKIP_MEMCACHED_TESTS",
        "apt-get install memcached, or set TRAFFIK_MEMCACHED_URL",
    )


@contextlib.contextmanager
def _started(binary: str) -> Iterator[MemcachedServer]:
    server = MemcachedServer(binary).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def memcached_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """One memcached server for the whole session."""
    if env_flag("SKIP_MEMCACHED_TESTS"):
        pytest.skip("memcached tests skipped: SKIP_MEMCACHED_TESTS=true")
    if os.environ.get("TRAFFIK_MEMCACHED_URL"):
        yield os.environ["TRAFFIK_MEMCACHED_URL"]
        return
    with _started(request.getfixturevalue("memcached_binary")) as server:
        yield server.url


@pytest.fixture(scope="session")
def memcached_cluster_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """Two memcached servers, as one `memcached://a,b` URL."""
    if env_flag("SKIP_MEMCACHED_TESTS"):
        pytest.skip("memcached tests skipped: SKIP_MEMCACHED_TESTS=true")
    if os.environ.get("TRAFFIK_MEMCACHED_CLUSTER_URL"):
        yield os.environ["TRAFFIK_MEMCACHED_CLUSTER_URL"]
        return
    binary = request.getfixturevalue("memcached_binary")
    with _started(binary) as first, _started(binary) as second:
        yield f"memcached://127.0.0.1:{first.port},127.0.0.1:{second.port}"


@pytest.fixture
def start_memcached(memcached_binary: str) -> Iterator[Callable[[], MemcachedServer]]:
    """Starts memcached servers of this test's own (to stop, pause or restart); all stopped at the end."""
    servers: list[MemcachedServer] = []

    def start() -> MemcachedServer:
        servers.append(MemcachedServer(memcached_binary).start())
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def memcached_server(start_memcached: Callable[[], MemcachedServer]) -> MemcachedServer:
    """A memcached of this test's own, which the test may stop and start again."""
    return start_memcached()
