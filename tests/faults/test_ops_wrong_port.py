"""A URL naming the other store's port: Redis's client on memcached, memcached's on Redis.

Both servers answer, in a protocol the client does not speak. That is a bad setting: the
start fails naming it and what answers there (before, the app started "unable to reach" the
server and answered every request with `on_error` for ever)."""

from __future__ import annotations

from typing import Any, Callable

import pytest

from traffik.backends.health import CircuitState
from traffik.backends.memcached import MemcachedBackend
from traffik.backends.redis import RedisBackend
from traffik.exceptions import ConfigurationError
from traffik.rates import Rate
from traffik.strategies import FixedWindow

pytestmark = pytest.mark.anyio

RATE = Rate.parse("1000/hour")


async def test_redis_pointed_at_memcached_fails_the_start_naming_the_port(
    memcached_server: Callable[[], Any],
) -> None:
    server = memcached_server()
    backend = RedisBackend(f"redis://127.0.0.1:{server.port}/0", namespace="wrong-port")
    try:
        with pytest.raises(ConfigurationError) as caught:
            async with backend:
                pass
        message = str(caught.value)
        assert "a memcached server answers" in message and f"127.0.0.1:{server.port}" in message
        assert backend.circuit.state is CircuitState.CLOSED  # nothing to probe for
        with pytest.raises(ConfigurationError, match="a memcached server answers"):
            await FixedWindow().decide("user", RATE, backend, 1)
    finally:
        await backend.close()


async def test_memcached_pointed_at_redis_fails_the_start_naming_the_port(
    redis_server: Callable[[], Any],
) -> None:
    server = redis_server()
    backend = MemcachedBackend(f"memcached://127.0.0.1:{server.port}", namespace="wrong-port")
    circuit = backend.circuits[0]
    try:
        with pytest.raises(ConfigurationError) as caught:
            async with backend:
                pass
        message = str(caught.value)
        assert "a Redis server answers" in message and f"127.0.0.1:{server.port}" in message
        assert circuit.state is CircuitState.CLOSED  # nothing to probe for
        with pytest.raises(ConfigurationError, match="a Redis server answers"):
            await FixedWindow().decide("user", RATE, backend, 1)
    finally:
        await backend.close()
