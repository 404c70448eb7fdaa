"""Memcached at its connection limit (`memcached -c`): it answers a new connection with
`ERROR Too many open connections` and closes it. The error says so, and what to change,
instead of asking whether memcached runs; the connections the backend holds keep working,
and new ones open again once the server has room."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

from traffik.backends.health import CircuitState
from traffik.backends.memcached import MemcachedBackend
from traffik.exceptions import BackendConnectionError
from traffik.rates import Rate
from traffik.strategies import FixedWindow, TokenBucket
from traffik.testing.servers import free_port

pytestmark = [pytest.mark.memcached, pytest.mark.anyio]

RATE = Rate.parse("1000/hour")
REFUSAL = b"ERROR Too many open connections"


@pytest.fixture
def small_memcached(memcached_binary: str) -> Iterator[int]:
    """A memcached that takes few connections (`-c 32`, one worker thread); its port."""
    port = free_port()
    command = [memcached_binary, "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-t", "1"]
    command += ["-c", "32"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command += ["-u", "root"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            assert process.poll() is None, "memcached -c 32 exited at start"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "memcached did not start"
                time.sleep(0.02)
        yield port
    finally:
        process.kill()
        process.wait(timeout=10)


def _fill(port: int) -> list[socket.socket]:
    """Open connections until memcached refuses one; the accepted ones, held open."""
    held: list[socket.socket] = []
    for _ in range(64):
        conn = socket.create_connection(("127.0.0.1", port), timeout=2)
        conn.sendall(b"version\r\n")
        if conn.recv(64).startswith(REFUSAL):
            conn.close()
            return held
        held.append(conn)
    raise AssertionError("memcached -c 32 took 64 connections")


async def _decided_once_there_is_room(backend: MemcachedBackend, *keys: str) -> bool:
    """Whether `keys` are all admitted at once, once memcached has seen a connection closed
    (it learns of it a moment later: until then it still refuses)."""
    deadline = time.monotonic() + 5
    while True:
        found = await asyncio.gather(
            *(TokenBucket().decide(key, RATE, backend, 1) for key in keys),
            return_exceptions=True,
        )
        refused = [r for r in found if isinstance(r, BaseException)]
        if not refused:
            return all(decision.allowed for decision in found)  # type: ignore[union-attr]
        _says_connection_limit(refused[0])
        assert time.monotonic() < deadline, "memcached never had room again"
        await asyncio.sleep(0.02)


def _says_connection_limit(error: BaseException) -> None:
    message = str(error)
    assert "connection limit" in message and "-c" in message, message
    assert "is memcached running there" not in message, message


async def test_a_server_at_its_connection_limit_says_so(small_memcached: int) -> None:
    port = small_memcached
    backend = MemcachedBackend(
        f"memcached://127.0.0.1:{port}",
        namespace="limit",
        connect_timeout=0.3,
        command_timeout=0.3,
        circuit=False,
    )
    held = _fill(port)
    try:
        for strategy in (FixedWindow(), TokenBucket()):  # (the first command: a `get`)
            with pytest.raises(BackendConnectionError) as caught:
                await strategy.decide("user", RATE, backend, 1)
            _says_connection_limit(caught.value)
        held.pop().close()  # room for one: the backend's connection
        assert await _decided_once_there_is_room(backend, "user")
        # Two at once: one takes the connection the backend holds, the other opens a second
        # one, refused (its first command: an `incr`).
        both = await asyncio.gather(
            *(FixedWindow().decide(f"user-{n}", RATE, backend, 1) for n in range(2)),
            return_exceptions=True,
        )
        errors = [r for r in both if isinstance(r, BaseException)]
        assert len(errors) == 1, both
        assert isinstance(errors[0], BackendConnectionError), repr(errors[0])
        _says_connection_limit(errors[0])
        held.pop().close()  # room for the second
        assert await _decided_once_there_is_room(backend, "user-0", "user-1")
    finally:
        for conn in held:
            conn.close()
        await backend.close()


async def test_the_circuit_closes_once_the_server_has_room_again(small_memcached: int) -> None:
    port = small_memcached
    backend = MemcachedBackend(
        f"memcached://127.0.0.1:{port}", namespace="limit", connect_timeout=0.3
    )
    held = _fill(port)
    try:
        deadline = time.monotonic() + 5
        while backend.circuits[0].state is CircuitState.CLOSED:
            assert time.monotonic() < deadline, backend.circuits[0].info()
            with pytest.raises(BackendConnectionError, match="connection limit"):
                await FixedWindow().decide("user", RATE, backend, 1)
            await asyncio.sleep(0.02)
        for conn in held:
            conn.close()
        held.clear()
        deadline = time.monotonic() + 5
        while backend.circuits[0].state is not CircuitState.CLOSED:
            assert time.monotonic() < deadline, backend.circuits[0].info()
            await asyncio.sleep(0.02)
        assert (await FixedWindow().decide("user", RATE, backend, 1)).allowed
    finally:
        for conn in held:
            conn.close()
        await backend.close()
