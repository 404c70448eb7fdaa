"""The lane: one pooled connection the backend's scripts are sent on directly (`_lane.Lane`).

A decision on the lane must be what it is on the client's path: the same reply, the same
retry on a broken connection, nothing left behind by a cancelled one, and the pool never
exceeded. Which clients get a lane, and which keep the client's path, is checked too.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis
from redis.asyncio import Redis

from traffik.backends.redis import RedisBackend, _lane
from traffik.backends.redis.clients import Link
from traffik.exceptions import BackendConnectionError
from traffik.rates import Rate
from traffik.strategies import FixedWindow, TokenBucket

pytestmark = [pytest.mark.redis, pytest.mark.anyio]

RATE = Rate.parse("3/hour")


def _link(backend: RedisBackend) -> Link:
    link = backend._clients.get()
    assert link is not None
    return link


async def _remaining(backend: RedisBackend, strategy: Any, key: str) -> list[Any]:
    """`allowed` of four decisions on `key` (three allowed, the fourth refused)."""
    return [(await strategy.decide(key, RATE, backend, 1)).allowed for _ in range(4)]


@pytest.fixture(autouse=True, params=["one timer", "socket timeouts"])
def bounds(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test with both ways of bounding an exchange: one `asyncio.timeout` (Python 3.11
    and later) and redis-py's socket timeouts (the earlier Pythons')."""
    if request.param == "socket timeouts":
        monkeypatch.setattr(_lane, "_TIMEOUT", None)
    elif _lane._TIMEOUT is None:
        pytest.skip("asyncio.timeout is Python 3.11's")


@pytest.fixture
async def meter(redis_url: str) -> Any:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.mark.parametrize("strategy", [FixedWindow(), TokenBucket()], ids=repr)
async def test_a_connection_the_server_closed_is_replaced_without_an_error(
    redis_url: str, meter: Redis, strategy: Any
) -> None:
    backend = RedisBackend(redis_url, namespace="lane-killed", on_error="raise")
    try:
        assert (await strategy.decide("a", RATE, backend, 1)).allowed
        lane = _link(backend).lane
        assert lane is not None and len(lane._free) == 1  # a connection was kept
        # A restarted server, or an idle timeout: every connection of the backend is closed.
        await meter.client_kill_filter(_type="normal", skip_me=True)
        # One immediate retry on a new connection, as the client's retry policy does.
        assert [(await strategy.decide("a", RATE, backend, 1)).allowed for _ in range(3)] == [
            True,
            True,
            False,
        ]
    finally:
        await backend.reset()
        await backend.close()


async def test_a_decision_cancelled_mid_exchange_leaves_nothing_behind(
    redis_url: str, meter: Redis
) -> None:
    backend = RedisBackend(redis_url, namespace="lane-cancelled", on_error="raise")
    strategy = TokenBucket()
    try:
        await strategy.decide("warm-up", RATE, backend, 1)
        await meter.execute_command("CLIENT", "PAUSE", 300, "ALL")
        pending = asyncio.ensure_future(strategy.decide("cancelled", RATE, backend, 1))
        await asyncio.sleep(0.05)  # sent, and waiting for the paused server's reply
        pending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pending
        await meter.execute_command("CLIENT", "UNPAUSE")
        # Had the cancelled reply stayed on the connection, these would read it.
        assert await _remaining(backend, strategy, "after") == [True, True, True, False]
        assert await _remaining(backend, FixedWindow(), "after-fw") == [True, True, True, False]
    finally:
        await backend.reset()
        await backend.close()


@pytest.mark.parametrize("size", [2, 3, 8, 200])
async def test_a_lane_keeps_at_most_half_the_pool(redis_url: str, size: int) -> None:
    backend = RedisBackend(
        redis_url,
        namespace="lane-beside",
        command_timeout=10,
        url_kwargs={"max_connections": size, "client_name": "lane-beside"},
    )
    strategy = TokenBucket()
    try:
        decisions = await asyncio.gather(
            *(strategy.decide(f"k{i % 5}", RATE, backend, 1) for i in range(150))
        )
        # Three allowed per key, whichever path each decision took.
        assert sum(d.allowed for d in decisions) == 15
        link = _link(backend)
        kept = min(size // 2, _lane.MAX_CAPACITY)
        assert link.lane is not None and link.lane.capacity == kept
        assert 1 <= len(link.lane._free) <= kept  # (all free again, as many as were needed)
        assert link.gate.size == size - kept  # so the pool is never exceeded
        with redis.Redis.from_url(redis_url) as meter:
            names = [client["name"] for client in meter.client_list()]
        assert names.count("lane-beside") <= size
    finally:
        await backend.reset()
        await backend.close()


async def test_clients_the_backend_did_not_build_keep_their_own_path(redis_url: str) -> None:
    given = Redis.from_url(redis_url)
    backends = [
        RedisBackend(given, namespace="lane-given"),  # a user's client: its own settings
        RedisBackend(f"{redis_url}?retry_on_timeout=true", namespace="lane-retry"),
        RedisBackend(redis_url, namespace="lane-one", url_kwargs={"max_connections": 1}),
        RedisBackend(
            redis_url, namespace="lane-single", url_kwargs={"single_connection_client": True}
        ),
    ]
    try:
        for backend in backends:
            assert await _remaining(backend, FixedWindow(), "k") == [True, True, True, False]
            link = _link(backend)
            assert link.lane is None
        assert _link(backends[2]).gate.size == 1  # (no room in the pool for a lane)
    finally:
        for backend in backends:
            await backend.reset()
            await backend.close()
        await given.aclose()


async def test_reconnecting_to_a_frozen_server_is_bounded_by_the_timeouts(
    redis_server: Any,
) -> None:
    server = redis_server()
    backend = RedisBackend(
        server.url,
        namespace="lane-frozen",
        connect_timeout=0.5,
        command_timeout=0.5,
        on_error="raise",
    )
    strategy = TokenBucket()
    meter = Redis.from_url(server.url)
    try:
        assert (await strategy.decide("a", RATE, backend, 1)).allowed  # the lane is taken
        await meter.client_kill_filter(_type="normal", skip_me=True)
        server.pause()  # it accepts connections (the kernel does) and answers nothing
        try:
            # The lane's connection is gone: connecting again must not wait for ever on the
            # handshake's replies (the guard below only turns a hang into a failure).
            with pytest.raises(BackendConnectionError):
                await asyncio.wait_for(strategy.decide("a", RATE, backend, 1), 10)
        finally:
            server.resume()
        assert (await strategy.decide("a", RATE, backend, 1)).allowed
    finally:
        await backend.reset()
        await backend.close()
        await meter.aclose()


@pytest.mark.parametrize("encoding", ["utf-8", "latin-1"])
def test_a_lane_packs_each_command_as_redis_py_does(encoding: str) -> None:
    from redis.asyncio.connection import Connection

    connection = Connection(encoding=encoding)
    sha = "0123456789abcdef0123456789abcdef01234567"
    cases: list[tuple[tuple[Any, ...], tuple[Any, ...]]] = [
        (("traffik:t:{10.0.0.1}:GET:/**:tb",), (b"c" + bytes(range(256)),)),
        (("clé:é",), (b"",)),
        ((), (b"x" * 70_000, "token")),
        (("a", "b"), (b"s", b"t", b"u")),
        (("k",), (7, 1.5)),  # (not the backend's: redis-py's packer takes them)
    ]
    for keys, args in cases:
        expected = b"".join(connection.pack_command("EVALSHA", sha, len(keys), *keys, *args))
        packed = _lane._packed(connection, sha, keys, args)
        assert (packed if isinstance(packed, bytes) else b"".join(packed)) == expected
