"""An app started while memcached cannot be reached, or pointed at another service: what the
operator reads says why.

Initialising asks every node its `version`. No node answering is an outage: the node's circuit
keeps the store's error (a refused connection), and every answer given at once while it is
open names it, as do its log lines; `initialize()` alone raises it, whatever `fail_fast`.
Another server answering (a Redis, a web server) is a bad setting that fails the start."""

from __future__ import annotations

import http.server
import logging
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from traffik.backends import from_url
from traffik.backends.health import CircuitState
from traffik.backends.memcached import MemcachedBackend
from traffik.exceptions import BackendConnectionError, CircuitOpenError, ConfigurationError
from traffik.rates import Rate
from traffik.strategies import FixedWindow
from traffik.testing.servers import RedisServer, free_port

pytestmark = [pytest.mark.memcached, pytest.mark.anyio]

RATE = Rate.parse("1000/hour")


async def test_a_node_down_at_start_up_is_reported_with_the_stores_own_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = free_port()  # nothing listens there
    backend = MemcachedBackend(
        f"memcached://127.0.0.1:{port}",
        namespace="down-at-start",
        connect_timeout=0.3,
        command_timeout=0.3,
    )
    circuit = backend.circuits[0]
    try:
        with caplog.at_level(logging.WARNING, logger="traffik"):
            async with backend:
                assert circuit.state is not CircuitState.CLOSED
                with pytest.raises(CircuitOpenError) as caught:
                    await FixedWindow().decide("user", RATE, backend, 1)
        for text in (str(circuit.last_error), str(caught.value)):
            assert "refused" in text.lower() and f"127.0.0.1:{port}" in text, text
            assert "does not answer" not in text, text
        opened = [r.getMessage() for r in caplog.records if "in a row" in r.getMessage()]
        assert opened and "refused" in opened[0].lower(), opened
        assert "1 failures" not in caplog.text, caplog.text
        started = [r.getMessage() for r in caplog.records if "at start-up" in r.getMessage()]
        assert started and "refused" in started[0].lower(), started  # (the cause, at once)
    finally:
        await backend.close()


@pytest.fixture
def redis_port(tmp_path: Path) -> Iterator[int]:
    """The port of a Redis server, for a URL naming the wrong service."""
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        pytest.skip("redis-server is not installed")
    server = RedisServer(tmp_path / "redis", free_port()).start()
    try:
        yield server.port
    finally:
        server.stop()


@pytest.fixture
def http_port() -> Iterator[int]:
    """The port of an HTTP server (the standard library's), for a URL naming the wrong service."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("fail_fast", [False, True])
async def test_a_url_naming_a_redis_server_fails_the_start_naming_it(
    redis_port: int, fail_fast: bool, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"memcached://127.0.0.1:{redis_port}"
    backend = MemcachedBackend(url, namespace="redis-port", fail_fast=fail_fast)
    try:
        with caplog.at_level(logging.WARNING), pytest.raises(ConfigurationError) as caught:
            async with backend:
                pass
        message = str(caught.value)
        assert url in message and "Redis" in message and "11211" in message, message
        assert "cannot be reached" not in caplog.text, caplog.text
        assert backend.circuits[0].state is CircuitState.CLOSED  # nothing to probe for
        with pytest.raises(ConfigurationError, match="Redis"):
            await backend.initialize()
        with pytest.raises(ConfigurationError, match="Redis"):  # loud on first use too
            await FixedWindow().decide("user", RATE, backend, 1)
    finally:
        await backend.close()


async def test_a_url_naming_an_http_server_fails_the_start_naming_it(http_port: int) -> None:
    url = f"memcached://127.0.0.1:{http_port}"
    backend = MemcachedBackend(url, namespace="http-port", connect_timeout=0.3)
    try:
        with pytest.raises(ConfigurationError) as caught:
            async with backend:
                pass
        message = str(caught.value)
        assert url in message and "HTTP server" in message, message
    finally:
        await backend.close()


async def test_one_node_of_several_naming_another_service_fails_the_start(
    memcached_url: str, redis_port: int
) -> None:
    backend = MemcachedBackend(f"{memcached_url},127.0.0.1:{redis_port}", namespace="mixed")
    try:
        with pytest.raises(ConfigurationError, match=f"127.0.0.1:{redis_port}.*Redis"):
            await backend.initialize()
    finally:
        await backend.close()


@pytest.mark.parametrize("fail_fast", [False, True])
async def test_initialize_reports_a_node_down_whatever_fail_fast(fail_fast: bool) -> None:
    port = free_port()  # nothing listens there
    backend = MemcachedBackend(
        f"memcached://127.0.0.1:{port}", namespace="init-down", fail_fast=fail_fast
    )
    try:
        with pytest.raises(BackendConnectionError, match=f"(?i)127.0.0.1:{port}.*refused"):
            await backend.initialize()
        assert not backend.initialized and not await backend.ready()
    finally:
        await backend.close()


async def test_initialize_opens_while_one_node_of_several_answers(
    memcached_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The node that did not answer was silent (no line) and its circuit closed: its clients'
    # first requests each waited on it, as a store down at start-up is not.
    dead = free_port()
    backend = MemcachedBackend(f"{memcached_url},127.0.0.1:{dead}", namespace="half")
    try:
        with caplog.at_level(logging.WARNING, logger="traffik"):
            await backend.initialize()
        assert await backend.ready()
        states = {circuit.name: circuit.state for circuit in backend.circuits}
        assert states[f"memcached 127.0.0.1:{dead}"] is not CircuitState.CLOSED, states
        assert [s for name, s in states.items() if str(dead) not in name] == [CircuitState.CLOSED]
        assert any(str(dead) in r.getMessage() for r in caplog.records), caplog.text
    finally:
        await backend.close()


@pytest.mark.parametrize(
    "build",
    [
        lambda: from_url("memcached://h:11211?pool_minsize=10&pool_size=2"),
        lambda: MemcachedBackend("memcached://h:11211", pool_minsize=3),
    ],
)
def test_a_minimum_pool_above_the_pool_size_is_refused(build: object) -> None:
    with pytest.raises(ConfigurationError) as caught:
        build()  # type: ignore[operator]
    message = str(caught.value)
    assert "pool_minsize=" in message and "pool_size=" in message, message
    assert "<= pool_size" in message, message
