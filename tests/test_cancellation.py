"""Cancellation on the decision path, on every backend: a cancelled hit or lock holder never
leaves a lane, lock or connection stuck, is charged whole or not at all, and loses no one
else's decision (a client that disconnects, `asyncio.wait_for` around a call)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import random
import sys
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


# -- a decision over several store operations, cut between them: all of it or none --


class _Held(TokenBucket):
    """A token bucket through the generic path (its `transition` overridden: no Lua on Redis),
    so that a Redis step with it and a built-in item is decided group by group."""

    def transition(self, state: Any, now: int, rate: Any, cost: int) -> Any:
        return super().transition(state, now, rate, cost)


@contextlib.contextmanager
def _paused_after(
    owner: Any, name: str, call: int, reached: asyncio.Event, before: bool = False
) -> Any:
    """`owner.name` (one store operation of a decision) made to pause once its `call`th call
    (from 0) has returned: its operation is done in the store, the decision not told yet
    (`before`: the pause comes before the operation is sent). `reached` is set at the pause;
    it lasts 0.2 s."""
    real = getattr(owner, name)
    calls = 0

    async def paused(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if before and calls == call + 1:
            reached.set()
            await asyncio.sleep(0.2)
        result = await real(*args, **kwargs)
        if not before and calls == call + 1:
            reached.set()
            await asyncio.sleep(0.2)
        return result

    with patch.object(owner, name, paused):
        yield


_MULTI_STEP = [
    # backend kind, the method run once per store operation of a decision of several items
    pytest.param("memcached", "_take", marks=pytest.mark.memcached, id="memcached-items"),
    pytest.param("redis", "_decide", marks=pytest.mark.redis, id="redis-groups"),
]


@pytest.mark.parametrize(("kind", "operation"), _MULTI_STEP)
@pytest.mark.parametrize("cut_after", [0, 1], ids=["after-first", "after-last"])
async def test_a_decision_of_several_operations_cancelled_between_them_is_whole_or_none(
    kind: str, operation: str, cut_after: int, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """`evaluate_all` over two items that take two store operations (Memcached: one per
    item; Redis: an item with Lua and one without, decided group by group), its caller
    cancelled once the first or the last operation was done in the store: the cancellation
    reaches the caller at once, and the two items are charged alike (both, or neither)."""
    from traffik.rates import Rate
    from traffik.strategies.steps import Item

    backend = await _backend(kind, request, tmp_path)
    await backend.initialize()
    rate = Rate.parse("10/h")
    second = _Held() if kind == "redis" else FixedWindow()
    items = [Item(TokenBucket(), "cut-a", rate, 1), Item(second, "cut-b", rate, 1)]
    seen: list[dict[str, Any]] = []
    reached = asyncio.Event()
    try:
        with _watched(seen):
            with _paused_after(backend, operation, cut_after, reached):
                task = asyncio.ensure_future(backend.evaluate_all(items))
                await asyncio.wait_for(reached.wait(), PROMPT)
                task.cancel()
                await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 0.1)
                assert task.cancelled()
                await asyncio.sleep(0.4)  # what goes on in the background is over
            after = await backend.evaluate_all(items, commit=False)
        remaining = [part.remaining for part in after.parts]
        assert remaining in ([8, 8], [9, 9]), remaining  # (after one more hit: 9 when none)
    finally:
        await backend.reset()
        await backend.close()
    assert seen == []


async def _remaining(throttle: HTTPThrottle) -> int:
    stat = await throttle.stat(_request())
    assert stat is not None
    return stat.hits_remaining


@pytest.mark.parametrize("refused", [False, True], ids=["in-flight", "giving-back"])
async def test_throttles_on_two_backends_cancelled_between_them_are_charged_whole_or_not(
    backend: ThrottleBackend, refused: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """`hit_together` over a throttle on an in-memory backend, then one (two rates) on
    `backend`, its caller cancelled: once the second decision was made in the store, before
    it was told (in-flight); or, the second refusing, while the first one's charge is being
    given back (giving-back). The cancellation reaches the caller at once; the two throttles
    are charged alike, and a refusal leaves the first one's budget whole. Nothing is logged:
    the 429 answered to a client who left goes nowhere."""
    from traffik.together import Entry, hit_together

    first = HTTPThrottle("together-a", rate="10/h", backend=InMemoryBackend(namespace="a"))
    rates = ["1/h", "20/h"] if refused else ["10/h", "20/h"]
    second = HTTPThrottle("together-b", rate=rates, backend=backend)
    await first.backend.initialize()
    if refused:
        await second.hit(_request())  # its next hit is refused
    owner, name, before = (
        (first.backend, "refund_all", True) if refused else (backend, "evaluate_all", False)
    )
    reached = asyncio.Event()
    seen: list[dict[str, Any]] = []
    caplog.set_level(logging.WARNING)
    with _watched(seen):
        with _paused_after(owner, name, 0, reached, before):
            connection = _request()
            entries = [Entry(first, connection), Entry(second, connection)]
            task = asyncio.ensure_future(hit_together(entries, connection))
            await asyncio.wait_for(reached.wait(), PROMPT)
            task.cancel()
            await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 0.1)
            assert task.cancelled()
            await asyncio.sleep(0.4)  # what goes on in the background is over
        charged = (10 - await _remaining(first), (1 if refused else 10) - await _remaining(second))
    if refused:
        assert charged == (0, 1), charged  # (the second: the hit before)
    else:
        assert charged in ((0, 0), (1, 1)), charged
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert errors == []
    assert seen == []


async def test_a_step_that_never_waits_costs_no_turn_of_the_loop_from_python_3_12() -> None:
    """`finished` runs a step in a task of its own (its cancellation-proof step). From Python
    3.12 the task begins at once (eager), so a step that never waits, such as an in-memory
    store's, is over before `finished` awaits it; before 3.12 it begins at the loop's next
    turn. Either way it is not the caller's task (a lock taken in it is the step's)."""
    from traffik.backends.store_locks import finished

    order: list[str] = []
    caller = asyncio.current_task()

    async def step() -> Any:
        order.append("step")
        return asyncio.current_task()

    asyncio.get_running_loop().call_soon(order.append, "loop turn")
    ran_in = await finished(step(), "a step")
    order.append("returned")
    await asyncio.sleep(0)
    assert ran_in is not None and ran_in is not caller
    if sys.version_info >= (3, 12):
        assert order == ["step", "returned", "loop turn"]
    else:
        assert order == ["loop turn", "step", "returned"]
