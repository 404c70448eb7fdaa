"""Point 3: a fallback that does not over-admit. Each worker's fallback grants its share of the
limit (`per_process`), and what it admitted is charged to the store when the store answers
again, so a client straddling an outage is not granted its budget twice. Two backend objects
stand for two worker processes: each has its own circuit and its own in-memory fallback."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import pytest
from starlette.requests import Request

from traffik import HTTPThrottle
from traffik.backends.health import CircuitPolicy, CircuitState
from traffik.backends.inmemory import InMemoryBackend
from traffik.backends.redis import RedisBackend
from traffik.error_handlers import failover, fallback, retry
from traffik.exceptions import BackendError, CircuitOpenError, ConnectionThrottled
from traffik.rates import Rate
from traffik.strategies import FixedWindow, SlidingWindowCounter, TokenBucket

pytestmark = pytest.mark.anyio

LIMIT = 50
RATE = f"{LIMIT}/hour"
TIMEOUT = 0.2


def _worker(url: str) -> RedisBackend:
    """One worker process's view of the store: its own backend object, so its own circuit."""
    return RedisBackend(url, namespace="fallback", connect_timeout=TIMEOUT, command_timeout=TIMEOUT)


def _request(peer: str) -> Request:
    scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "query_string": b""}
    return Request({**scope, "client": (peer, 1234)})


async def _admitted(throttle: HTTPThrottle, n: int, peer: str = "10.0.0.9") -> int:
    admitted = 0
    for _ in range(n):
        try:
            await throttle.hit(_request(peer))
        except ConnectionThrottled:
            continue
        admitted += 1
    return admitted


def _throttle(uid: str, backend: RedisBackend, strategy: Any, handler: Any) -> HTTPThrottle:
    return HTTPThrottle(
        uid, RATE, backend=backend, strategy=strategy, on_error=handler, per_route=False
    )


async def test_two_workers_fallbacks_grant_the_limit_once_between_them(
    redis_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = redis_server()
    monkeypatch.setenv("WEB_CONCURRENCY", "2")
    workers = [_worker(server.url), _worker(server.url)]
    try:
        scaled = [
            _throttle(
                "scaled",
                backend,
                FixedWindow(),
                fallback(InMemoryBackend(namespace="mem"), per_process="WEB_CONCURRENCY"),
            )
            for backend in workers
        ]
        alone = [
            _throttle("alone", backend, FixedWindow(), fallback(InMemoryBackend(namespace="mem")))
            for backend in workers
        ]
        server.stop()
        for pair, expected in ((alone, 2 * LIMIT), (scaled, LIMIT)):
            total = 0
            for _ in range(LIMIT):  # requests alternate between the two workers
                total += await _admitted(pair[0], 1) + await _admitted(pair[1], 1)
            print(f"\n{pair[0].uid}: two workers' fallbacks admitted {total} against {LIMIT}")
            assert total == expected
    finally:
        for backend in workers:
            await backend.close()


async def _charged(backend: RedisBackend, strategy: Any, key: str, at_most: int) -> int:
    """Wait until the store shows at most `at_most` units left for `key` (what the ledger charged)."""
    deadline = time.monotonic() + 3.0
    while True:
        left = (await strategy.get_stat(key, Rate.parse(RATE), backend)).hits_remaining
        if left <= at_most or time.monotonic() > deadline:
            return int(left)
        await asyncio.sleep(0.02)


@pytest.mark.parametrize(
    "strategy",
    [FixedWindow(), SlidingWindowCounter(), TokenBucket()],
    ids=lambda s: type(s).__name__,
)
@pytest.mark.parametrize("handler", ["fallback", "failover"])
async def test_what_the_fallback_admitted_is_charged_to_the_store(
    redis_server: Any, strategy: Any, handler: str
) -> None:
    server = redis_server()
    backend = _worker(server.url)
    memory = InMemoryBackend(namespace="mem")
    make = fallback if handler == "fallback" else failover
    throttle = _throttle(f"straddle-{handler}", backend, strategy, make(memory, per_process=0.5))
    unreconciled = _throttle(
        f"forgotten-{handler}", backend, strategy, make(memory, per_process=0.5, reconcile=False)
    )
    try:
        before = [await _admitted(t, 20) for t in (throttle, unreconciled)]
        server.pause()
        try:
            during = [await _admitted(t, 40) for t in (throttle, unreconciled)]
        finally:
            server.resume()
        deadline = time.monotonic() + 2.0
        while backend.circuit.state is not CircuitState.CLOSED:
            assert time.monotonic() < deadline, backend.circuit.info()
            await asyncio.sleep(0.01)
        key = f"{throttle.uid}:{{10.0.0.9}}"
        await _charged(backend, strategy, key, LIMIT - before[0] - during[0])
        after = [await _admitted(t, LIMIT) for t in (throttle, unreconciled)]
        totals = [b + d + a for b, d, a in zip(before, during, after)]
        print(
            f"\n{handler}, {type(strategy).__name__}: admitted before/during/after the outage "
            f"{before[0]}/{during[0]}/{after[0]} = {totals[0]} against {LIMIT} "
            f"(without reconciling: {totals[1]})"
        )
        assert before == [20, 20] and during == [LIMIT // 2, LIMIT // 2]
        assert LIMIT - 2 <= totals[0] <= LIMIT
        assert totals[1] > LIMIT
    finally:
        server.resume()
        await backend.close()


async def test_what_the_fallback_admitted_in_a_blip_is_charged_though_the_circuit_never_opened(
    redis_server: Any, tmp_path: Any
) -> None:
    """Redis (persisting every write) killed and restarted before its circuit could open:
    20 admitted before, 25 by the fallback in the blip, and 5 after it, as deployment.md says."""
    from traffik.testing.servers import RedisServer, free_port

    server = RedisServer(
        tmp_path / "aof", free_port(), "--appendonly", "yes", "--appendfsync", "always"
    )
    server.start()
    backend = RedisBackend(  # (a quiet period no loaded test machine outlasts: it never opens)
        server.url, namespace="fallback", circuit=CircuitPolicy(quiet_period=30.0)
    )
    throttle = _throttle("blip", backend, FixedWindow(), fallback(InMemoryBackend(namespace="mem")))
    try:
        before = await _admitted(throttle, 20)
        server.stop()
        during = await _admitted(throttle, 25)
        server.start()  # (the same port and directory: the counters come back from the AOF)
        assert await _admitted(throttle, 1) == 1  # the store answers again
        key = f"{throttle.uid}:{{10.0.0.9}}"
        await _charged(backend, FixedWindow(), key, LIMIT - before - during - 1)
        after = 1 + await _admitted(throttle, 10)
        assert backend.circuit.opened == 0
        assert (before, during, after) == (20, 25, 5)
    finally:
        server.stop()
        await backend.close()


@pytest.mark.parametrize("handler", ["retry", "failover"])
async def test_retries_stop_at_a_store_whose_circuit_is_open(
    redis_server: Any, handler: str
) -> None:
    """While the store's circuit is open every try fails at once with `CircuitOpenError`:
    `retry` and `failover` answer at once too (retry raises, failover falls back), instead
    of sleeping between retries that cannot succeed on every request of the outage."""
    server = redis_server()
    backend = _worker(server.url)
    spare = InMemoryBackend(namespace="spare")
    slept: list[float] = []

    async def sleep(seconds: float) -> None:  # (records the pauses between retries)
        slept.append(seconds)
        await asyncio.sleep(seconds)

    if handler == "retry":
        policy: Any = retry(sleep=sleep)
    else:
        policy = failover(spare, retry_delay=0.2, sleep=sleep)
    throttle = _throttle(f"open-{handler}", backend, FixedWindow(), policy)
    try:
        assert await _admitted(throttle, 1) == 1
        server.stop()
        deadline = time.monotonic() + 2.0
        while backend.circuit.state is CircuitState.CLOSED:
            assert time.monotonic() < deadline, backend.circuit.info()
            with contextlib.suppress(Exception):
                await throttle.hit(_request("10.0.0.1"))
        slept.clear()
        for n in range(5):
            if handler == "retry":
                with pytest.raises(CircuitOpenError):
                    await throttle.hit(_request(f"10.0.1.{n}"))
            else:
                await throttle.hit(_request(f"10.0.1.{n}"))  # admitted by the spare
        assert slept == [], f"{handler} paused {slept} while the circuit was open"
    finally:
        await backend.close()


@pytest.mark.parametrize("handler", ["retry", "failover"])
async def test_requests_on_a_frozen_store_wait_one_timeout_under_retry_or_failover(
    redis_server: Any, handler: str
) -> None:
    """Eight requests at once on a frozen store each time out once, which opens its circuit;
    their retries then find it open and stop: no request pays the retry delays. A request
    whose timeout came before the circuit opened has sent its first retry (at once) already,
    so it may wait a second timeout. (The timeout is longer than the circuit's
    `quiet_period`, 0.25 s, as Redis's default of 1 s is, so that one round of timeouts
    proves the store silent.)"""
    server = redis_server()
    timeout = 0.3
    backend = RedisBackend(
        server.url, namespace="frozen", connect_timeout=timeout, command_timeout=timeout
    )
    spare = InMemoryBackend(namespace="spare-frozen")
    delay = 1.0
    if handler == "retry":
        policy: Any = retry(max_retries=3, retry_delay=delay)
    else:
        policy = failover(spare, max_retries=3, retry_delay=delay)
    throttle = _throttle(f"frozen-{handler}", backend, FixedWindow(), policy)
    try:
        assert await _admitted(throttle, 1) == 1
        server.pause()

        async def timed(n: int) -> float:
            started = time.monotonic()
            with contextlib.suppress(BackendError):  # what `retry` raises once it stops
                await throttle.hit(_request(f"10.0.2.{n}"))
            return time.monotonic() - started

        took = await asyncio.gather(*(timed(n) for n in range(8)))
        assert max(took) < 2 * timeout + 0.2, f"{handler}: {[round(t, 2) for t in took]}"
    finally:
        server.resume()
        await backend.close()
