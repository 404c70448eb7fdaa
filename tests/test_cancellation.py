"""Cancellation on the decision path, on every backend: a cancelled hit or lock holder never
leaves a lane, lock or connection stuck, is charged whole or not at all, and loses no one
else's decision (a client that disconnects, `asyncio.wait_for` around a call)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import random
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any, Callable
from unittest.mock import patch

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import PlainTextResponse

from traffik import HTTPThrottle
from traffik.backends.base import ThrottleBackend
from traffik.backends.inmemory import InMemoryBackend
from traffik.exceptions import ConnectionThrottled
from traffik.strategies import (
    GCRA,
    FixedWindow,
    LeakyBucket,
    SlidingWindowCounter,
    SlidingWindowLog,
    TokenBucket,
)

pytestmark = pytest.mark.anyio

BACKENDS = ["memory", "sqlite", pytest.param("redis", marks=pytest.mark.redis)]
BACKENDS.append(pytest.param("memcached", marks=pytest.mark.memcached))
PROMPT = 5.0
"""Seconds within which a hit after the cancellations must be decided (a stuck lane, lock or
batch would hang instead)."""


@contextlib.contextmanager
def _watched(seen: list[dict[str, Any]]) -> Any:
    """Collect what the event loop's exception handler sees meanwhile ("Task exception was
    never retrieved", "Future exception was never retrieved", ...)."""
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: seen.append(context))
    try:
        yield
        gc.collect()  # never-retrieved exceptions are reported when their future is collected
    finally:
        loop.set_exception_handler(previous)


async def _backend(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> ThrottleBackend:
    namespace = f"cancel-{random.getrandbits(32):x}"
    if kind == "memory":
        return InMemoryBackend(namespace=namespace)
    if kind == "sqlite":
        from traffik.backends import from_url

        return from_url(f"sqlite:///{tmp_path / 'cancel.db'}", namespace=namespace)
    if kind == "redis":
        from traffik.backends.redis import RedisBackend

        return RedisBackend(request.getfixturevalue("redis_url"), namespace=namespace)
    from traffik.backends.memcached import MemcachedBackend

    return MemcachedBackend(request.getfixturevalue("memcached_url"), namespace=namespace)


@pytest.fixture(params=BACKENDS)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ThrottleBackend]:
    made = await _backend(request.param, request, tmp_path)
    await made.initialize()
    yield made
    await made.reset()
    await made.close()


def _request(client: str = "10.0.0.1", path: str = "/x") -> Request:
    scope = {
        "type": "http",
        "method": "GET",
        "path": path,
        "root_path": "",
        "headers": [],
        "client": (client, 1000),
        "app": None,
    }
    return Request(scope)


async def _admitted(throttle: HTTPThrottle, client: str = "10.0.0.1") -> bool:
    try:
        await throttle.hit(_request(client))
    except ConnectionThrottled:
        return False
    return True


# -- locks: a holder or waiter cancelled at any await leaves the lock free for the next --


async def _hold(
    backend: ThrottleBackend,
    name: str,
    seconds: float = 0.0,
    timeout: float | None = 30,
    ttl: float | None = 30,
) -> None:
    async with backend.lock(name, ttl=ttl, blocking=True, blocking_timeout=timeout):
        await asyncio.sleep(seconds)


@pytest.mark.parametrize(("timeout", "ttl"), [(None, None), (30, 30)])
async def test_a_waiter_cancelled_as_it_is_woken_passes_the_lock_on(
    backend: ThrottleBackend, timeout: float | None, ttl: float | None
) -> None:
    seen: list[dict[str, Any]] = []
    with _watched(seen):
        async with backend.lock("door", ttl=ttl, blocking_timeout=30):
            first = asyncio.ensure_future(_hold(backend, "door", timeout=timeout, ttl=ttl))
            second = asyncio.ensure_future(_hold(backend, "door", timeout=timeout, ttl=ttl))
            await asyncio.sleep(0.05)  # both wait for it
        first.cancel()  # woken by the release, cancelled before it could take the lock
        await asyncio.wait_for(second, PROMPT)
        await asyncio.gather(first, return_exceptions=True)
        await asyncio.wait_for(_hold(backend, "door"), PROMPT)
    assert seen == []


_SLOW_STORE = {
    # backend kind: (the method that takes a lock in the store, the one that drops it)
    "RedisBackend": ("_set_if_absent", "_delete_if_token"),
    "SQLiteBackend": ("_take_lock", "_drop_lock"),
}


@contextlib.contextmanager
def _slow(backend: ThrottleBackend, step: int, before: bool) -> Any:
    """The store's lock step (`step` 0: take, 1: drop) made slow: a pause before it is sent
    (`before`) or after its reply came (the reply still in flight for the caller)."""

    def slowed(real: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def slow(*args: Any, **kwargs: Any) -> Any:
            if before:
                await asyncio.sleep(0.2)
            result = await real(*args, **kwargs)
            if not before:
                await asyncio.sleep(0.2)
            return result

        return slow

    kind = type(backend).__name__
    if kind in _SLOW_STORE:
        name = _SLOW_STORE[kind][step]
        with patch.object(backend, name, slowed(getattr(backend, name))):
            yield
        return
    from traffik.backends.memcached import _lock

    name = ("_adder", "_compare_and_delete")[step]
    real_make = getattr(_lock, name)

    def make(*args: Any) -> Any:
        return slowed(real_make(*args))

    with patch.object(_lock, name, make):
        yield


STORE_LOCKS = [
    pytest.param("sqlite"),
    pytest.param("redis", marks=pytest.mark.redis),
    pytest.param("memcached", marks=pytest.mark.memcached),
]


@pytest.mark.parametrize("kind", STORE_LOCKS)
@pytest.mark.parametrize("step", [0, 1], ids=["acquire", "release"])
@pytest.mark.parametrize("before", [True, False], ids=["before-send", "reply-in-flight"])
async def test_a_lock_step_cancelled_in_flight_leaves_the_lock_free(
    kind: str, step: int, before: bool, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Cancelled while its store step was on its way: taking it (the store may have stored
    the token, the caller will never release it) or dropping it (the caller left). Either
    way the lock is free at once, not at the end of its 30 s ttl."""
    backend = await _backend(kind, request, tmp_path)
    seen: list[dict[str, Any]] = []
    try:
        with _watched(seen):
            with _slow(backend, step, before):
                task = asyncio.ensure_future(_hold(backend, "door"))
                await asyncio.sleep(0.1)
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            await asyncio.wait_for(_hold(backend, "door"), PROMPT)
            await asyncio.sleep(0.3)  # whatever went on in the background is over
    finally:
        await backend.reset()
        await backend.close()
    assert seen == []


# -- decisions: some of 50 concurrent hits cancelled, the others decided exactly --

STRATEGIES = [FixedWindow, TokenBucket, GCRA, SlidingWindowCounter, LeakyBucket, SlidingWindowLog]


@pytest.mark.parametrize("strategy_cls", STRATEGIES, ids=lambda cls: cls.__name__)
async def test_cancelled_hits_are_charged_whole_or_not_and_block_nobody(
    backend: ThrottleBackend, strategy_cls: type
) -> None:
    """50 concurrent hits on a limit of 10, 15 of them cancelled at random await points
    (before their decision is sent, while their coalesced round is in flight, queued behind
    one): the others still get their decisions; the store counts each cancelled hit whole
    or not at all, so admitted hits never exceed the limit with the charged cancelled ones
    counted, and the next hits on the key are decided at once."""
    rng = random.Random(strategy_cls.__name__)
    seen: list[dict[str, Any]] = []
    with _watched(seen):
        for burst in range(3):
            throttle = HTTPThrottle(
                f"storm-{burst}", rate="10/h", strategy=strategy_cls(), backend=backend
            )
            tasks = [asyncio.ensure_future(_admitted(throttle)) for _ in range(50)]
            for i in rng.sample(range(50), 15):
                await asyncio.sleep(rng.choice([0, 0, 0.0002, 0.001, 0.003]))
                tasks[i].cancel()
            done = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), PROMPT)
            admitted = sum(1 for result in done if result is True)
            cancelled = sum(1 for result in done if isinstance(result, asyncio.CancelledError))
            assert all(isinstance(r, (bool, asyncio.CancelledError)) for r in done), done
            left = 0
            for _ in range(11):
                left += await asyncio.wait_for(_admitted(throttle), PROMPT)
            charged = 10 - left
            assert admitted <= charged <= admitted + cancelled, (admitted, cancelled, left)
    assert seen == []


# -- connections: a reply cut by a cancellation never answers the next command --


@pytest.mark.parametrize(
    "kind",
    [
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("memcached", marks=pytest.mark.memcached),
    ],
)
async def test_a_reply_in_flight_when_cancelled_is_not_read_by_the_next_hit(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Hits cancelled after their command was sent, before its reply was read (a tiny
    `asyncio.wait_for`): their connection must not go back to the pool with that reply
    waiting in its buffer. The next 100 decisions, on other keys, read their own counts."""
    backend = await _backend(kind, request, tmp_path)
    seen: list[dict[str, Any]] = []
    try:
        with _watched(seen):
            throttle = HTTPThrottle("wire", rate="1000/h", backend=backend)
            await _admitted(throttle, "10.9.9.9")  # connections are open
            for delay in [0, 0.00005, 0.0001, 0.0002, 0.0005, 0.001] * 10:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(_admitted(throttle, "10.9.9.9"), delay)
            for n in range(100):
                client = f"10.1.{n // 250}.{n % 250}"
                for expected in (999, 998):
                    await throttle.hit(_request(client))
                    stat = await throttle.stat(_request(client))
                    assert stat is not None and stat.hits_remaining == expected, (client, stat)
    finally:
        await backend.reset()
        await backend.close()
    assert seen == []


# -- through an app: clients that give up mid-request --


def _failed(outcome: Any) -> bool:
    return getattr(outcome, "status_code", 500) >= 400


def _app(backend: ThrottleBackend) -> Any:
    from fastapi import Depends, FastAPI

    from traffik.middleware import MiddlewareThrottle, ThrottleMiddleware

    guarded = HTTPThrottle("dep", rate="1000/h", backend=backend)
    outcome = HTTPThrottle("outcome", rate="1000/h", backend=backend, charge_when=_failed)
    every = HTTPThrottle("mw", rate="1000/h", backend=backend, charge_when=_failed)
    app = FastAPI()
    app.add_middleware(ThrottleMiddleware, middleware_throttles=[MiddlewareThrottle(every)])

    @app.get("/dep", dependencies=[Depends(guarded)])
    async def dep(pause: float = 0.0) -> dict[str, str]:
        await asyncio.sleep(pause)
        return {"ok": "yes"}

    @app.get("/outcome")
    async def by_outcome(
        pause: float = 0.0, request: Request = Depends(outcome.charge_by_outcome)
    ) -> PlainTextResponse:
        await asyncio.sleep(pause)
        return PlainTextResponse("no", status_code=401)

    return app, (guarded, outcome, every)


async def test_clients_that_give_up_mid_request_leave_no_traceback_and_no_stuck_key(
    backend: ThrottleBackend, caplog: pytest.LogCaptureFixture
) -> None:
    """Requests cut by `asyncio.wait_for` at every stage (in the middleware's decision, the
    dependency's, the endpoint, the settling of a `charge_when` charge): nothing reaches the
    log as an error or the loop as an unretrieved exception, and later requests on the same
    keys are answered at once with exact counts."""
    app, _ = _app(backend)
    seen: list[dict[str, Any]] = []
    transport = httpx.ASGITransport(app=app)
    caplog.set_level(logging.WARNING)
    with _watched(seen):
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            for delay in [0, 0.0001, 0.0005, 0.001, 0.002, 0.005] * 3:
                for path in ("/dep?pause=0.002", "/outcome?pause=0.002"):
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(http.get(path), delay)
            await asyncio.sleep(0.05)  # whatever a cut request left running is over
            for path, status in (("/dep", 200), ("/outcome", 401)):
                got = await asyncio.wait_for(http.get(path), PROMPT)
                assert got.status_code == status, got.text
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert errors == []
    assert seen == []
