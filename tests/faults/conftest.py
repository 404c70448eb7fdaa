"""The fault suite's servers: real `redis-server` and `memcached` processes on loopback, one per
test, which the test kills, freezes and restarts; and a Redis Cluster of three masters with a
replica each, which loses a master.

Every test here is marked `faults` (`make test` runs them, `make test-fast` does not). A missing
binary skips them, except with `CI=true`, where it fails the run.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Callable

import pytest

from traffik.testing.servers import MemcachedServer, RedisCluster, RedisServer, free_port

_TRUE = ("1", "true", "yes", "on")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.faults)


def _require(*binaries: str) -> None:
    missing = [name for name in binaries if shutil.which(name) is None]
    if not missing:
        return
    message = f"{', '.join(missing)} not on PATH: the fault suite needs real servers"
    if os.environ.get("CI", "").strip().lower() in _TRUE:
        pytest.fail(f"CI=true: {message}", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[Callable[[], RedisServer]]:
    """Start Redis servers of this test's own (`redis_server()`), each killed at the end."""
    _require("redis-server", "redis-cli")
    started: list[RedisServer] = []

    def start() -> RedisServer:
        server = RedisServer(tmp_path / f"redis{len(started)}", free_port()).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def memcached_server() -> Iterator[Callable[[], MemcachedServer]]:
    """Start memcached servers of this test's own (`memcached_server()`), each killed at the end."""
    _require("memcached")
    started: list[MemcachedServer] = []

    def start() -> MemcachedServer:
        started.append(MemcachedServer(shutil.which("memcached") or "memcached").start())
        return started[-1]

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def redis_cluster_3x3(tmp_path: Path) -> Iterator[RedisCluster]:
    """Three masters with a replica each; a silent master is failed over after one second, and
    slots whose master is lost do not take the others down (`cluster-require-full-coverage no`,
    as the deployment docs recommend for rate limiting)."""
    _require("redis-server", "redis-cli")
    cluster = RedisCluster(
        tmp_path,
        masters=3,
        replicas=1,
        node_timeout=1000,
        extra=("--cluster-require-full-coverage", "no"),
    )
    try:
        yield cluster.start()
    finally:
        cluster.stop()
