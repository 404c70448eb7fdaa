"""What an operator reads when Redis answers, but not as Traffik needs: a user its ACL forbids
scripts, a setting redis-py refuses, a read-only replica, a full server, a runaway script.

A server that answers with a refusal that will not pass by itself is a bad setting: the start
fails naming it (not "cannot be reached", with a circuit probing for ever). One that answers
with an error of the moment (busy, full, a replica) is reported with what to do about it."""

from __future__ import annotations

import asyncio
import http.server
import logging
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any, Callable

import pytest
import redis
from redis.asyncio import Redis

from traffik.backends.health import CircuitState
from traffik.backends.redis import RedisBackend
from traffik.exceptions import BackendConnectionError, BackendError, ConfigurationError
from traffik.rates import Rate
from traffik.strategies import FixedWindow, TokenBucket
from traffik.testing.servers import free_port, redis_cli

pytestmark = [pytest.mark.redis, pytest.mark.anyio]

RATE = Rate.parse("1000/hour")
TIMEOUT = 0.3


def _backend(url: str, namespace: str, **options: Any) -> RedisBackend:
    return RedisBackend(
        url, namespace=namespace, connect_timeout=TIMEOUT, command_timeout=TIMEOUT, **options
    )


async def _decides(backend: RedisBackend) -> bool:
    return (await TokenBucket().decide("user", RATE, backend, 1)).allowed


async def test_a_user_whose_acl_forbids_scripts_fails_the_start_naming_the_permission(
    redis_server: Callable[[], Any], caplog: pytest.LogCaptureFixture
) -> None:
    server = redis_server()
    redis_cli(server.port, "acl", "setuser", "app", "on", ">pw", "~*", "+@all", "-@scripting")
    url = server.url.replace("redis://", "redis://app:pw@", 1)
    backend = _backend(url, "acl")
    try:
        with caplog.at_level(logging.WARNING), pytest.raises(ConfigurationError) as caught:
            async with backend:
                pass
        message = str(caught.value)
        assert "script|load" in message and "+@scripting" in message, message
        assert "unreachable" not in message and "pw@" not in message, message
        assert "cannot be reached" not in caplog.text, caplog.text
        assert backend.circuit.state is CircuitState.CLOSED  # it answered: nothing to probe
        with pytest.raises(ConfigurationError, match=r"script\|load"):  # loud on first use too
            await _decides(backend)
        redis_cli(server.port, "acl", "setuser", "app", "+@scripting")
        assert await _decides(backend)
    finally:
        await backend.close()


async def test_a_client_setting_redis_py_refuses_fails_the_start_naming_it(
    redis_server: Callable[[], Any],
) -> None:
    server = redis_server()
    url = server.url.replace("redis://", "rediss://user:s3cret@", 1) + "?ssl_cert_reqs=bogus"
    backend = _backend(url, "bad-setting")
    try:
        with pytest.raises(ConfigurationError) as caught:
            async with backend:
                pass
        message = str(caught.value)
        assert "bogus" in message and "unreachable" not in message, message
        assert "s3cret" not in message
        assert backend.circuit.state is CircuitState.CLOSED
    finally:
        await backend.close()


async def test_a_read_only_replica_says_to_point_the_url_at_the_primary(
    redis_server: Callable[[], Any],
) -> None:
    server, primary = redis_server(), redis_server()
    backend = _backend(server.url, "replica")
    try:
        assert await _decides(backend)
        redis_cli(server.port, "replicaof", "127.0.0.1", str(primary.port))
        deadline = time.monotonic() + 10
        while "master_link_status:up" not in redis_cli(server.port, "info", "replication"):
            assert time.monotonic() < deadline, "the replica never synced"
            await asyncio.sleep(0.05)
        for strategy in (FixedWindow(), TokenBucket()):
            with pytest.raises(BackendError) as caught:
                await strategy.decide("user", RATE, backend, 1)
            assert not isinstance(caught.value, BackendConnectionError)
            message = str(caught.value)
            assert "read only replica" in message and "primary" in message, message
        assert backend.circuit.state is CircuitState.CLOSED  # it answers: not an outage
        redis_cli(server.port, "replicaof", "no", "one")
        assert await _decides(backend)  # the scripts it lost in the sync are loaded again
    finally:
        await backend.close()


async def test_a_full_server_that_evicts_nothing_says_what_to_change(
    redis_server: Callable[[], Any],
) -> None:
    server = redis_server()
    backend = _backend(server.url, "full")
    try:
        assert await _decides(backend)
        redis_cli(server.port, "config", "set", "maxmemory-policy", "noeviction")
        redis_cli(server.port, "config", "set", "maxmemory", "1")
        with pytest.raises(BackendError) as caught:
            await FixedWindow().decide("user", RATE, backend, 1)
        message = str(caught.value)
        assert "maxmemory" in message and "maxmemory-policy" in message, message
        assert backend.circuit.state is CircuitState.CLOSED
        redis_cli(server.port, "config", "set", "maxmemory", "0")
        assert (await FixedWindow().decide("user", RATE, backend, 1)).allowed
    finally:
        await backend.close()


async def test_a_runaway_script_is_an_outage_of_the_moment_not_a_bad_setting(
    redis_server: Callable[[], Any],
) -> None:
    """A script that runs past `busy-reply-threshold` has Redis answer `BUSY` to everyone:
    the store cannot decide until the script ends, which it may well do. Decisions fail as
    in an outage (the circuit opens, and probes), an app starting meanwhile starts all the
    same, and decisions come back once the script is killed."""
    server = redis_server()
    redis_cli(server.port, "config", "set", "busy-reply-threshold", "50")
    running, starting = _backend(server.url, "busy"), _backend(server.url, "busy-start")
    runaway = None
    try:
        assert await _decides(running)
        runaway = subprocess.Popen(
            ["redis-cli", "-p", str(server.port), "eval", "while true do end", "0"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while "BUSY" not in redis_cli(server.port, "ping"):
            assert time.monotonic() < deadline, "the script never made the server busy"
            await asyncio.sleep(0.02)
        for _ in range(3):
            with pytest.raises(BackendConnectionError) as caught:
                await _decides(running)
            assert "busy" in str(caught.value).lower(), str(caught.value)
        async with starting:
            assert starting.circuit.state is not CircuitState.CLOSED
            redis_cli(server.port, "script", "kill")
            deadline = time.monotonic() + 10  # (the kill lands at the script's next hook)
            while redis_cli(server.port, "ping").strip() != "PONG":
                assert time.monotonic() < deadline, "SCRIPT KILL did not end the script"
                await asyncio.sleep(0.02)
            for backend in (running, starting):
                deadline = time.monotonic() + 5
                while backend.circuit.state is not CircuitState.CLOSED:
                    assert time.monotonic() < deadline, backend.circuit.info()
                    await asyncio.sleep(0.02)
                assert await _decides(backend)
    finally:
        redis_cli(server.port, "script", "kill")
        if runaway is not None:
            runaway.kill()
            runaway.wait(timeout=10)
        await running.close()
        await starting.close()


async def test_a_tls_url_against_a_plain_port_says_so(redis_server: Callable[[], Any]) -> None:
    server = redis_server()
    backend = _backend(server.url.replace("redis://", "rediss://", 1), "tls", circuit=False)
    try:
        with pytest.raises(BackendConnectionError) as caught:
            await _decides(backend)
        message = str(caught.value)
        assert "rediss://" in message and "redis://" in message and "TLS" in message, message
    finally:
        await backend.close()


async def test_a_cluster_url_naming_a_plain_server_fails_the_start_naming_the_scheme(
    redis_server: Callable[[], Any],
) -> None:
    server = redis_server()
    backend = _backend(f"redis+cluster://127.0.0.1:{server.port}", "not-a-cluster")
    try:
        with pytest.raises(ConfigurationError) as caught:
            async with backend:
                pass
        message = str(caught.value)
        assert "not a cluster" in message and "redis://" in message, message
        assert "unreachable" not in message, message
        assert backend.circuit.state is CircuitState.CLOSED
    finally:
        await backend.close()


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
async def test_a_url_naming_an_http_server_fails_the_start_naming_what_answers(
    http_port: int, fail_fast: bool
) -> None:
    url = f"redis://127.0.0.1:{http_port}/0"
    backend = _backend(url, "http", fail_fast=fail_fast)
    try:
        with pytest.raises(ConfigurationError) as caught:
            async with backend:
                pass
        message = str(caught.value)
        assert url in message and "HTTP server" in message, message
        assert "unreachable" not in message, message
        assert backend.circuit.state is CircuitState.CLOSED  # nothing to probe for
        with pytest.raises(ConfigurationError, match="HTTP server"):
            await backend.initialize()
    finally:
        await backend.close()


async def test_a_sentinel_url_naming_a_plain_server_fails_the_start_naming_it(
    redis_server: Callable[[], Any],
) -> None:
    server = redis_server()
    url = f"redis+sentinel://127.0.0.1:{server.port}/mymaster"
    backend = _backend(url, "not-a-sentinel")
    try:
        with pytest.raises(ConfigurationError) as caught:
            async with backend:
                pass
        message = str(caught.value)
        assert f"127.0.0.1:{server.port}" in message and "not a Sentinel" in message, message
        assert "redis://" in message and "unreachable" not in message, message
        assert backend.circuit.state is CircuitState.CLOSED
    finally:
        await backend.close()


async def test_a_sentinel_url_naming_a_service_no_sentinel_monitors_fails_the_start(
    redis_sentinel_url: str,
) -> None:
    url = redis_sentinel_url.replace("/mymaster", "/nosuch")
    backend = _backend(url, "no-such-service")
    try:
        with pytest.raises(ConfigurationError) as caught:
            async with backend:
                pass
        message = str(caught.value)
        assert "'nosuch'" in message and "'mymaster'" in message, message
        assert backend.circuit.state is CircuitState.CLOSED
    finally:
        await backend.close()


@pytest.mark.parametrize("fail_fast", [False, True])
async def test_initialize_reports_a_server_down_whatever_fail_fast(fail_fast: bool) -> None:
    backend = _backend(f"redis://127.0.0.1:{free_port()}/0", "down", fail_fast=fail_fast)
    try:
        with pytest.raises(BackendConnectionError, match=r"refused|unreachable"):
            await backend.initialize()
        assert not await backend.ready()
    finally:
        await backend.close()


@pytest.mark.skipif(
    int(redis.__version__.split(".")[0]) < 8,
    reason="redis-py 7 reports a server at its maxclients as a lost connection, without its reply",
)
async def test_a_server_at_its_maxclients_says_to_raise_it_or_open_fewer(
    redis_server: Callable[[], Any],
) -> None:
    server = redis_server()
    hog = Redis(host="127.0.0.1", port=server.port)
    backend = _backend(server.url, "maxclients", circuit=False)
    try:
        assert await hog.ping()  # one connection, then no room for another
        redis_cli(server.port, "config", "set", "maxclients", "1")
        with pytest.raises(BackendConnectionError) as caught:
            await backend.initialize()
        message = str(caught.value)
        assert "maxclients" in message and "max_connections" in message, message
        assert "unreachable" not in message, message
        await hog.aclose()
        deadline = time.monotonic() + 5
        while True:  # (the server notices the closed connection)
            try:
                assert await _decides(backend)
                break
            except BackendConnectionError:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
    finally:
        await hog.aclose()
        redis_cli(server.port, "config", "set", "maxclients", "10000")
        await backend.close()


@pytest.mark.parametrize(
    ("where", "options", "named"),
    [
        ("url", {}, "socket_timeout (0.05 s, in the URL's query)"),
        (
            "url_kwargs",
            {"url_kwargs": {"socket_timeout": 0.05}},
            "socket_timeout (0.05 s, in url_kwargs)",
        ),
    ],
)
async def test_a_timeout_names_the_socket_timeout_the_connection_sets(
    redis_server: Callable[[], Any], where: str, options: dict[str, Any], named: str
) -> None:
    server = redis_server()
    url = server.url + ("?socket_timeout=0.05" if where == "url" else "")
    backend = RedisBackend(url, namespace="socket-timeout", circuit=False, **options)
    try:
        assert await _decides(backend)
        server.pause()
        try:
            with pytest.raises(BackendConnectionError) as caught:
                await _decides(backend)
        finally:
            server.resume()
        message = str(caught.value)
        assert "timed out" in message and f"raise {named}" in message, message
    finally:
        await backend.close()
