"""Redis servers for the tests: started on free loopback ports, or reached through environment URLs.

- `redis_url`: one `redis-server` for the session, or `TRAFFIK_REDIS_URL` when set.
- `redis_cluster_url`: a three-node Redis Cluster for the session, or `TRAFFIK_REDIS_CLUSTER_URL`;
  `cluster_addresses`: its nodes' `(host, port)`; `nodes`: a plain client per node.
- `redis_server`: a factory for dedicated servers a test may kill and restart.
- `redis_sentinel_url`: a `redis+sentinel://` URL of one Sentinel watching a master `mymaster`.
- `raw`: a plain redis-py client on `redis_url`, to look at what the backend stored.
- `clocked`: a `RedisBackend` on `redis_url` under a `ManualClock` (a namespace per test
  module, reset afterwards), with the clock.

`SKIP_REDIS_TESTS=true` skips every test that needs a server. A missing `redis-server` skips
them too, except with `CI=true`, where it fails the run.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Callable

import pytest
from redis.asyncio import Redis

from traffik.backends.redis import RedisBackend
from traffik.clock import ManualClock
from traffik.testing.servers import (
    RedisCluster,
    RedisServer,
    env_flag,
    free_port,
    redis_cli,
    require_binaries,
)


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


def _require_redis_server() -> None:
    require_binaries(
        ("redis-server", "redis-cli"),
        "SKIP_REDIS_TESTS",
        "install redis-server, or set TRAFFIK_REDIS_URL",
    )


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis server's URL for the whole session."""
    if env_flag("SKIP_REDIS_TESTS"):
        pytest.skip("SKIP_REDIS_TESTS=true: Redis tests skipped")
    if os.environ.get("TRAFFIK_REDIS_URL"):
        yield os.environ["TRAFFIK_REDIS_URL"]
        return
    _require_redis_server()
    server = RedisServer(tmp_path_factory.mktemp("redis"), free_port()).start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A `redis+cluster://` URL of a three-master Redis Cluster for the whole session."""
    if env_flag("SKIP_REDIS_TESTS"):
        pytest.skip("SKIP_REDIS_TESTS=true: Redis tests skipped")
    if os.environ.get("TRAFFIK_REDIS_CLUSTER_URL"):
        yield os.environ["TRAFFIK_REDIS_CLUSTER_URL"]
        return
    _require_redis_server()
    cluster = RedisCluster(tmp_path_factory.mktemp("redis-cluster"), masters=3)
    try:
        yield cluster.start().url
    finally:
        cluster.stop()


@pytest.fixture
def cluster_addresses(redis_cluster_url: str) -> list[tuple[str, int]]:
    """The `(host, port)` of each node of `redis_cluster_url`."""
    hosts = redis_cluster_url.split("://", 1)[1].split(",")
    return [(host.rsplit(":", 1)[0], int(host.rsplit(":", 1)[1])) for host in hosts]


@pytest.fixture
async def nodes(cluster_addresses: list[tuple[str, int]]) -> AsyncIterator[list[Redis]]:
    """A plain redis-py client on each node of the cluster, to look at what each stored."""
    clients = [Redis(host=host, port=port) for host, port in cluster_addresses]
    yield clients
    for client in clients:
        await client.aclose()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[Callable[[], RedisServer]]:
    """Start dedicated servers (`redis_server()`), each killed at the end of the test."""
    _require_redis_server()
    started: list[RedisServer] = []

    def start() -> RedisServer:
        server = RedisServer(tmp_path / f"redis{len(started)}", free_port()).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def redis_sentinel_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A master and one Sentinel monitoring it as `mymaster`, for the whole session."""
    _require_redis_server()
    root = tmp_path_factory.mktemp("redis-sentinel")
    master = RedisServer(root / "master", free_port()).start()
    sentinel_port = free_port()
    config = root / "sentinel.conf"
    config.write_text(
        f"port {sentinel_port}\nbind 127.0.0.1\ndir {root}\n"
        f"sentinel monitor mymaster 127.0.0.1 {master.port} 1\n"
    )
    sentinel = subprocess.Popen(
        ["redis-server", str(config), "--sentinel"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        query = ("sentinel", "get-master-addr-by-name", "mymaster")
        while str(master.port) not in redis_cli(sentinel_port, *query):
            if sentinel.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("redis sentinel did not start")
            time.sleep(0.05)
        yield f"redis+sentinel://127.0.0.1:{sentinel_port}/mymaster"
    finally:
        sentinel.kill()
        sentinel.wait(timeout=10)
        master.stop()


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def clocked(
    redis_url: str, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[RedisBackend, ManualClock]]:
    clock = ManualClock(1_700_000_000.0)
    backend = RedisBackend(redis_url, namespace=request.module.__name__, clock=clock)
    yield backend, clock
    await backend.reset()
    await backend.close()
