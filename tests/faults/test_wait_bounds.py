"""How many command timeouts a request waits on a frozen store: one, however its hits meet
(many on one client's key, several throttles decided as one), two under `retry()` (its own
and its first retry's), and under `failover()` its failed attempt before the spare answers.
Each bound is asserted in timeouts (a small `command_timeout`), not in milliseconds."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from traffik import HTTPThrottle, ThrottleMiddleware, throttled
from traffik.backends.base import ThrottleBackend
from traffik.backends.inmemory import InMemoryBackend
from traffik.backends.memcached import MemcachedBackend
from traffik.backends.redis import RedisBackend
from traffik.error_handlers import failover, retry
from traffik.events import DecisionEvent
from traffik.exceptions import CircuitOpenError
from traffik.strategies import FixedWindow, TokenBucket

pytestmark = pytest.mark.anyio

TIMEOUT = 0.3
"""Each backend's `connect_timeout` and `command_timeout` (at least the circuit's quiet period,
0.25 s, so that one timeout proves the silence that opens it)."""


class Store:
    """A frozen-able server, its backend, and how long one timeout may take there."""

    def __init__(self, server: Any, backend: ThrottleBackend, timeout: float) -> None:
        self.server = server
        self.backend = backend
        self.timeout = timeout


@pytest.fixture(params=["redis", "memcached"])
async def store(
    request: pytest.FixtureRequest, redis_server: Any, memcached_server: Any
) -> AsyncIterator[Store]:
    backend: ThrottleBackend
    if request.param == "redis":
        server = redis_server()
        backend = RedisBackend(
            server.url, namespace="bounds", connect_timeout=TIMEOUT, command_timeout=TIMEOUT
        )
        timeout = TIMEOUT
    else:
        server = memcached_server()
        backend = MemcachedBackend(
            server.url, namespace="bounds", connect_timeout=TIMEOUT, command_timeout=TIMEOUT
        )
        timeout = 1.25 * TIMEOUT  # (its watchdog ticks four times per timeout)
    try:
        yield Store(server, backend, timeout)
    finally:
        server.resume()
        await backend.close()


async def ok(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


def _guarded(throttle: HTTPThrottle) -> Starlette:
    async def endpoint(request: Request) -> PlainTextResponse:
        await throttle.hit(request)
        return PlainTextResponse("ok")

    return Starlette(routes=[Route("/", endpoint)])


def _client(app: Any) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=("10.0.0.1", 1234), raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://app")


async def _timed(http: httpx.AsyncClient) -> tuple[int, float]:
    started = time.monotonic()
    status = (await http.get("/")).status_code
    return status, time.monotonic() - started


@pytest.mark.parametrize("strategy", [FixedWindow(), TokenBucket()], ids=["counter", "state"])
async def test_concurrent_hits_on_one_key_wait_one_timeout_and_open_the_circuit(
    store: Store, strategy: Any
) -> None:
    """Hits queued behind a round that timed out get its failure at once (they sent no
    second round to the frozen store), and count on the circuit: one hot key opens it."""
    errors: list[BaseException] = []

    def decided(event: DecisionEvent) -> None:
        if event.error is not None:
            errors.append(event.error)

    throttle = HTTPThrottle(
        "hot", "1000/min", backend=store.backend, strategy=strategy, on_decision=decided
    )
    async with _client(_guarded(throttle)) as http:
        assert (await http.get("/")).status_code == 200
        store.server.pause()
        results = await asyncio.gather(*(_timed(http) for _ in range(30)))
        assert {status for status, _ in results} == {429}
        waits = sorted(waited for _, waited in results)
        # The hits queued behind the first round wait no longer than it (a second round
        # would add a timeout), whatever the machine's load adds to all of them.
        assert waits[-1] - waits[0] < 0.5 * store.timeout, [round(w, 2) for w in waits]
        assert waits[-1] < 3 * store.timeout, [round(w, 2) for w in waits]
        assert store.backend.circuits[0].opened >= 1, store.backend.circuits[0].info()
        errors.clear()
        assert (await http.get("/")).status_code == 429
        assert errors and isinstance(errors[0], CircuitOpenError), errors


@pytest.mark.parametrize("where", ["decorator", "middleware"])
async def test_several_throttles_decided_as_one_wait_one_timeout(store: Store, where: str) -> None:
    """A joint step that timed out answers each throttle by its `on_error` at once: the
    store is not asked again, throttle by throttle."""
    throttles = [HTTPThrottle(f"joint{i}", "100/min", backend=store.backend) for i in range(3)]
    if where == "decorator":
        app = Starlette(routes=[Route("/", throttled(*throttles)(ok))])
    else:
        app = Starlette(
            routes=[Route("/", ok)],
            middleware=[Middleware(ThrottleMiddleware, middleware_throttles=throttles)],
        )
    async with _client(app) as http:
        assert (await http.get("/")).status_code == 200
        store.server.pause()
        status, waited = await _timed(http)
    assert status == 429
    assert waited < 1.5 * store.timeout, round(waited, 2)


async def test_retry_waits_at_most_two_timeouts(store: Store) -> None:
    """Its own timeout and its first retry's; no later retry goes to a silent store."""
    throttle = HTTPThrottle("retried", "100/min", backend=store.backend, on_error=retry())
    async with _client(_guarded(throttle)) as http:
        assert (await http.get("/")).status_code == 200
        store.server.pause()
        status, waited = await _timed(http)
    assert status == 500  # (the last error, raised once the retries are spent)
    assert waited < 2.5 * store.timeout, round(waited, 2)


async def test_failover_waits_for_the_failed_attempt_then_the_spare(store: Store) -> None:
    """No retry is sent to a store that just timed out: the spare answers at once."""
    throttle = HTTPThrottle(
        "failed-over", "100/min", backend=store.backend, on_error=failover(InMemoryBackend())
    )
    async with _client(_guarded(throttle)) as http:
        assert (await http.get("/")).status_code == 200
        store.server.pause()
        status, waited = await _timed(http)
    assert status == 200
    assert waited < 1.5 * store.timeout, round(waited, 2)
