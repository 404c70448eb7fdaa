"""Redis servers for the tests: started on free loopback ports, or reached through environment URLs.

- `redis_url`: one `redis-server` for the session, or `TRAFFIK_REDIS_URL` when set.
- `redis_cluster_url`: a three-node Redis Cluster for the session, or `TRAFFIK_REDIS_CLUSTER_URL`.
- `redis_server`: a factory for dedicated servers a test may kill and restart.
- `redis_sentinel_url`: a `redis+sentinel://` URL of one Sentinel watching a master `mymaster`.

`SKIP_REDIS_TESTS=true` skips every test that needs a server. A missing `redis-server` skips
them too, except with `CI=true`, where it fails the run.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Callable

import pytest

from traffik.testing.processes import freeze, thaw

_TRUE = ("1", "true", "yes")


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


def _free_port(*, with_bus: bool = False) -> int:
    """A loopback port that is free now (and, for cluster nodes, whose bus port +10000 is too)."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if not with_bus:
            return port
        if port + 10000 < 65536:
            with socket.socket() as bus:
                try:
                    bus.bind(("127.0.0.1", port + 10000))
                except OSError:
                    continue
            return port


def _redis_cli(port: int, *args: str) -> str:
    return subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    ).stdout


class RedisServer:
    """A `redis-server` child process on a fixed loopback port.

    `stop()` kills it, `start()` brings it back on the same port, `pause()`/`resume()`
    freeze and thaw it.
    """

    def __init__(self, directory: Path, port: int, *extra: str) -> None:
        self.directory = directory
        self.port = port
        self.extra = extra
        self.url = f"redis://127.0.0.1:{port}/0"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._process = subprocess.Popen(
            [
                *("redis-server", "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no", "--dir", str(self.directory), *self.extra),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while _redis_cli(self.port, "ping").strip() != "PONG":
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.05)
        return self

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections open, nothing answers."""
        assert self._process is not None
        freeze(self._process)

    def resume(self) -> None:
        assert self._process is not None
        thaw(self._process)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait(timeout=10)
        self._process = None


def _require_redis_server() -> None:
    if os.environ.get("SKIP_REDIS_TESTS", "").lower() in _TRUE:
        pytest.skip("SKIP_REDIS_TESTS=true: Redis tests skipped")
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        message = (
            "redis-server/redis-cli not on PATH (install redis-server, or set TRAFFIK_REDIS_URL)"
        )
        if os.environ.get("CI", "").lower() in _TRUE:
            pytest.fail(f"{message}; CI=true requires the Redis tests to run", pytrace=False)
        pytest.skip(message)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis server's URL for the whole session."""
    if os.environ.get("SKIP_REDIS_TESTS", "").lower() in _TRUE:
        pytest.skip("SKIP_REDIS_TESTS=true: Redis tests skipped")
    if os.environ.get("TRAFFIK_REDIS_URL"):
        yield os.environ["TRAFFIK_REDIS_URL"]
        return
    _require_redis_server()
    server = RedisServer(tmp_path_factory.mktemp("redis"), _free_port()).start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A `redis+cluster://` URL of a three-master Redis Cluster for the whole session."""
    if os.environ.get("SKIP_REDIS_TESTS", "").lower() in _TRUE:
        pytest.skip("SKIP_REDIS_TESTS=true: Redis tests skipped")
    if os.environ.get("TRAFFIK_REDIS_CLUSTER_URL"):
        yield os.environ["TRAFFIK_REDIS_CLUSTER_URL"]
        return
    _require_redis_server()
    root = tmp_path_factory.mktemp("redis-cluster")
    nodes = []
    try:
        for i in range(3):
            port = _free_port(with_bus=True)
            extra = ("--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf")
            nodes.append(RedisServer(root / f"node{i}", port, *extra).start())
        addresses = [f"127.0.0.1:{node.port}" for node in nodes]
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *addresses,
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            capture_output=True,
            timeout=60,
            check=True,
        )
        deadline = time.monotonic() + 30
        while not all("cluster_state:ok" in _redis_cli(n.port, "cluster", "info") for n in nodes):
            if time.monotonic() > deadline:
                raise RuntimeError("the Redis Cluster did not reach cluster_state:ok")
            time.sleep(0.1)
        yield "redis+cluster://" + ",".join(addresses)
    finally:
        for node in nodes:
            node.stop()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[Callable[[], RedisServer]]:
    """Start dedicated servers (`redis_server()`), each killed at the end of the test."""
    _require_redis_server()
    started: list[RedisServer] = []

    def start() -> RedisServer:
        server = RedisServer(tmp_path / f"redis{len(started)}", _free_port()).start()
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
    master = RedisServer(root / "master", _free_port()).start()
    sentinel_port = _free_port()
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
        while str(master.port) not in _redis_cli(sentinel_port, *query):
            if sentinel.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("redis sentinel did not start")
            time.sleep(0.05)
        yield f"redis+sentinel://127.0.0.1:{sentinel_port}/mymaster"
    finally:
        sentinel.kill()
        sentinel.wait(timeout=10)
        master.stop()
