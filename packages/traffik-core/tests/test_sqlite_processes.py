"""`SQLiteBackend` shared by real OS processes: spawned workers, forked workers, uvicorn, and a SIGKILL."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from traffik import Rate
from traffik.backends.sqlite import SQLiteBackend
from traffik.exceptions import BackendConnectionError, ConnectionThrottled
from traffik.strategies import BUILTIN_STRATEGIES, GCRA

pytestmark = pytest.mark.slow

STRATEGIES = [cls.__name__ for cls in BUILTIN_STRATEGIES]

WORKER = r"""
import asyncio, json, sys, time

from traffik import strategies
from traffik.backends.sqlite import SQLiteBackend
from traffik.rates import parse_rates
from traffik.strategies.steps import in_place_kind, items


class PausedInside(strategies.GCRA):
    # Fault injection: stops inside the decision's transaction (the write lock held) until killed.
    def transition(self, state, now, rate, cost):
        print("inside", flush=True)
        time.sleep(3600)


async def main():
    backend = SQLiteBackend(sys.argv[1], timeout=float(sys.argv[2]))
    await backend.initialize()
    print("ready", flush=True)
    for line in sys.stdin:  # one command per line; the answer is one line of JSON
        command = json.loads(line)
        name = command["strategy"]
        strategy = PausedInside() if name == "PausedInside" else getattr(strategies, name)()
        rates = parse_rates(command["rate"])
        if command.get("path") == "throttle":  # a throttle's hot path: at once, else waited
            kind = in_place_kind(strategy)
            decide = backend.decider(strategy, rates[0], 1, kind)
            waited = backend.waited_decider(strategy, rates[0], 1, kind)

            async def hit(decide=decide, waited=waited, key=command["key"]):
                decision = decide(key)
                return decision if decision is not None else await waited(key)
        elif len(rates) == 1:
            hit = lambda: strategy(command["key"], rates[0], backend, 1)
        else:  # several rates: one decision over them all
            both = items(strategy, command["key"], rates, 1, backend)
            hit = lambda: backend.evaluate_all(both)
        results = await asyncio.gather(
            *(hit() for _ in range(command["hits"])), return_exceptions=True
        )
        errors = [repr(r) for r in results if isinstance(r, BaseException)]
        admitted = sum(1 for r in results if r == 0 or getattr(r, "allowed", False))
        print(json.dumps({"admitted": admitted, "errors": errors}), flush=True)
    await backend.close()


asyncio.run(main())
"""


class Worker:
    """A Python process running `WORKER` on one file, driven line by line."""

    def __init__(self, path: Path, timeout: float = 10.0) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", WORKER, str(path), str(timeout)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line.strip())

    def send(
        self, strategy: str, key: str, hits: int, rate: str = "100/hour", path: str = "strategy"
    ) -> None:
        assert self.process.stdin is not None
        command = {"strategy": strategy, "key": key, "hits": hits, "rate": rate, "path": path}
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()

    def line(self, timeout: float = 60.0) -> str:
        try:
            return self._lines.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"worker {self.process.pid} said nothing for {timeout}s")

    def result(self) -> dict[str, Any]:
        answer: dict[str, Any] = json.loads(self.line())
        return answer

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                pipe.close()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[list[Worker]]:
    started = [Worker(tmp_path / "traffik.db") for _ in range(4)]
    try:
        for worker in started:
            assert worker.line() == "ready"
        yield started
    finally:
        for worker in started:
            worker.stop()


@pytest.mark.parametrize(
    ("rate", "path"),
    [("100/hour", "strategy"), ("100/hour;150/day", "strategy"), ("100/hour", "throttle")],
    ids=["one rate", "two rates", "a throttle's path"],
)
def test_four_processes_admit_exactly_the_limit(
    workers: list[Worker], rate: str, path: str
) -> None:
    # `strategy`: `strategy.decide` (a transaction each); `throttle`: the backend's deciders
    # as a throttle calls them (one `UPDATE` at once, or gathered, or a key's hits in turn).
    # A first burst creates the key's row (4 x 10 hits, all admitted); the second (4 x 50
    # concurrent hits) decides on a row that exists, and admits exactly what is left of 100.
    for strategy in STRATEGIES:
        for hits, admitted in ((10, 40), (50, 60)):
            for worker in workers:
                worker.send(strategy, f"hot-{strategy}", hits, rate, path)
            results = [worker.result() for worker in workers]
            assert [r["errors"] for r in results] == [[]] * 4
            assert sum(r["admitted"] for r in results) == admitted, (strategy, hits, results)


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["strategy", "throttle"])
async def test_a_process_killed_inside_a_transaction_blocks_nobody(
    tmp_path: Path, path: str
) -> None:
    # `throttle`: killed inside the one `UPDATE` of a throttle's decision (its row exists),
    # as the statement calls back into Python, the write lock held.
    db = tmp_path / "traffik.db"
    paused, *others = (Worker(db) for _ in range(4))
    try:
        for worker in (paused, *others):
            assert worker.line() == "ready"
        if path == "throttle":
            paused.send("GCRA", "paused", 1, path=path)  # the row exists from now on
            assert paused.result() == {"admitted": 1, "errors": []}
        paused.send("PausedInside", "paused", 1, path=path)
        assert paused.line() == "inside"
        probe = SQLiteBackend(db, timeout=0.05)
        with pytest.raises(BackendConnectionError, match="stayed locked"):
            await GCRA()("probe", Rate.parse("1/min"), probe)  # the write lock is held
        for worker in others:  # they wait for the lock while it is held...
            worker.send("GCRA", "after", 50)
        await anyio.sleep(0.2)
        os.kill(paused.process.pid, signal.SIGKILL)  # ...and go on once its holder is killed
        results = [worker.result() for worker in others]
        assert [r["errors"] for r in results] == [[]] * 3
        assert sum(r["admitted"] for r in results) == 100
        assert paused.process.wait(timeout=10) == -signal.SIGKILL
        assert await GCRA()("probe", Rate.parse("1/min"), probe) == 0
        await probe.close()
    finally:
        for worker in (paused, *others):
            worker.stop()


FORKING = r"""
import asyncio, os, sys

from traffik.backends.sqlite import SQLiteBackend
from traffik.rates import Rate
from traffik.strategies import TokenBucket

backend, rate, strategy = SQLiteBackend(sys.argv[1]), Rate.parse("100/hour"), TokenBucket()


async def hits(n):
    waits = await asyncio.gather(*(strategy("hot", rate, backend) for _ in range(n)))
    return waits.count(0)


admitted = asyncio.run(hits(20))  # the master uses the backend before forking (a preloaded app)
children = []
for _ in range(3):  # gunicorn-style workers: forked, each with an event loop of its own
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        os.write(write, str(asyncio.run(hits(60))).encode())
        os._exit(0)
    os.close(write)
    children.append((pid, read))
for pid, read in children:
    assert os.waitpid(pid, 0)[1] == 0
    admitted += int(os.read(read, 64))
print(admitted + asyncio.run(hits(10)))
"""


def run_script(script: str, tmp_path: Path, timeout: float) -> str:
    """`script` run by a Python of its own on a file in `tmp_path` (its `sys.argv[1]`): what
    it printed, once it exited cleanly."""
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "traffik.db")],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_forked_workers_share_one_budget(tmp_path: Path) -> None:
    assert int(run_script(FORKING, tmp_path, timeout=120)) == 100


FORK_IN_LOOP = r"""
import asyncio, os, sys

from traffik.backends.sqlite import SQLiteBackend, _connections
from traffik.rates import Rate
from traffik.strategies import FixedWindow

backend, rate, strategy = SQLiteBackend(sys.argv[1]), Rate.parse("3/hour"), FixedWindow()
loop = asyncio.new_event_loop()  # kept open across the fork: its connection is inherited
hit = lambda: loop.run_until_complete(strategy("hot", rate, backend))
admitted = [hit(), hit()].count(0)
parent = backend._db._by_loop[loop].cursor
read, write = os.pipe()
pid = os.fork()
if pid == 0:
    waits = [hit(), hit()]  # the same loop object, in a process of its own
    own = backend._db._by_loop[loop].cursor is not parent
    backend._db.close()  # closes only what the child opened
    os.write(write, f"{waits.count(0)} {own} {len(_connections._INHERITED)}".encode())
    os._exit(0)
assert os.waitpid(pid, 0)[1] == 0
child_admitted, own, inherited = os.read(read, 64).decode().split()
print(admitted, child_admitted, own, inherited, hit() == 0, parent.execute("SELECT 1").fetchone())
"""


def test_a_forked_child_never_uses_the_parents_connection(tmp_path: Path) -> None:
    """A loop kept open across a fork: the child opens its own connection on it, never
    touches (nor closes) the one it inherited, and shares the budget with its parent."""
    printed = run_script(FORK_IN_LOOP, tmp_path, timeout=60)
    # parent 2 admitted, child 1 of 2, on its own connection, the inherited one kept aside;
    # the parent's next hit is refused, and its connection still works.
    assert printed.split() == ["2", "1", "True", "1", "False", "(1,)"]


FORK_IN_CHECKPOINT = r"""
import asyncio, os, sys, time

from traffik.backends.sqlite import SQLiteBackend

backend = SQLiteBackend(sys.argv[1])
asyncio.run(backend.set("k", "0"))
backend._db._checkpoints._running = True  # the parent forks while its checkpoint thread runs
pid = os.fork()
if pid == 0:
    async def writes():
        await backend.increment("k")  # the child's own connection: its commits counted from here
        checkpoints = backend._db._checkpoints
        checkpoints.every, checkpoints._commits = 20, 0
        for _ in range(20):  # the 20th commit starts a checkpoint, and nothing writes after it
            await backend.increment("k")
        deadline = time.monotonic() + 30
        while os.path.getsize(sys.argv[1] + "-wal") and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        return os.path.getsize(sys.argv[1] + "-wal")
    os._exit(0 if asyncio.run(writes()) == 0 else 1)
print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
"""


def test_a_child_forked_during_a_checkpoint_still_checkpoints(tmp_path: Path) -> None:
    """The checkpoint thread is not carried across a fork: the child must not wait for it
    (its log would grow without end). The child's last commit is the one that starts its
    checkpoint: a commit after it would grow the log again whenever the thread finished
    first (under load), with no checkpoint due until 20 more."""
    assert run_script(FORK_IN_CHECKPOINT, tmp_path, timeout=60).strip() == "0"


APP = r"""
import os

from fastapi import Depends, FastAPI, Request

from traffik import HTTPThrottle
from traffik.backends.sqlite import SQLiteBackend
from traffik.strategies import BUILTIN_STRATEGIES

backend = SQLiteBackend(os.environ["TRAFFIK_TEST_DB"], timeout=10)
app = FastAPI(lifespan=backend.lifespan)


def route(strategy):
    throttle = HTTPThrottle(strategy.__name__, rate="100/hour", backend=backend, strategy=strategy())

    async def endpoint(request: Request = Depends(throttle)):
        return {"pid": os.getpid()}

    app.add_api_route(f"/{strategy.__name__}", endpoint)


for strategy in BUILTIN_STRATEGIES:
    route(strategy)
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def uvicorn_app(tmp_path: Path) -> Iterator[str]:
    """`uvicorn --workers 4` serving `APP` on a free loopback port; stopped by its PID."""
    (tmp_path / "sqlite_app.py").write_text(APP)
    port = free_port()
    env = {**os.environ, "TRAFFIK_TEST_DB": str(tmp_path / "traffik.db")}
    command = [sys.executable, "-m", "uvicorn", "sqlite_app:app", "--app-dir", str(tmp_path)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--workers", "4", "--no-access-log"]
    server = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    log: list[str] = []
    started = threading.Event()

    def read() -> None:
        assert server.stderr is not None
        for line in server.stderr:
            log.append(line)
            if sum("Application startup complete" in seen for seen in log) == 4:
                started.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        if not started.wait(60):
            pytest.fail("uvicorn did not start 4 workers:\n" + "".join(log))
        yield f"http://127.0.0.1:{port}"
    finally:
        os.kill(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.kill(server.pid, signal.SIGKILL)
            server.wait(timeout=10)
        if server.stderr is not None:
            server.stderr.close()


async def burst(client: httpx.AsyncClient, path: str, n: int) -> list[httpx.Response]:
    """`n` requests at once, each on a new connection (so the kernel spreads them over workers)."""
    responses: list[httpx.Response] = []

    async def get() -> None:
        responses.append(await client.get(path))

    async with anyio.create_task_group() as group:
        for _ in range(n):
            group.start_soon(get)
    return responses


@pytest.mark.anyio
async def test_uvicorn_workers_admit_exactly_the_limit(uvicorn_app: str) -> None:
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=0)
    pids = set()
    async with httpx.AsyncClient(base_url=uvicorn_app, limits=limits, timeout=30) as client:
        for strategy in STRATEGIES:
            responses = await burst(client, f"/{strategy}", 200)
            statuses = sorted(r.status_code for r in responses)
            assert statuses == [200] * 100 + [429] * 100, strategy
            pids |= {r.json()["pid"] for r in responses if r.status_code == 200}
    assert len(pids) > 1, "every request went to one worker: nothing was shared"


HOLDER = r"""
import sqlite3, sys

conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("holding", flush=True)
sys.stdin.readline()  # holds the write lock until told to let go (or killed)
conn.execute("COMMIT")
"""


@contextlib.contextmanager
def held(db: Path) -> Iterator[None]:
    """Another process holding the write lock of the file at `db` meanwhile."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(db)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        yield
    finally:
        holder.kill()
        holder.wait(timeout=10)
        for pipe in (holder.stdin, holder.stdout):
            if pipe is not None:
                pipe.close()


TIMEOUT = 0.5


async def _answered_in(throttle: Any, request: Any) -> float:
    """Seconds until `throttle` answers `request` (a 429 through `on_error`, the file locked)."""
    started = time.monotonic()
    with pytest.raises(ConnectionThrottled):
        await throttle.hit(request)
    return time.monotonic() - started


@pytest.mark.anyio
@pytest.mark.parametrize("strategy", STRATEGIES)
async def test_behind_a_locked_file_each_request_fails_after_timeout(
    tmp_path: Path, strategy: str
) -> None:
    # Requests of one client wait together (the key's lane, `traffik.backends.lanes`): a
    # request queued behind another's wait still fails `timeout` after it asked, not after
    # the wait in front of it ended.
    pytest.importorskip("starlette")
    from starlette.requests import Request

    from traffik import HTTPThrottle, strategies

    backend = SQLiteBackend(tmp_path / "traffik.db", timeout=TIMEOUT, cache_refusals=False)
    throttle = HTTPThrottle(
        "locked", rate="1000/min", backend=backend, strategy=getattr(strategies, strategy)()
    )
    scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "client": ("1.2.3.4", 1)}
    await throttle.hit(Request(scope))  # initialised, the key's row written

    async def one_after(delay: float) -> float:
        await asyncio.sleep(delay)
        return await _answered_in(throttle, Request(scope))

    with held(tmp_path / "traffik.db"):
        burst = await asyncio.gather(*(one_after(0) for _ in range(40)))
        stream = await asyncio.gather(*(one_after(0.1 * i) for i in range(12)))
    assert all(TIMEOUT - 0.02 < took < TIMEOUT + 0.3 for took in burst), burst
    assert all(TIMEOUT - 0.02 < took < TIMEOUT + 0.3 for took in stream), stream
    await throttle.hit(Request(scope))  # the file is free again: decided at once
    await backend.close()
