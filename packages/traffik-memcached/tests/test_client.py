"""The node client: aiomcache in its pinned range; a pool that grows on demand up to `pool_size`,
never reuses a connection mid-reply, and whose waits for a free connection are no failure of
the server."""

from __future__ import annotations

import asyncio
from importlib import metadata
from typing import Any

import aiomcache
import pytest
from packaging.requirements import Requirement

from traffik.backends.health import CircuitPolicy
from traffik.backends.memcached import MemcachedBackend
from traffik.exceptions import BackendConnectionError, CircuitOpenError

pytestmark = pytest.mark.anyio


def test_the_installed_aiomcache_is_in_the_pinned_range() -> None:
    """`NodeClient` uses aiomcache internals, so traffik-memcached pins the range it was tested on."""
    pins = [
        Requirement(line)
        for line in metadata.requires("traffik-memcached") or []
        if Requirement(line).name == "aiomcache"
    ]
    assert len(pins) == 1 and pins[0].specifier, "aiomcache must be pinned to a tested range"
    installed = metadata.version("aiomcache")
    assert pins[0].specifier.contains(installed), (
        f"aiomcache {installed} is outside traffik-memcached's pinned range {pins[0].specifier}: "
        "run this suite on it, then widen the pin in packages/traffik-memcached/pyproject.toml"
    )
    assert aiomcache.__version__ == installed


async def _connections(stats_client: aiomcache.Client) -> int:
    return int((await stats_client.stats())[b"curr_connections"] or 0)


async def _settled_connections(stats_client: aiomcache.Client) -> int:
    """The connection count once the server has noticed earlier clients leave (the fixture's
    readiness probe among them)."""
    count = await _connections(stats_client)
    for _ in range(100):
        await asyncio.sleep(0.02)
        again = await _connections(stats_client)
        if again == count:
            return count
        count = again
    return count


@pytest.mark.memcached
async def test_the_pool_grows_under_load_but_never_past_pool_size(memcached_server: Any) -> None:
    stats = aiomcache.Client("127.0.0.1", memcached_server.port, pool_size=1)
    base = await _settled_connections(stats)
    backend = MemcachedBackend(memcached_server.url, namespace="pool", pool_size=4)
    try:
        await asyncio.gather(*(backend.increment("n") for _ in range(50)))
        # how far it grows depends on how fast connections open against how fast they are
        # handed back; that it stays within the bound does not
        assert 1 <= await _connections(stats) - base <= 4
        assert await backend.get("n") == "50"
        await backend.close()
        for _ in range(100):  # the server notices closed connections a moment later
            if await _connections(stats) == base:
                break
            await asyncio.sleep(0.01)
        assert await _connections(stats) == base
    finally:
        await backend.close()
        await stats.close()


@pytest.mark.memcached
async def test_the_window_hot_path_shares_the_pool_and_counts_every_hit(
    memcached_server: Any,
) -> None:
    stats = aiomcache.Client("127.0.0.1", memcached_server.port, pool_size=1)
    base = await _settled_connections(stats)
    backend = MemcachedBackend(memcached_server.url, namespace="pool", pool_size=3)
    try:
        counts = await asyncio.gather(
            *(backend.increment_with_ttl("w", amount=1, ttl=60) for _ in range(200))
        )
        assert sorted(counts) == list(range(1, 201))
        assert 1 <= await _connections(stats) - base <= 3
    finally:
        await backend.close()
        await stats.close()


@pytest.mark.memcached
async def test_a_cancelled_hit_never_leaves_its_reply_to_the_next(memcached_server: Any) -> None:
    backend = MemcachedBackend(memcached_server.url, namespace="cancel", pool_size=1)
    try:
        await backend.set("a", "A")
        assert await backend.increment_with_ttl("w", amount=1, ttl=60) == 1
        memcached_server.pause()
        try:
            hit = asyncio.ensure_future(backend.increment_with_ttl("w", amount=5, ttl=60))
            await asyncio.sleep(0.05)  # sent, no answer yet
            hit.cancel()
            with pytest.raises(asyncio.CancelledError):
                await hit
        finally:
            memcached_server.resume()
        assert await backend.get("a") == "A"
        assert await backend.increment_with_ttl("w", amount=1, ttl=60) == 7
    finally:
        await backend.close()


@pytest.mark.memcached
async def test_a_timed_out_hit_is_never_read_by_the_next_command(memcached_server: Any) -> None:
    backend = MemcachedBackend(  # (the generation read once: the increment is what times out)
        memcached_server.url,
        namespace="stale-hit",
        pool_size=1,
        command_timeout=0.2,
        generation_refresh=600,
    )
    try:
        await backend.set("a", "A")
        assert await backend.increment_with_ttl("w", amount=1, ttl=60) == 1
        memcached_server.pause()
        try:
            with pytest.raises(BackendConnectionError, match=r"no answer within 0\.2s"):
                await backend.increment_with_ttl("w", amount=1, ttl=60)
        finally:
            memcached_server.resume()
        assert await backend.get("a") == "A"
        # The timed-out increment failed (on_error answered it); whether it reached the server
        # before its connection was dropped depends on the machine's timing. Its reply is
        # never the next command's: what the next increment answers is what the key holds.
        got = await backend.increment_with_ttl("w", amount=1, ttl=60)
        assert got in (2, 3) and got == int(await backend.get("w"))
    finally:
        await backend.close()


@pytest.mark.memcached
async def test_a_timed_out_reply_is_never_read_by_the_next_command(memcached_server: Any) -> None:
    backend = MemcachedBackend(
        memcached_server.url, namespace="stale", pool_size=1, command_timeout=0.2
    )
    try:
        await backend.set("a", "A")
        await backend.set("b", "B")
        memcached_server.pause()
        try:
            with pytest.raises(BackendConnectionError):
                await backend.get("a")  # sent, but its answer comes only after the timeout
        finally:
            memcached_server.resume()
        assert await backend.get("b") == "B"
        assert await backend.get("a") == "A"
    finally:
        await backend.close()


@pytest.mark.memcached
async def test_a_burst_waiting_for_the_pool_is_answered_and_counts_no_failure(
    memcached_server: Any,
) -> None:
    """Far more operations at once than the pool has connections, the server answering each
    at once: the last ones wait for a connection longer than `command_timeout`, yet none
    fails and the circuit (which would open at its third failure) stays closed."""
    backend = MemcachedBackend(
        memcached_server.url,
        namespace="burst",
        pool_size=1,
        command_timeout=0.05,
        circuit=CircuitPolicy(quiet_period=0),
    )
    try:
        await backend.set("k", "v")
        loop = asyncio.get_running_loop()
        started = loop.time()
        answers = await asyncio.gather(
            *(backend.get("k") for _ in range(2000)), return_exceptions=True
        )
        assert loop.time() - started > 0.05  # (the burst outlasted one command_timeout)
        assert [answer for answer in answers if answer != "v"] == []
        assert backend.circuits[0].info()["opened"] == 0
    finally:
        await backend.close()


async def _holding(backend: MemcachedBackend, released: asyncio.Event, error: Exception) -> Any:
    """An operation holding the node's only connection until `released` is set, then failing
    with `error`."""

    async def hold(client: Any, conn: Any) -> None:
        await released.wait()
        raise error

    holder = asyncio.ensure_future(backend._nodes[0].run(hold, "holding"))
    await asyncio.sleep(0.01)
    return holder


@pytest.mark.memcached
async def test_a_wait_for_a_free_connection_is_bounded_and_counts_no_failure(
    memcached_server: Any,
) -> None:
    """A burst longer than `connect_timeout + command_timeout` on one connection: the
    operations still queued then fail (`on_error` answers them), saying why, and the circuit
    counts none of them: the server answered every operation it was sent."""
    backend = MemcachedBackend(
        memcached_server.url,
        namespace="wait",
        pool_size=1,
        connect_timeout=0.05,
        command_timeout=0.05,
        circuit=CircuitPolicy(quiet_period=0),
    )
    try:
        await backend.set("k", "v")
        answers = await asyncio.gather(
            *(backend.get("k") for _ in range(5000)), return_exceptions=True
        )
        errors = {str(answer) for answer in answers if answer != "v"}
        assert errors and "v" in answers
        assert all("no connection came free within 0.1s" in error for error in errors), errors
        assert backend.circuits[0].info()["opened"] == 0
    finally:
        await backend.close()


@pytest.mark.memcached
async def test_an_operation_that_waited_while_the_circuit_opened_is_refused(
    memcached_server: Any,
) -> None:
    """An operation waiting for a connection while the one ahead of it fails and opens the
    circuit is not sent once it gets a connection: it is refused at once, as one that had not
    started yet would be."""
    backend = MemcachedBackend(
        memcached_server.url,
        namespace="opened",
        pool_size=1,
        circuit=CircuitPolicy(failure_threshold=1, quiet_period=0),
    )
    released = asyncio.Event()
    try:
        await backend.set("k", "v")
        holder = await _holding(backend, released, OSError("the connection was lost"))
        waiting = asyncio.ensure_future(backend.get("k"))
        await asyncio.sleep(0.01)
        released.set()
        with pytest.raises(BackendConnectionError, match="connection was lost"):
            await holder
        assert backend.circuits[0].info()["opened"] == 1
        with pytest.raises(CircuitOpenError):
            await waiting
    finally:
        released.set()
        await backend.close()
