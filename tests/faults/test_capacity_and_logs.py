"""Points 7 and 8: an in-memory store at its cap keeps serving (or refuses, by policy) without a
log line per request, its cap can be bytes, and an outage of the shared store writes a handful
of log lines, not one per failed decision."""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

import pytest
from starlette.requests import Request

from traffik import HTTPThrottle
from traffik.backends.inmemory import InMemoryBackend
from traffik.backends.redis import RedisBackend
from traffik.exceptions import ConnectionThrottled

pytestmark = pytest.mark.anyio

CLIENTS = 2000


def _request(peer: str = "10.0.0.1") -> Request:
    scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "query_string": b""}
    return Request({**scope, "client": (peer, 1234)})


_CURRENT: list[Any] = [None]


def _ident(connection: Any) -> Any:
    return _CURRENT[0]


async def _hit(throttle: HTTPThrottle, ident: Any) -> bool:
    _CURRENT[0] = ident
    try:
        await throttle.hit(_request())
    except ConnectionThrottled:
        return False
    return True


def _traffik_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "traffik"]


async def test_at_its_cap_the_store_evicts_and_serves_every_new_client(
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend = InMemoryBackend(namespace="cap-evict", max_keys=100)
    throttle = HTTPThrottle(
        "cap-evict", "2/min", backend=backend, on_error="throttle", identifier=_ident
    )
    caplog.set_level(logging.WARNING, "traffik")
    assert await _hit(throttle, "regular")
    admitted = [await _hit(throttle, f"new-{i}") for i in range(CLIENTS)]
    assert all(admitted)
    assert len(await backend.keys()) <= 100
    print(
        f"\nevict: {CLIENTS} new clients past a 100-key cap: {len(_traffik_lines(caplog))} log lines"
    )
    assert len(_traffik_lines(caplog)) <= 2


async def test_at_its_cap_the_refusing_store_keeps_its_clients_counting(
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend = InMemoryBackend(namespace="cap-refuse", max_keys=100, at_capacity="refuse")
    throttle = HTTPThrottle(
        "cap-refuse", "2/min", backend=backend, on_error="throttle", identifier=_ident
    )
    caplog.set_level(logging.WARNING, "traffik")
    assert await _hit(throttle, "regular")
    admitted = [await _hit(throttle, f"new-{i}") for i in range(CLIENTS)]
    assert admitted.count(True) == 99 and not any(admitted[99:])
    assert await _hit(throttle, "regular") and not await _hit(throttle, "regular")
    print(f"\nrefuse: {CLIENTS - 99} refusals: {len(_traffik_lines(caplog))} log lines")
    assert len(_traffik_lines(caplog)) <= 3


async def test_a_byte_cap_bounds_a_store_of_long_keys() -> None:
    # Keys over 1 KB each (a long uid: identifiers that long are keyed by a digest).
    backend = InMemoryBackend(namespace="cap-bytes", max_bytes=64 * 1024)
    throttle = HTTPThrottle(
        "cap-bytes-" + "x" * 1024, "2/min", backend=backend, on_error="raise", identifier=_ident
    )
    for i in range(500):
        assert await _hit(throttle, f"client-{i}")
    keys = await backend.keys()
    assert 0 < len(keys) <= 64
    assert sum(len(key) for key in keys) <= 64 * 1024


async def test_an_outage_writes_a_handful_of_log_lines(
    redis_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    server = redis_server()
    backend = RedisBackend(server.url, namespace="quiet", connect_timeout=0.2, command_timeout=0.2)
    throttles = [
        HTTPThrottle(f"quiet-{policy}", "1000/min", backend=backend, on_error=policy)
        for policy in ("allow", "throttle")
    ]
    caplog.set_level(logging.INFO, "traffik")
    try:
        for throttle in throttles:
            await throttle.hit(_request())
        server.stop()
        decisions, started = 0, time.monotonic()
        while time.monotonic() - started < 2.0:
            for throttle in throttles:
                with contextlib.suppress(ConnectionThrottled):
                    await throttle.hit(_request())
                decisions += 1
        server.start()
        lines = _traffik_lines(caplog)
        print(f"\n{decisions} failed decisions in a 2 s outage: {len(lines)} log lines")
        for line in lines:
            print("   ", line[:160])
        assert decisions > 500
        assert len(lines) <= 8
    finally:
        await backend.close()
