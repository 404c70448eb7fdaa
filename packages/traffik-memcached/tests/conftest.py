"""Memcached servers for the tests: started on free loopback ports, or given by the environment.

- `TRAFFIK_MEMCACHED_URL` (e.g. from docker-compose) replaces the local single server, and
  `TRAFFIK_MEMCACHED_CLUSTER_URL` (`memcached://h1:11211,h2:11211`) the local pair.
- `SKIP_MEMCACHED_TESTS=true` skips every test that needs a server.
- Without a `memcached` binary the tests are skipped, except with `CI=true`, where that fails.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from typing import Callable, Optional

import pytest

from traffik.testing.processes import freeze, thaw


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class MemcachedServer:
    """A `memcached` process on a loopback port; `stop()` and `start()` again keep the port."""

    def __init__(self, binary: str, port: Optional[int] = None) -> None:
        self.binary = binary
        self.port = port or free_port()
        self.process: Optional[subprocess.Popen[bytes]] = None

    @property
    def url(self) -> str:
        return f"memcached://127.0.0.1:{self.port}"

    def start(self) -> MemcachedServer:
        command = [
            self.binary,
            "-l",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            "0",
            "-m",
            "64",
            "-t",
            "2",
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            command += ["-u", "root"]  # memcached refuses to run as root otherwise
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                raise RuntimeError(f"memcached on port {self.port} exited at start: {err.strip()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"memcached on port {self.port} did not accept connections within 10 s")

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): it keeps its connections but answers nothing."""
        assert self.process is not None
        freeze(self.process)

    def resume(self) -> None:
        assert self.process is not None
        thaw(self.process)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGCONT)
            process.kill()
            process.wait(timeout=10)
        if process is not None and process.stderr is not None:
            process.stderr.close()


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def memcached_binary() -> str:
    """The `memcached` executable, or a skip (a failure under `CI=true`) saying why there is none."""
    if _flag("SKIP_MEMCACHED_TESTS"):
        pytest.skip("memcached tests skipped: SKIP_MEMCACHED_TESTS=true")
    binary = shutil.which("memcached")
    if binary is None:
        message = "memcached is not installed (apt-get install memcached), and TRAFFIK_MEMCACHED_URL is not set"
        if _flag("CI"):
            pytest.fail(f"CI=true: {message}", pytrace=False)
        pytest.skip(message)
    return binary


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
    if _flag("SKIP_MEMCACHED_TESTS"):
        pytest.skip("memcached tests skipped: SKIP_MEMCACHED_TESTS=true")
    if os.environ.get("TRAFFIK_MEMCACHED_URL"):
        yield os.environ["TRAFFIK_MEMCACHED_URL"]
        return
    with _started(request.getfixturevalue("memcached_binary")) as server:
        yield server.url


@pytest.fixture(scope="session")
def memcached_cluster_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """Two memcached servers, as one `memcached://a,b` URL."""
    if _flag("SKIP_MEMCACHED_TESTS"):
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
