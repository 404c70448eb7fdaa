"""Where an app's event loops come from: one backend object used from many loops, on every backend.

A loop per request (`TestClient(app)` without `with`, `asyncio.run()` per job), loops in
threads at the same time, a backend opened on one loop and used and closed on others, and
uvloop: decisions stay exact, and nothing is kept for a loop that is gone.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest
import uvloop
from fastapi import Depends, FastAPI
from starlette.requests import Request
from starlette.testclient import TestClient

from traffik import HTTPThrottle, Rate
from traffik.backends.base import ThrottleBackend
from traffik.backends.inmemory import InMemoryBackend
from traffik.backends.memcached import MemcachedBackend
from traffik.backends.redis import RedisBackend
from traffik.backends.sqlite import SQLiteBackend
from traffik.strategies import BUILTIN_STRATEGIES
from traffik.testing.conformance import BackendConformance

RATE = Rate.parse("100/day")  # no refill worth a hit while a test runs
SLIDING_WINDOW_RATE_CHANGE = {"SlidingWindowCounter": [10, 10, 10, 40, 10, 10, 8, 14]}
"""Memcached's, as its conformance module says."""
STORES = ["memory", "sqlite", "redis", "memcached"]
Make = Callable[..., ThrottleBackend]


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make(store: str, request: pytest.FixtureRequest, tmp_path: Path) -> Make:
    """A factory of backends on `store` (a new namespace each)."""
    names = iter(range(1000))

    def namespace() -> str:
        return f"loops-{os.getpid()}-{id(request)}-{next(names)}"

    if store == "memory":
        build: Make = InMemoryBackend
    elif store == "sqlite":
        build = functools.partial(SQLiteBackend, f"sqlite:///{tmp_path / 'traffik.db'}")
    elif store == "redis":
        build = functools.partial(RedisBackend, request.getfixturevalue("redis_url"))
    else:
        build = functools.partial(MemcachedBackend, request.getfixturevalue("memcached_url"))

    def backend(**options: Any) -> ThrottleBackend:
        options.setdefault("namespace", namespace())
        return build(**options)

    return backend


def open_files() -> int:
    return len(os.listdir("/proc/self/fd"))


class AsyncioErrors(logging.Handler):
    """What asyncio logs ("Task was destroyed", "Event loop is closed", ...)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record.getMessage())


@pytest.fixture
def asyncio_errors() -> Iterator[list[str]]:
    handler = AsyncioErrors()
    logger = logging.getLogger("asyncio")
    logger.addHandler(handler)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)


# -- a loop per request -------------------------------------------------------------------


@pytest.mark.parametrize("strategy", BUILTIN_STRATEGIES, ids=lambda cls: cls.__name__)
def test_a_loop_per_hit_admits_exactly_the_limit(make: Make, strategy: type) -> None:
    backend, decide = make(), strategy()

    async def hit() -> int:
        return await decide("k", RATE, backend, 1)

    waits = [asyncio.run(hit()) for _ in range(130)]
    assert sum(1 for wait in waits if wait == 0) == 100
    asyncio.run(backend.close())


def test_an_un_entered_test_client_keeps_nothing_per_dead_loop(
    make: Make, asyncio_errors: list[str]
) -> None:
    """`TestClient(app)` without `with` runs each request on a new loop: 500 requests keep
    the limit exactly, and leave no connection or file open for the loops that are gone."""
    backend = make()
    throttle = HTTPThrottle("loops", rate="300/day", backend=backend)
    app = FastAPI()

    @app.get("/")
    async def root(request: Request = Depends(throttle)) -> dict[str, bool]:
        return {"ok": True}

    client = TestClient(app)
    client.get("/")
    gc.collect()
    files = open_files()
    statuses = [client.get("/").status_code for _ in range(499)]
    assert statuses.count(200) == 299 and statuses.count(429) == 200
    gc.collect()
    assert open_files() <= files + 2  # the last loop's connection, at most
    asyncio.run(backend.close())
    gc.collect()
    assert open_files() <= files - 1 or not isinstance(backend, SQLiteBackend)
    assert asyncio_errors == []


# -- loops in threads at the same time --------------------------------------------------------


@pytest.mark.parametrize("strategy", BUILTIN_STRATEGIES, ids=lambda cls: cls.__name__)
def test_two_threads_with_their_own_loops_share_the_limit_exactly(
    make: Make, strategy: type
) -> None:
    backend, decide = make(), strategy()
    start = threading.Barrier(2)
    waits: list[int] = []

    def worker() -> None:
        async def hits() -> list[int]:
            start.wait()
            return list(await asyncio.gather(*(decide("k", RATE, backend, 1) for _ in range(100))))

        waits.extend(asyncio.run(hits()))

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(waits) == 200
    assert sum(1 for wait in waits if wait == 0) == 100
    asyncio.run(backend.close())


def test_threads_each_running_a_loop_per_call_decide_every_hit(make: Make) -> None:
    # Eight threads, `asyncio.run` per hit: each new loop drops the connections of the loops
    # closed before it, and two threads doing so at once raced (a KeyError: the hit failed,
    # and `on_error` refused a client far below its limit).
    backend, decide = make(), BUILTIN_STRATEGIES[0]()
    rate = Rate.parse("100000/h")
    failures: list[BaseException] = []
    admitted: list[bool] = []

    def worker() -> None:
        for _ in range(40):
            try:
                admitted.append(asyncio.run(decide("k", rate, backend, 1)) == 0)
            except BaseException as exc:  # (a thread's error would be lost)
                failures.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    asyncio.run(backend.close())
    assert failures == [] and admitted == [True] * 320


# -- opened on one loop, used on another, closed from a third ------------------------------


def test_opened_on_one_loop_used_on_another_closed_from_a_third(
    make: Make, asyncio_errors: list[str]
) -> None:
    backend = make()
    decide = BUILTIN_STRATEGIES[0]()
    asyncio.run(backend.initialize())

    opened: dict[str, Any] = {}

    def used_in_a_thread() -> None:
        loop = asyncio.new_event_loop()
        opened["loop"] = loop
        opened["wait"] = loop.run_until_complete(decide("k", RATE, backend, 1))

    thread = threading.Thread(target=used_in_a_thread)
    thread.start()
    thread.join()
    assert opened["wait"] == 0
    asyncio.run(backend.close())
    assert backend.explicitly_closed
    # The thread's loop ends as asyncio requires of a loop run by hand: its async generators
    # shut down (where Redis clients of that loop close), then closed. Whatever it left
    # unclosed is collected here, so that its warning fails this test, not a later one.
    loop = opened.pop("loop")
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()
    del loop
    gc.collect()
    assert asyncio_errors == []


# -- uvloop -------------------------------------------------------------------------------


class TestConformanceOnUvloop(BackendConformance):
    """The shared suite, every backend, on uvloop (as `uvicorn[standard]` runs in production)."""

    exact_walks = 10

    @pytest.fixture
    def anyio_backend(self) -> Any:
        return ("asyncio", {"loop_factory": uvloop.new_event_loop})

    @pytest.fixture
    def make_backend(self, make: Make, store: str) -> Make:
        # as each backend's own conformance module sets them
        if store == "redis":
            self.clock_moves_expiry = False
        if store == "memcached":
            self.rate_change_differs = SLIDING_WINDOW_RATE_CHANGE
        return make
