"""A Redis server that dies or hangs turns into prompt `BackendError`s; when it is back, so is the backend."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any, Callable

import pytest

from traffik.backends.health import CircuitState
from traffik.backends.redis import RedisBackend
from traffik.exceptions import BackendConnectionError, BackendError, ConfigurationError
from traffik.rates import Rate
from traffik.strategies import BUILTIN_STRATEGIES, TokenBucket
from traffik.testing.outage import check_outage_follows_on_error
from traffik.testing.servers import redis_cli

pytestmark = [pytest.mark.redis, pytest.mark.anyio]

CONNECT_TIMEOUT = 0.5
COMMAND_TIMEOUT = 0.5
# Generous: the backend promises connect_timeout + command_timeout per operation at most.
UPPER_BOUND = 3 * (CONNECT_TIMEOUT + COMMAND_TIMEOUT)
RATE = Rate.parse("1000/hour")


@pytest.fixture
async def server_and_backend(
    redis_server: Callable[[], Any],
) -> AsyncIterator[tuple[Any, RedisBackend]]:
    server = redis_server()
    # The command path alone: the store's circuit (which would answer at once after a few
    # failures, and again until its probe sees the server back) has tests of its own.
    backend = RedisBackend(
        server.url,
        namespace="faults",
        connect_timeout=CONNECT_TIMEOUT,
        command_timeout=COMMAND_TIMEOUT,
        circuit=False,
    )
    yield server, backend
    await backend.close()


async def _fails_promptly(backend: RedisBackend) -> BackendError:
    started = time.monotonic()
    with pytest.raises(BackendError) as caught:
        await TokenBucket().decide("user", RATE, backend, 1)
    assert time.monotonic() - started < UPPER_BOUND
    return caught.value


async def _all_strategies_decide(backend: RedisBackend) -> None:
    for cls in BUILTIN_STRATEGIES:
        assert (await cls().decide("user", RATE, backend, 1)).allowed


async def test_killed_server_fails_fast_then_recovers(
    server_and_backend: tuple[Any, RedisBackend],
) -> None:
    server, backend = server_and_backend
    await _all_strategies_decide(backend)
    server.stop()
    for _ in range(5):
        error = await _fails_promptly(backend)
        assert isinstance(error, BackendConnectionError)
        assert f"127.0.0.1:{server.port}" in str(error)
        assert error.__cause__ is not None
    server.start()  # same port, empty, and without our scripts
    await _all_strategies_decide(backend)
    assert await backend.ready()


async def test_hung_server_times_out_then_recovers(
    server_and_backend: tuple[Any, RedisBackend],
) -> None:
    server, backend = server_and_backend
    await _all_strategies_decide(backend)
    server.pause()
    try:
        for _ in range(3):
            error = await _fails_promptly(backend)
            assert isinstance(error, BackendConnectionError)
    finally:
        server.resume()
    await _all_strategies_decide(backend)


async def test_a_burst_bigger_than_the_pool_on_a_hung_server_fails_in_time(
    redis_server: Callable[[], Any],
) -> None:
    server = redis_server()
    backend = RedisBackend(
        server.url,
        namespace="hung-burst",
        connect_timeout=CONNECT_TIMEOUT,
        command_timeout=COMMAND_TIMEOUT,
        url_kwargs={"max_connections": 2},
        circuit=False,
    )
    try:
        await _all_strategies_decide(backend)
        server.pause()
        try:

            async def timed() -> float:
                started = time.monotonic()
                with pytest.raises(BackendConnectionError):
                    await TokenBucket().decide("user", RATE, backend, 1)
                return time.monotonic() - started

            # Two at a time reach the frozen server; the rest wait for a connection, not forever.
            durations = await asyncio.gather(*(timed() for _ in range(12)))
            assert max(durations) < UPPER_BOUND
        finally:
            server.resume()
        await _all_strategies_decide(backend)
    finally:
        await backend.close()


async def test_unreachable_at_first_use_then_reachable(redis_server: Callable[[], Any]) -> None:
    server = redis_server()
    server.stop()
    backend = RedisBackend(server.url, namespace="late", connect_timeout=0.5, command_timeout=0.5)
    try:
        error = await _fails_promptly(backend)
        assert isinstance(error, BackendConnectionError)
        assert not backend.initialized
        server.start()
        await _all_strategies_decide(backend)
    finally:
        await backend.close()


async def test_wrong_credentials_are_reported_as_refused_not_unreachable(redis_url: str) -> None:
    url = redis_url.replace("redis://", "redis://ghost:not-the-password@", 1)
    backend = RedisBackend(url, namespace="auth", circuit=False)
    try:
        with pytest.raises(BackendError) as caught:
            await TokenBucket().decide("user", RATE, backend, 1)
    finally:
        await backend.close()
    message = str(caught.value)
    assert "refused the credentials" in message, message
    assert "unreachable" not in message and "not-the-password" not in message


async def test_throttle_follows_on_error_while_redis_is_down(
    server_and_backend: tuple[Any, RedisBackend],
) -> None:
    pytest.importorskip("starlette")
    server, backend = server_and_backend
    await check_outage_follows_on_error(backend, server.stop, server.start, UPPER_BOUND)


async def test_first_decisions_on_a_frozen_server_share_one_attempt(
    redis_server: Callable[[], Any],
) -> None:
    """Ten concurrent first decisions against a hung server all fail within one timeout: the
    backend's initialisation is one attempt whose outcome every waiter gets at once."""
    server = redis_server()
    server.pause()
    timeout = 0.3
    backend = RedisBackend(
        server.url, namespace="frozen-first", connect_timeout=timeout, command_timeout=timeout
    )
    try:

        async def timed() -> float:
            started = time.monotonic()
            with pytest.raises(BackendConnectionError):
                await TokenBucket().decide("user", RATE, backend, 1)
            return time.monotonic() - started

        durations = await asyncio.gather(*(timed() for _ in range(10)))
        # one attempt takes at most connect + command timeout; ten in turn would take 6 s
        assert max(durations) < 3 * (timeout + timeout)
    finally:
        server.resume()
        await backend.close()


async def test_concurrent_decisions_on_a_frozen_server_time_out_together(
    redis_server: Callable[[], Any],
) -> None:
    """Eight decisions at once on a frozen server, seven of them needing a new connection
    (whose handshake the server never answers), all fail within about one timeout. redis-py
    5.3 to 7.x open a pool's connections one at a time, under its lock: there they failed
    one after another, eight timeouts for the last (`_pool.py`)."""
    server = redis_server()
    timeout = 0.3
    backend = RedisBackend(
        server.url,
        namespace="frozen-together",
        connect_timeout=timeout,
        command_timeout=timeout,
        circuit=False,
    )
    try:
        await _all_strategies_decide(backend)  # one connection in the pool, the rest to open
        server.pause()

        async def timed() -> float:
            started = time.monotonic()
            with pytest.raises(BackendConnectionError):
                await TokenBucket().decide("user", RATE, backend, 1)
            return time.monotonic() - started

        durations = await asyncio.gather(*(timed() for _ in range(8)))
        # one attempt: a connect (refused or accepted at once) and a handshake or command
        # timeout; one after another, the last would take 8 x 0.3 s
        assert max(durations) < 2 * timeout + 0.15, [round(d, 2) for d in durations]
    finally:
        server.resume()
        await backend.close()


async def test_a_database_the_server_does_not_have_fails_the_start_naming_it(
    redis_url: str,
) -> None:
    """`/99` on a server with 16 databases is a bad setting, not an outage: entering the
    backend (an app's lifespan) fails, naming the database, instead of starting with the
    store "unreachable" and every request answered by `on_error` for ever."""
    url = redis_url.rsplit("/", 1)[0] + "/99"
    backend = RedisBackend(url, namespace="no-such-db")
    try:
        with pytest.raises(ConfigurationError, match=r"database 99 .*databases") as caught:
            async with backend:
                pass
        assert "unreachable" not in str(caught.value)
        assert backend.circuit.state is CircuitState.CLOSED  # nothing to probe: it answered
        with pytest.raises(ConfigurationError, match="database 99"):  # loud on first use too
            await TokenBucket().decide("user", RATE, backend, 1)
    finally:
        await backend.close()


async def test_a_server_wanting_a_password_none_was_given_says_so(
    redis_server: Callable[[], Any],
) -> None:
    """A URL without the password a server requires: the error says that none was sent and
    where to put it, not that the server refused credentials the URL does not have."""
    server = redis_server()
    redis_cli(server.port, "config", "set", "requirepass", "s3cret")
    backend = RedisBackend(server.url, namespace="no-password", circuit=False)
    given = RedisBackend(
        server.url.replace("redis://", "redis://:s3cret@", 1), namespace="no-password"
    )
    try:
        with pytest.raises(BackendConnectionError) as caught:
            await TokenBucket().decide("user", RATE, backend, 1)
        message = str(caught.value)
        assert "requires a password" in message and "redis://:<password>@" in message, message
        assert (await TokenBucket().decide("user", RATE, given, 1)).allowed
    finally:
        await backend.close()
        await given.close()
