"""Shutdown with decisions in flight, on every backend: `close()` while hits are being
decided (coalesced rounds, queued waiters, the Redis gate, a SQLite gathering, Memcached
rounds) answers every hit, leaves no connection open and charges exactly the admitted hits;
a closed backend reopens; a hit cancelled in a coalesced round is charged as if it
completed, and the hits behind it are decided once, in arrival order."""

from __future__ import annotations

import asyncio
import gc
import itertools
import os
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Callable

import aiomcache
import pytest
import redis
from starlette.requests import Request

from traffik import HTTPThrottle
from traffik.backends import from_url
from traffik.backends.base import ThrottleBackend
from traffik.exceptions import BackendConnectionError, ConnectionThrottled
from traffik.strategies import FixedWindow, Strategy, TokenBucket

pytestmark = pytest.mark.anyio

_names = itertools.count()
LIMIT = 60  # per hour: no refill while a test runs
SHARED = 50  # hits on one client
DISTINCT = 50  # hits on as many other clients


def _request(client: int) -> Request:
    host = f"10.9.{client // 250}.{client % 250}"
    return Request(
        {
            "type": "http",
            "method": "GET",
            "path": "/items",
            "root_path": "",
            "headers": [],
            "client": (host, 4000),
            "app": None,
        }
    )


class Store:
    """A backend's URL, and how many connections (or file handles) it has open."""

    def __init__(self, name: str, url: str, open_count: Callable[[], Any]) -> None:
        self.name = name
        self.url = url
        self.open_count = open_count

    async def settled_count(self, expected: int) -> int:
        """The open count once the server has noticed connections closed (up to 2 s)."""
        count = await self.open_count()
        for _ in range(100):
            if count == expected:
                break
            await asyncio.sleep(0.02)
            count = await self.open_count()
        return count


@pytest.fixture(
    params=[
        "memory",
        "sqlite",
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("memcached", marks=pytest.mark.memcached),
    ]
)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    name = request.param
    if name == "memory":

        async def nothing() -> int:
            return 0

        yield Store(name, "memory://", nothing)
    elif name == "sqlite":
        path = tmp_path / "shutdown.db"

        async def handles() -> int:
            fds = Path("/proc/self/fd")
            if not fds.exists():
                return 0
            count = 0
            for fd in fds.iterdir():
                try:
                    target = os.readlink(fd)
                except OSError:
                    continue
                count += target.startswith(str(path))
            return count

        yield Store(name, f"sqlite:///{path}", handles)
    elif name == "redis":
        redis_url = request.getfixturevalue("redis_url")
        client_name = f"shutdown{next(_names)}"

        async def connections() -> int:
            with redis.Redis.from_url(redis_url) as meter:
                return sum(1 for c in meter.client_list() if c["name"] == client_name)

        separator = "&" if "?" in redis_url else "?"
        yield Store(name, f"{redis_url}{separator}client_name={client_name}", connections)
    else:
        memcached_url = request.getfixturevalue("memcached_url")
        host, port = memcached_url.split("//", 1)[1].rsplit(":", 1)
        meter = aiomcache.Client(host, int(port))

        async def connections() -> int:
            return int((await meter.stats())[b"curr_connections"] or 0)

        try:
            yield Store(name, memcached_url, connections)
        finally:
            await meter.close()


async def _opened(store: Store, query: str = "", **options: Any) -> ThrottleBackend:
    url = store.url
    if query:
        url += ("&" if "?" in url else "?") + query
    backend = from_url(url, namespace=f"shutdown{next(_names)}", **options)
    await backend.initialize()
    return backend


async def _answer(throttle: HTTPThrottle, client: int) -> bool:
    """True when admitted, False when refused (a limit, or `on_error='throttle'`)."""
    try:
        await asyncio.wait_for(throttle.hit(_request(client)), 10)
    except ConnectionThrottled:
        return False
    return True


async def _charged(throttle: HTTPThrottle, client: int) -> int:
    """How many units `client` has spent: the limit less the hits still admitted."""
    admitted = 0
    while admitted <= LIMIT and await _answer(throttle, client):
        admitted += 1
    return LIMIT - admitted


STORES_AND_POOLS = [
    ("memory", ""),
    ("sqlite", ""),
    pytest.param("redis", "", marks=pytest.mark.redis, id="redis"),
    pytest.param("memcached", "", marks=pytest.mark.memcached, id="memcached"),
    # pools smaller than a burst: the rest of the burst queues (the Redis gate, a Memcached
    # pool's waiters) when the backend closes
    pytest.param("redis", "max_connections=3", marks=pytest.mark.redis, id="redis-small-pool"),
    pytest.param(
        "memcached", "pool_size=2", marks=pytest.mark.memcached, id="memcached-small-pool"
    ),
]


@pytest.mark.parametrize(("store", "pool"), STORES_AND_POOLS, indirect=["store"])
@pytest.mark.parametrize("strategy", [FixedWindow(), TokenBucket()], ids=lambda s: type(s).__name__)
async def test_close_with_decisions_in_flight_answers_each_and_leaks_nothing(
    store: Store, strategy: Strategy, pool: str, caplog: pytest.LogCaptureFixture
) -> None:
    baseline = await store.settled_count(await store.open_count())
    backend = await _opened(store, query=pool)
    uid = f"shutdown{next(_names)}"
    throttle = HTTPThrottle(
        uid, f"{LIMIT}/h", backend=backend, strategy=strategy, on_error="throttle"
    )
    clients = [0] * SHARED + list(range(1, DISTINCT + 1))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        hits = [asyncio.ensure_future(_answer(throttle, client)) for client in clients]
        await asyncio.sleep(0)  # every hit starts (and waits on the store, or in a round)
        await asyncio.wait_for(backend.close(), 10)
        answers = await asyncio.wait_for(asyncio.gather(*hits), 20)
        await asyncio.sleep(0.05)  # (a round or callback left behind would run by now)
        gc.collect()
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []
    assert [r.getMessage() for r in caplog.records if r.name == "asyncio"] == []
    assert await store.settled_count(baseline) == baseline, "connections left open"

    await backend.initialize()  # a lifespan that starts again
    try:
        admitted = {client: 0 for client in clients}
        for client, answer in zip(clients, answers):
            admitted[client] += answer
        charged = {client: await _charged(throttle, client) for client in admitted}
        assert charged == admitted, "a hit answered as refused was charged, or one admitted was not"
    finally:
        await backend.reset()
        await backend.close()
    assert await store.settled_count(baseline) == baseline


async def test_a_lifespan_that_starts_again_reopens_the_backend(store: Store) -> None:
    baseline = await store.settled_count(await store.open_count())
    backend = from_url(store.url, namespace=f"shutdown{next(_names)}")
    throttle = HTTPThrottle(f"shutdown{next(_names)}", f"{LIMIT}/h", backend=backend)
    for _ in range(3):  # as a TestClient does per `with`
        async with backend.lifespan(None):
            assert await _answer(throttle, 1)
        assert backend.explicitly_closed
    assert await store.settled_count(baseline) == baseline


FOLLOWERS = 20
ROUND_LIMIT = 10


async def _cancelled_opener(
    backend: ThrottleBackend, strategy: Strategy, iterations: int
) -> tuple[str, list[bool], int]:
    """An opener on one client, cancelled after `iterations` loop iterations, and
    `FOLLOWERS` hits behind it: how the opener ended, the followers' answers in arrival
    order, and the units the client spent in all."""
    throttle = HTTPThrottle(
        f"shutdown{next(_names)}", f"{ROUND_LIMIT}/h", backend=backend, strategy=strategy
    )
    opener = asyncio.ensure_future(_answer(throttle, 7))
    await asyncio.sleep(0)  # the opener starts its round
    followers = [asyncio.ensure_future(_answer(throttle, 7)) for _ in range(FOLLOWERS)]
    for _ in range(iterations):
        await asyncio.sleep(0)
    opener.cancel()
    answers = await asyncio.wait_for(asyncio.gather(*followers), 10)
    try:
        ended = "admitted" if await asyncio.wait_for(opener, 10) else "refused"
    except asyncio.CancelledError:
        ended = "cancelled"
    spent = ROUND_LIMIT - sum([await _answer(throttle, 7) for _ in range(ROUND_LIMIT)])
    return ended, answers, spent


@pytest.mark.parametrize("strategy", [FixedWindow(), TokenBucket()], ids=lambda s: type(s).__name__)
async def test_a_cancelled_opener_leaves_its_followers_decided_once_in_order(
    store: Store, strategy: Strategy
) -> None:
    """Cancelled before its operation reached the store, the opener is not charged; after,
    it is (as if it completed just before), never twice, and the followers see it."""
    backend = await _opened(store)
    try:
        for iterations in range(30):  # each await point of the opener's round, and after
            ended, answers, spent = await _cancelled_opener(backend, strategy, iterations)
            admitted = sum(answers)
            assert answers == [True] * admitted + [False] * (FOLLOWERS - admitted), str(
                (iterations, ended, spent, answers)
            )
            opener_spent = spent - admitted
            assert opener_spent == ROUND_LIMIT - admitted, (iterations, ended, answers)
            assert opener_spent in ((1,) if ended == "admitted" else (0, 1)), (iterations, ended)
    finally:
        await backend.reset()
        await backend.close()


SERVED_APP = r"""
import asyncio, os

from fastapi import Depends, FastAPI, Request

from traffik import HTTPThrottle
from traffik.backends import from_url

backend = from_url(os.environ["TRAFFIK_TEST_URL"], namespace=os.environ["TRAFFIK_TEST_NAMESPACE"])
app = FastAPI(lifespan=backend.lifespan)


async def slow_identifier(request: Request) -> str:
    await asyncio.sleep(0.5)  # the decision comes after SIGTERM reached the server
    return request.headers["x-client"]


throttle = HTTPThrottle("served", "1000/h", backend=backend, identifier=slow_identifier)


@app.get("/")
async def endpoint(request: Request = Depends(throttle)) -> dict:
    await asyncio.sleep(0.5)  # and the response after the decision
    return {"closed": backend.explicitly_closed}
"""


@pytest.mark.slow  # a uvicorn process
@pytest.mark.parametrize("name", ["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
async def test_sigterm_lets_requests_in_flight_finish_then_closes_the_backend(
    name: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    import signal
    import subprocess
    import sys

    import httpx

    from traffik.testing.servers import free_port

    url = f"sqlite:///{tmp_path / 'served.db'}"
    if name == "redis":
        url = request.getfixturevalue("redis_url")
    (tmp_path / "served_app.py").write_text(SERVED_APP)
    port = free_port()
    env = {
        **os.environ,
        "TRAFFIK_TEST_URL": url,
        "TRAFFIK_TEST_NAMESPACE": f"served{next(_names)}",
        "PYTHONWARNINGS": "error",
        "PYTHONASYNCIODEBUG": "",
    }
    command = [sys.executable, "-m", "uvicorn", "served_app:app", "--app-dir", str(tmp_path)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--no-access-log"]
    command += ["--timeout-graceful-shutdown", "20"]
    # The app has no WebSocket route. (uvicorn 0.39, the last for Python 3.9, loads
    # websockets' legacy server, which websockets 14+ deprecates: an error under -W error.)
    command += ["--ws", "none"]
    server = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    try:
        assert server.stderr is not None
        log = []
        for line in server.stderr:
            log.append(line)
            if "Application startup complete" in line:
                break
        else:
            pytest.fail("uvicorn did not start:\n" + "".join(log))
        clients = [0] * 10 + list(range(1, 11))
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=20) as http:
            hits = [
                asyncio.ensure_future(http.get("/", headers={"x-client": str(c)})) for c in clients
            ]
            await asyncio.sleep(0.25)  # every request is in flight, waiting for its identity
            server.send_signal(signal.SIGTERM)
            responses = await asyncio.wait_for(asyncio.gather(*hits), 30)
        stderr = "".join(log) + server.stderr.read()
        code = server.wait(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(timeout=10)
        if server.stderr is not None:
            server.stderr.close()
    assert [r.status_code for r in responses] == [200] * len(clients), stderr
    assert all(r.json() == {"closed": False} for r in responses)
    # (uvicorn 0.29+ ends by raising the signal it caught again, once shut down gracefully)
    assert code in (0, -signal.SIGTERM), stderr
    for trouble in ("Traceback", "Task was destroyed", "never retrieved", "never awaited", "ERROR"):
        assert trouble not in stderr, stderr
    assert "Application shutdown complete" in stderr, stderr


async def test_a_close_during_initialisation_leaves_the_backend_closed(store: Store) -> None:
    """A lifespan that ends while the first request is still opening the backend."""
    baseline = await store.settled_count(await store.open_count())
    backend = from_url(store.url, namespace=f"shutdown{next(_names)}")
    opening = asyncio.ensure_future(backend.initialize())
    await asyncio.sleep(0)  # the attempt is made, and has not run yet
    await backend.close()  # (no task around it: the attempt must not run first)
    with pytest.raises(BackendConnectionError, match="closed"):
        await asyncio.wait_for(opening, 10)
    assert backend.explicitly_closed and not backend.initialized
    with pytest.raises(BackendConnectionError, match="closed"):
        await backend.increment_with_ttl(backend.get_key("k"), 1, 60)
    assert await store.settled_count(baseline) == baseline, "connections left open"
    await backend.initialize()  # and it opens again
    try:
        assert await backend.increment_with_ttl(backend.get_key("k"), 1, 60) == 1
    finally:
        await backend.reset()
        await backend.close()
