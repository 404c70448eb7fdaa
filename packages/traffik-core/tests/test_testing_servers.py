"""`traffik.testing.servers`: the ports it hands out and the servers it starts are its own."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from traffik.testing import servers
from traffik.testing.servers import MemcachedServer, RedisServer, free_port, require_binaries


def test_free_port_never_hands_out_a_port_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    # Fault injection: the kernel offers a port again once the probe socket is closed (it
    # did: a Redis Cluster fixture got two nodes on one port, and its tests saw two nodes'
    # keys where one was).
    offered = iter([50139, 50139, 50140, 50140, 50141])

    class Probe:
        def __init__(self, *args: Any) -> None:
            self.port = 0

        def __enter__(self) -> Probe:
            return self

        def __exit__(self, *exc: Any) -> None:
            return None

        def bind(self, address: tuple[str, int]) -> None:
            self.port = next(offered) if address[1] == 0 else address[1]

        def getsockname(self) -> tuple[str, int]:
            return ("127.0.0.1", self.port)

    monkeypatch.setattr(servers, "_handed_out", set())
    monkeypatch.setattr(servers.socket, "socket", Probe)
    assert [free_port(), free_port(), free_port()] == [50139, 50140, 50141]


def test_a_redis_server_whose_port_another_server_holds_fails_to_start(tmp_path: Path) -> None:
    require_binaries(["redis-server", "redis-cli"], "SKIP_REDIS_TESTS", "install redis-server")
    first = RedisServer(tmp_path / "first", free_port()).start()
    try:
        second = RedisServer(tmp_path / "second", first.port)
        with pytest.raises(RuntimeError, match=f"port {first.port}"):
            second.start()  # (another server answers PING there: not this one)
        assert not second.running
        assert first.running
    finally:
        first.stop()


def test_a_memcached_whose_port_another_server_holds_fails_to_start(tmp_path: Path) -> None:
    require_binaries(["memcached"], "SKIP_MEMCACHED_TESTS", "install memcached")
    # Fault injection: a "memcached" that never binds its port (a real one that lost the race
    # for it may still be running when the port answers), so only the other server answers.
    slow = tmp_path / "memcached-that-never-binds"
    slow.write_text("#!/bin/sh\nexec sleep 30\n")
    slow.chmod(0o755)
    first = MemcachedServer().start()
    try:
        second = MemcachedServer(binary=str(slow), port=first.port)
        with pytest.raises(RuntimeError, match="another server answers there"):
            second.start()
        assert second.process is None  # (stopped: not left running, unseen)
        assert first.process is not None and first.process.poll() is None
    finally:
        first.stop()


def test_free_port_gives_ports_that_are_free() -> None:
    ports = [free_port() for _ in range(20)]
    assert len(set(ports)) == 20
    for port in ports:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))  # (free: nothing listens there)
