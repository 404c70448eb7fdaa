"""Bursts bigger than the connection pool queue instead of failing; which clients need our deadline."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis
from redis.asyncio import Redis

from traffik.backends.redis import RedisBackend
from traffik.backends.redis.gate import Gate, pool_size
from traffik.rates import Rate
from traffik.strategies import BUILTIN_STRATEGIES, FixedWindow, TokenBucket

pytestmark = pytest.mark.anyio

RATE = Rate.parse("1000000/hour")


def _connections(redis_url: str, name: str) -> int:
    """How many connections the server has from clients named `name`."""
    with redis.Redis.from_url(redis_url) as meter:
        return sum(1 for client in meter.client_list() if client["name"] == name)


async def _burst(backend: RedisBackend, strategy: Any, n: int) -> list[bool]:
    decisions = await asyncio.gather(
        *(strategy.decide(f"client-{i % 7}", RATE, backend, 1) for i in range(n))
    )
    return [d.allowed for d in decisions]


@pytest.mark.redis
@pytest.mark.parametrize("strategy", [cls() for cls in BUILTIN_STRATEGIES], ids=repr)
async def test_300_concurrent_decisions_on_one_backend_all_succeed(
    redis_url: str, strategy: Any
) -> None:
    # redis-py 8's pool holds 100 connections and raises MaxConnectionsError past them
    # (without the gate, 200 of these 300 failed). A long command timeout: what is tested is
    # the pool, and on a loaded machine a decision queued behind 299 others may take a second.
    backend = RedisBackend(
        redis_url,
        namespace="burst",
        on_error="raise",
        command_timeout=10,
        url_kwargs={"client_name": "burst"},
    )
    await backend.initialize()  # else the first decisions queue behind initialisation
    try:
        assert await _burst(backend, strategy, 300) == [True] * 300
        link = backend._clients.get()
        assert link is not None
        assert _connections(redis_url, "burst") <= pool_size(link.client)
    finally:
        await backend.reset()
        await backend.close()


@pytest.mark.redis
@pytest.mark.parametrize("size", [2, 3])
async def test_a_small_pool_is_never_exceeded(redis_url: str, size: int) -> None:
    backend = RedisBackend(
        redis_url,
        namespace="small-pool",
        command_timeout=10,
        url_kwargs={"max_connections": size, "client_name": "small-pool"},
    )
    await backend.initialize()
    try:
        for strategy in (FixedWindow(), TokenBucket()):
            assert await _burst(backend, strategy, 200) == [True] * 200
        assert _connections(redis_url, "small-pool") <= size
        link = backend._clients.get()
        # The lane keeps a connection out of the pool: the gate admits one fewer.
        assert link is not None and link.lane is not None and link.lane.capacity == 1
        assert link.gate.free == link.gate.size == size - 1
    finally:
        await backend.reset()
        await backend.close()


@pytest.mark.redis
async def test_a_given_client_with_a_small_pool_queues_too(redis_url: str) -> None:
    client = Redis.from_url(redis_url, max_connections=4, client_name="given-pool")
    backend = RedisBackend(client, namespace="given-pool")
    await backend.initialize()
    try:
        assert await _burst(backend, TokenBucket(), 100) == [True] * 100
        assert _connections(redis_url, "given-pool") <= 4
    finally:
        await backend.reset()
        await backend.close()
        await client.aclose()


async def test_gate_hands_places_over_in_order_and_survives_cancellation() -> None:
    gate = Gate(1)
    gate.free -= 1  # taken
    order: list[int] = []

    async def waiter(i: int) -> None:
        await gate.wait()
        order.append(i)
        gate.release()

    tasks = [asyncio.ensure_future(waiter(i)) for i in range(4)]
    await asyncio.sleep(0)
    tasks[1].cancel()  # cancelled while waiting: skipped
    gate.release()
    # Each waiter, handed the place in turn, passes it on when done.
    await asyncio.gather(*tasks, return_exceptions=True)
    assert order == [0, 2, 3]
    assert gate.free == 1 and not gate._waiters

    gate.free -= 1
    late = asyncio.ensure_future(waiter(9))
    await asyncio.sleep(0)
    gate.release()  # hands the place to `late`...
    late.cancel()  # ...which is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await late
    assert gate.free == 1 and not gate._waiters


async def test_which_clients_need_the_backends_own_deadline() -> None:
    async def deadline(backend: RedisBackend) -> bool:
        link = await backend._clients.build()  # builds the client, connects nothing
        await backend._clients.aclose()
        return link.deadline

    # Built from a URL: the socket timeouts bound every command.
    assert await deadline(RedisBackend("redis://localhost:1/0")) is False
    assert await deadline(RedisBackend("redis://localhost:1/0?socket_timeout=0.5")) is False
    # Timeouts longer than ours, none at all, or retried timeouts: our deadline stays.
    assert await deadline(RedisBackend("redis://localhost:1/0?socket_timeout=30")) is True
    no_timeout = RedisBackend("redis://h:1/0", url_kwargs={"socket_timeout": None})
    assert await deadline(no_timeout) is True
    assert await deadline(RedisBackend("redis://h:1/0?retry_on_timeout=true")) is True
    assert await deadline(RedisBackend("redis://h:1/0", url_kwargs={"retry": None})) is True
    # Clients given by the user, clusters and Sentinel keep it.
    client = Redis(host="localhost", port=1, socket_timeout=0.1, socket_connect_timeout=0.1)
    assert await deadline(RedisBackend(client)) is True
    await client.aclose()
    assert await deadline(RedisBackend("redis+cluster://localhost:1")) is True
    assert await deadline(RedisBackend("redis+sentinel://localhost:1/mymaster")) is True
