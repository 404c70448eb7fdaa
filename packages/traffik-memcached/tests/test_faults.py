"""A memcached that dies or hangs turns into prompt errors; when it is back, so is the backend."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any, Callable

import pytest

from traffik.backends.memcached import MemcachedBackend
from traffik.exceptions import BackendConnectionError, BackendError
from traffik.rates import Rate
from traffik.strategies import BUILTIN_STRATEGIES, FixedWindow, TokenBucket
from traffik.testing.outage import check_outage_follows_on_error

pytestmark = [pytest.mark.memcached, pytest.mark.anyio]

CONNECT_TIMEOUT = 0.5
COMMAND_TIMEOUT = 0.5
# Generous: an operation takes at most connect_timeout + command_timeout.
UPPER_BOUND = 3 * (CONNECT_TIMEOUT + COMMAND_TIMEOUT)
RATE = Rate.parse("1000/hour")


def _backend(url: str, namespace: str = "faults", circuit: bool = True) -> MemcachedBackend:
    return MemcachedBackend(
        url,
        namespace=namespace,
        connect_timeout=CONNECT_TIMEOUT,
        command_timeout=COMMAND_TIMEOUT,
        circuit=circuit,
    )


@pytest.fixture
async def backend(memcached_server: Any) -> AsyncIterator[MemcachedBackend]:
    backend = _backend(memcached_server.url)
    yield backend
    await backend.close()


async def _fails_promptly(
    backend: MemcachedBackend, strategy: Any = None, key: str = "user"
) -> BackendError:
    strategy = strategy or TokenBucket()
    started = time.monotonic()
    with pytest.raises(BackendError) as caught:
        await strategy.decide(key, RATE, backend, 1)
    assert time.monotonic() - started < UPPER_BOUND
    return caught.value


async def _all_strategies_decide(backend: MemcachedBackend, key: str = "user") -> None:
    for cls in BUILTIN_STRATEGIES:
        assert (await cls().decide(key, RATE, backend, 1)).allowed


async def test_killed_server_fails_fast_then_recovers(
    memcached_server: Any, backend: MemcachedBackend
) -> None:
    await _all_strategies_decide(backend)
    memcached_server.stop()
    for strategy in (TokenBucket(), FixedWindow(), TokenBucket()):
        error = await _fails_promptly(backend, strategy)
        assert isinstance(error, BackendConnectionError)
        assert f"127.0.0.1:{memcached_server.port}" in str(error)
        assert error.__cause__ is not None
    memcached_server.start()  # same port, and empty
    await _all_strategies_decide(backend)
    assert await backend.ready()


async def test_server_killed_under_load_recovers_by_itself(
    memcached_server: Any, backend: MemcachedBackend
) -> None:
    async def hits() -> list[object]:
        return await asyncio.gather(
            *(TokenBucket().decide(f"user{i % 7}", RATE, backend, 1) for i in range(40)),
            return_exceptions=True,
        )

    assert all(not isinstance(r, BaseException) for r in await hits())
    memcached_server.stop()
    started = time.monotonic()
    failed = await hits()
    assert time.monotonic() - started < UPPER_BOUND
    assert all(isinstance(r, BackendConnectionError) for r in failed)
    memcached_server.start()
    assert all(not isinstance(r, BaseException) for r in await hits())


async def test_hung_server_times_out_then_recovers(
    memcached_server: Any, backend: MemcachedBackend
) -> None:
    await _all_strategies_decide(backend)
    memcached_server.pause()
    try:
        for strategy in (TokenBucket(), FixedWindow()):
            error = await _fails_promptly(backend, strategy)
            assert isinstance(error, BackendConnectionError)
            assert "no answer within" in str(error)
    finally:
        memcached_server.resume()
    await _all_strategies_decide(backend)


async def test_a_hung_server_under_load_fails_every_waiting_hit_in_time(
    memcached_server: Any,
) -> None:
    """Hits queued for one of the pool's two connections time out too, counted from when
    they started waiting, not one `command_timeout` after another (the command path alone:
    with its circuit, most of them would be answered at once)."""
    backend = _backend(memcached_server.url, namespace="hung-load", circuit=False)
    try:
        await _all_strategies_decide(backend)
        memcached_server.pause()
        try:
            started = time.monotonic()
            results = await asyncio.gather(
                *(FixedWindow().decide(f"user{i % 5}", RATE, backend, 1) for i in range(60)),
                *(TokenBucket().decide(f"user{i % 5}", RATE, backend, 1) for i in range(20)),
                return_exceptions=True,
            )
            assert time.monotonic() - started < UPPER_BOUND
        finally:
            memcached_server.resume()
        assert all(isinstance(r, BackendConnectionError) for r in results), results
        assert all("no answer within" in str(r) for r in results)
        await _all_strategies_decide(backend)
    finally:
        await backend.close()


async def test_a_closed_backend_refuses_without_touching_the_server(
    backend: MemcachedBackend,
) -> None:
    await backend.set("k", "v")
    await backend.close()
    with pytest.raises(BackendConnectionError, match="closed"):
        await backend.get("k")


async def test_ready_is_false_when_no_node_answers(memcached_server: Any) -> None:
    backend = _backend(memcached_server.url)
    await backend.initialize()
    assert await backend.ready()
    memcached_server.stop()
    assert not await backend.ready()
    await backend.close()


def _keys_by_node(backend: MemcachedBackend, count: int = 60) -> dict[str, list[str]]:
    """Client names whose TokenBucket and FixedWindow keys both live on the same node, by node."""
    owners: dict[str, list[str]] = {}
    for i in range(count):
        nodes = {
            backend._ring.pick(backend.get_key(f"client-{i}") + s.suffix).name
            for s in (TokenBucket, FixedWindow)
        }
        if len(nodes) == 1:
            owners.setdefault(nodes.pop(), []).append(f"client-{i}")
    return owners


async def test_one_node_down_fails_only_its_keys(start_memcached: Callable[[], Any]) -> None:
    first, second = start_memcached(), start_memcached()
    backend = MemcachedBackend(
        servers=[f"127.0.0.1:{first.port}", f"127.0.0.1:{second.port}"],
        namespace="nodes",
        connect_timeout=CONNECT_TIMEOUT,
        command_timeout=COMMAND_TIMEOUT,
    )
    try:
        owners = _keys_by_node(backend)
        first_keys, second_keys = (
            owners[f"127.0.0.1:{first.port}"],
            owners[f"127.0.0.1:{second.port}"],
        )
        assert first_keys and second_keys, "keys should land on both nodes"
        for key in first_keys + second_keys:
            assert (await TokenBucket().decide(key, RATE, backend, 1)).allowed
        second.stop()
        for key in first_keys:
            assert (await TokenBucket().decide(key, RATE, backend, 1)).allowed
            assert (await FixedWindow().decide(key, RATE, backend, 1)).allowed
        for key in second_keys[:3]:
            error = await _fails_promptly(backend, TokenBucket(), key)
            assert isinstance(error, BackendConnectionError) and str(second.port) in str(error)
        assert await backend.ready(), "one node still answers"
        with pytest.raises(BackendError, match=str(second.port)):
            await backend.clear()
        second.start()
        for key in second_keys:
            assert (await TokenBucket().decide(key, RATE, backend, 1)).allowed
    finally:
        await backend.close()


async def test_throttles_follow_on_error_while_memcached_is_down(
    memcached_server: Any, backend: MemcachedBackend
) -> None:
    pytest.importorskip("starlette")
    await check_outage_follows_on_error(
        backend, memcached_server.stop, memcached_server.start, UPPER_BOUND
    )


async def test_the_first_decisions_after_a_quick_restart_succeed(
    memcached_server: Any, backend: MemcachedBackend
) -> None:
    """A restart the event loop did not see (it was busy, or a middlebox dropped the idle
    connections silently) leaves dead sockets in the pool that still look healthy: the
    decisions that take them are run again, once, on a new connection, as redis-py retries a
    broken connection once, instead of failing while the server is up."""

    async def hits() -> list[object]:
        return await asyncio.gather(
            *(FixedWindow().decide(f"user{i}", RATE, backend, 1) for i in range(30)),
            return_exceptions=True,
        )

    assert all(not isinstance(r, BaseException) for r in await hits())
    memcached_server.stop()  # both without yielding to the loop: it never sees the sockets close
    memcached_server.start()
    after = await hits()
    assert [r for r in after if isinstance(r, BaseException)] == []
    assert all(r.allowed for r in after)  # type: ignore[union-attr]
