"""What is specific to `SQLiteBackend`: URLs, the file outliving the app, its errors, its cap and sweep."""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
import struct
import threading
import time
from pathlib import Path

import httpx
import pytest
from fastapi import Depends, FastAPI
from starlette.requests import Request

from traffik import HTTPThrottle, ManualClock, Rate
from traffik.backends import from_url, get_backend_class
from traffik.backends.sqlite import SQLiteBackend
from traffik.exceptions import (
    BackendCapacityError,
    BackendConnectionError,
    BackendError,
    ConfigurationError,
    ConnectionThrottled,
)
from traffik.strategies import GCRA, FixedWindow, TokenBucket

pytestmark = pytest.mark.anyio


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "traffik.db"


def rows(path: Path) -> int:
    """Rows in the file, counted by a connection of the test's own."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return int(conn.execute("SELECT count(*) FROM traffik_entries").fetchone()[0])


# -- finding and configuring it ----------------------------------------------------------


def test_urls_as_sqlalchemy_writes_them(tmp_path: Path) -> None:
    assert get_backend_class("sqlite") is SQLiteBackend
    absolute = from_url(f"sqlite:///{tmp_path}/a.db")  # an absolute path: four slashes
    assert isinstance(absolute, SQLiteBackend) and absolute.path == f"{tmp_path}/a.db"
    assert SQLiteBackend("sqlite:///data/traffik.db").path == "data/traffik.db"
    assert SQLiteBackend("sqlite:///:memory:").path == ":memory:"
    assert SQLiteBackend(tmp_path / "b.db").path == str(tmp_path / "b.db")
    backend = from_url("sqlite:///:memory:", namespace="api", max_keys=10)
    assert (backend.namespace, backend.max_keys, backend.persistent) == ("api", 10, True)


@pytest.mark.parametrize(
    "url", ["sqlite://", "sqlite:///", "sqlite://host/x.db", "sqlite:///x.db?timeout=2", ""]
)
def test_urls_that_name_no_file_are_refused(url: str) -> None:
    with pytest.raises(ConfigurationError, match=r"sqlite:////absolute/path\.db|as keywords"):
        SQLiteBackend(url)


def test_bad_settings() -> None:
    with pytest.raises(ConfigurationError, match="max_keys=0"):
        SQLiteBackend(":memory:", max_keys=0)
    with pytest.raises(ConfigurationError, match="timeout=0"):
        SQLiteBackend(":memory:", timeout=0)
    with pytest.raises(ConfigurationError, match="sweep_interval=-1"):
        SQLiteBackend(":memory:", sweep_interval=-1)
    with pytest.raises(TypeError, match="'max_rows'"):
        SQLiteBackend(":memory:", max_rows=5)


async def test_a_throttle_takes_the_url(db: Path) -> None:
    throttle = HTTPThrottle("items", rate="2/min", backend=f"sqlite:///{db}")
    assert isinstance(throttle.backend, SQLiteBackend)
    app = FastAPI()

    @app.get("/items", dependencies=[Depends(throttle)])
    async def items() -> list[int]:
        return []

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        statuses = [(await client.get("/items")).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    await throttle.backend.close()


# -- the file outlives the app ------------------------------------------------------------


async def test_state_survives_a_restart(db: Path) -> None:
    clock = ManualClock()
    strategy, rate = GCRA(), Rate.parse("3/min")
    first = SQLiteBackend(db, clock=clock)
    assert [await strategy("k", rate, first) for _ in range(3)] == [0, 0, 0]
    async with first.lifespan(None):
        pass  # a worker shutting down: persistent by default, nothing is reset
    restarted = SQLiteBackend(f"sqlite:///{db}", clock=clock)
    assert await strategy("k", rate, restarted) == 20_000
    await restarted.close()


async def test_a_reset_by_another_worker_reaches_one_that_remembered_a_refusal(
    db: Path,
) -> None:
    """Two workers on one file; the first remembers its client's refusal (an hour's wait),
    the second resets the client (as `python -m traffik reset` does). Within a second the
    first asks the file again and admits the client: it does not refuse it for the hour."""
    clock = ManualClock()
    workers = [SQLiteBackend(db, clock=clock, namespace="w") for _ in range(2)]
    throttles = [HTTPThrottle("api", "1/h", backend=backend) for backend in workers]
    request = Request(
        {"type": "http", "method": "GET", "path": "/", "headers": [], "client": ("1.2.3.4", 1)}
    )
    statuses = []
    for throttle in throttles[:1] * 3:
        statuses.append(await _status(throttle, request))
    assert statuses == [200, 429, 429]  # (the second refusal from the worker's memory)
    await throttles[1].reset(request)
    clock.advance(ms=999)
    assert await _status(throttles[0], request) == 429  # (still remembered)
    clock.advance(ms=1)
    assert await _status(throttles[0], request) == 200
    for backend in workers:
        await backend.close()


async def _status(throttle: HTTPThrottle, request: Request) -> int:
    try:
        await throttle.hit(request)
    except Exception as exc:
        return int(getattr(exc, "status_code", 500))
    return 200


async def test_namespaces_share_a_file_but_not_their_keys(db: Path) -> None:
    app, v2, apple = (SQLiteBackend(db, namespace=n) for n in ("app", "app:v2", "apple"))
    for backend in (app, v2, apple):
        await backend.set("k", backend.namespace)  # a key given without its namespace gets it
        assert await backend.increment_with_ttl(backend.get_key("n"), 2) == 2
    await app.clear()
    assert await app.get("k") is None and await app.get(app.get_key("n")) is None
    assert [await b.get("k") for b in (v2, apple)] == ["app:v2", "apple"]
    assert rows(db) == 4
    for backend in (app, v2, apple):
        await backend.close()


async def test_scan_lists_live_keys_of_a_prefix_in_its_namespace(db: Path) -> None:
    clock = ManualClock()
    backend = SQLiteBackend(db, namespace="app", clock=clock)
    other = SQLiteBackend(db, namespace="app:v2", clock=clock)
    await backend.multi_set({"api:a": "1", "api:b": "2", "apiary": "3", "web:a": "4"})
    await backend.set("api:gone", "5", expire=1)
    await other.set("api:a", "6")
    clock.advance(2)
    assert await backend.scan(backend.get_key("api:")) == ["app:api:a", "app:api:b"]
    assert await backend.scan(backend.get_key("api"), limit=2) == ["app:api:a", "app:api:b"]
    assert len(await backend.scan(backend.get_key(""))) == 4
    assert await other.scan(other.get_key("")) == [other.get_key("api:a")]
    await backend.close()
    await other.close()


async def test_clear_deletes_in_batches(db: Path) -> None:
    backend, other = SQLiteBackend(db, namespace="big"), SQLiteBackend(db, namespace="other")
    await backend.multi_set({f"k{i}": "v" for i in range(1234)})
    await other.set("k", "v")
    await backend.clear()
    assert rows(db) == 1
    await backend.close()
    await other.close()


# -- bounded: the cap and the sweep -------------------------------------------------------


async def test_full_file_refuses_new_keys_but_keeps_counting_old_ones(db: Path) -> None:
    clock = ManualClock()
    backend = SQLiteBackend(db, clock=clock, max_keys=3)
    strategy, rate = FixedWindow(), Rate.parse("2/min")
    for client in ("a", "b", "c"):
        assert await strategy(client, rate, backend) == 0
    with pytest.raises(BackendCapacityError, match=r"max_keys=3 rows.*'sqlite:d:fw'"):
        await strategy("d", rate, backend)
    assert await strategy("a", rate, backend) == 0
    assert await strategy("a", rate, backend) > 0
    clock.advance(61)  # once rows expire, room returns
    assert await strategy("d", rate, backend) == 0
    assert rows(db) <= 3
    await backend.close()


async def test_expired_rows_are_swept_a_chunk_per_new_key(db: Path) -> None:
    clock = ManualClock()
    backend = SQLiteBackend(db, clock=clock, sweep_interval=5)
    await backend.multi_set({f"k{i:03}": "v" for i in range(600)}, expire=1)
    clock.advance(10)
    counts = []
    for i in range(3):  # each new key sweeps at most 256 rows, never the whole table
        await backend.set(f"new{i}", "v")
        counts.append(rows(db))
    assert counts == [600 - 256 + 1, 600 - 512 + 2, 3]
    await backend.close()


async def test_sweeping_goes_on_after_the_clock_is_set_back(db: Path) -> None:
    clock = ManualClock()
    backend = SQLiteBackend(db, clock=clock, sweep_interval=5)
    await backend.set("before", "v")  # a pass ends: the next is due 5 s later
    clock.set(clock() - 3600)  # the host's clock is set back an hour
    await backend.multi_set({f"k{i:03}": "v" for i in range(100)}, expire=1)
    clock.advance(10)
    await backend.set("new", "v")  # a pass is due: 10 s went by, not an hour
    assert rows(db) == 2
    await backend.close()


# -- errors that name the file ------------------------------------------------------------


async def test_a_corrupt_file_is_an_error_naming_it(db: Path) -> None:
    db.write_bytes(b"these bytes are not a SQLite database" * 200)
    backend = SQLiteBackend(db)
    with pytest.raises(BackendError, match=rf"{re.escape(str(db))}.*corrupt or not a database"):
        await backend.get("k")


async def test_a_damaged_page_is_an_error_naming_the_file(db: Path) -> None:
    backend = SQLiteBackend(db)
    await backend.multi_set({f"key-{i}": "x" * 100 for i in range(200)})
    await backend.close()
    with db.open("r+b") as damaged:  # page 2 onwards: the table's pages
        damaged.seek(4096)
        damaged.write(b"\xff" * 8192)
    backend = SQLiteBackend(db)
    with pytest.raises(BackendError, match=rf"{re.escape(str(db))}.*corrupt or not a database"):
        await backend.multi_get(*(f"key-{i}" for i in range(200)))


@pytest.mark.parametrize(
    "table",
    [
        "CREATE TABLE traffik_entries (id INTEGER PRIMARY KEY, name TEXT)",
        "CREATE TABLE traffik_meta (a, b)",
    ],
)
async def test_a_file_with_another_apps_tables_is_refused_at_start(db: Path, table: str) -> None:
    with contextlib.closing(sqlite3.connect(db)) as other:
        other.execute(table)
        other.commit()
    backend = SQLiteBackend(db)
    with pytest.raises(BackendError) as caught:
        await backend.initialize()
    message = str(caught.value)
    assert f"{str(db)!r}" in message and "not made by Traffik" in message, message
    assert "another path" in message, message


async def test_another_apps_tables_beside_ours_are_left_alone(db: Path) -> None:
    with contextlib.closing(sqlite3.connect(db)) as other:
        other.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
        other.execute("INSERT INTO users (name) VALUES ('ada')")
        other.commit()
    backend = SQLiteBackend(db)
    assert await FixedWindow()("client", Rate.parse("3/min"), backend) == 0
    await backend.close()
    with contextlib.closing(sqlite3.connect(db)) as other:
        assert other.execute("SELECT name FROM users").fetchall() == [("ada",)]


async def test_a_file_from_another_schema_version_is_refused(db: Path) -> None:
    backend = SQLiteBackend(db)
    await backend.initialize()
    await backend.close()
    with contextlib.closing(sqlite3.connect(db)) as newer:
        newer.execute("UPDATE traffik_meta SET value = 99 WHERE name = 'schema'")
        newer.commit()
    with pytest.raises(BackendError) as caught:
        await SQLiteBackend(db).initialize()
    message = str(caught.value)
    assert f"{str(db)!r}" in message and "schema version 99" in message, message


async def test_a_missing_directory_is_an_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "traffik.db"
    with pytest.raises(BackendConnectionError, match=rf"{re.escape(str(path))}.*directory exists"):
        await SQLiteBackend(path).initialize()


async def test_a_home_directory_tilde_is_not_expanded_and_the_error_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(BackendConnectionError) as caught:
        await from_url("sqlite:///~/traffik.db").initialize()
    message = str(caught.value)
    assert "'~/traffik.db'" in message and "'~' is not expanded" in message, message


async def test_a_directory_is_an_error_saying_so(tmp_path: Path) -> None:
    with pytest.raises(BackendConnectionError) as caught:
        await SQLiteBackend(tmp_path).initialize()
    message = str(caught.value)
    assert f"{str(tmp_path)!r}" in message and "it is a directory" in message, message
    assert "directory exists" not in message


async def test_a_locked_file_fails_after_the_timeout_then_recovers(db: Path) -> None:
    backend = SQLiteBackend(db, timeout=0.05)
    await backend.set("k", "v")
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process's long write transaction
    try:
        with pytest.raises(
            BackendConnectionError, match=rf"{re.escape(str(db))}.*stayed locked for 0.05s"
        ):
            await GCRA()("k", Rate.parse("3/min"), backend)
        assert await backend.get("k") == "v", "readers are not blocked by a writer"
        request = Request({"type": "http", "method": "GET", "path": "/", "headers": []})
        allow = HTTPThrottle("t", rate="1/min", backend=backend, on_error="allow")
        assert await allow.hit(request) is request  # the throttle's on_error decides
        with pytest.raises(ConnectionThrottled):  # the default fails closed: 429
            await HTTPThrottle("t", rate="1/min", backend=backend).hit(request)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert await GCRA()("k", Rate.parse("3/min"), backend) == 0
    await backend.close()


async def test_a_file_locked_before_opening_is_an_error_naming_it(db: Path) -> None:
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("CREATE TABLE other (x)")
    holder.execute("BEGIN EXCLUSIVE")  # rollback-journal mode: nobody may even read
    try:
        with pytest.raises(BackendConnectionError, match=rf"{re.escape(str(db))}.*stayed locked"):
            await SQLiteBackend(db, timeout=0.05).initialize()
    finally:
        holder.execute("ROLLBACK")
        holder.close()


# -- threads ------------------------------------------------------------------------------


def test_event_loops_in_threads_share_one_budget(db: Path) -> None:
    backend = SQLiteBackend(db)
    strategy, rate = TokenBucket(), Rate.parse("100/hour")
    admitted: list[int] = []

    def worker() -> None:
        async def hits() -> int:
            waits = await asyncio.gather(*(strategy("hot", rate, backend) for _ in range(50)))
            return sum(1 for wait in waits if wait == 0)

        admitted.append(asyncio.run(hits()))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(admitted) == 4 and sum(admitted) == 100


# -- waiting for a busy file, checkpoints, deciding at once ------------------------------


async def test_tasks_waiting_for_a_busy_file_are_served_in_arrival_order(db: Path) -> None:
    backend = SQLiteBackend(db, timeout=5)
    await backend.set("k", "0")
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process's write transaction
    done: list[tuple[int, int]] = []

    async def hit(n: int) -> None:
        done.append((n, await backend.increment("k")))

    tasks = []
    for n in range(8):
        tasks.append(asyncio.ensure_future(hit(n)))
        await asyncio.sleep(0.002)  # each one queued before the next arrives
    await asyncio.sleep(0.02)
    assert done == [], "nobody gets through while the lock is held"
    tasks[2].cancel()  # a task giving up in the line does not block those behind it
    holder.execute("COMMIT")
    holder.close()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert done == [(n, i + 1) for i, n in enumerate([0, 1, 3, 4, 5, 6, 7])]
    assert await backend.get("k") == "7"
    await backend.close()


async def test_every_waiting_task_fails_once_the_timeout_has_passed(db: Path) -> None:
    backend = SQLiteBackend(db, timeout=0.05)
    await backend.set("k", "0")
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        found = await asyncio.wait_for(
            asyncio.gather(*(backend.increment("k") for _ in range(5)), return_exceptions=True),
            timeout=5,
        )
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert all(isinstance(f, BackendConnectionError) for f in found), found
    assert await backend.increment("k") == 1, "the line is empty again: the next one goes through"
    await backend.close()


def logged(db: Path) -> tuple[int, int]:
    """The write-ahead log's frames, and how many of them are copied back into the file,
    read from its shared-memory index (`WalIndexHdr.mxFrame`, `WalCkptInfo.nBackfill`)
    without a connection, which could checkpoint."""
    shm = Path(f"{db}-shm").read_bytes()[:100]
    return struct.unpack_from("=I", shm, 16)[0], struct.unpack_from("=I", shm, 96)[0]


async def test_checkpoints_run_in_a_thread_not_inside_a_commit(db: Path) -> None:
    backend = SQLiteBackend(db)
    await backend.set("k", "0")
    checkpoints = backend._db._checkpoints
    assert checkpoints is not None
    checkpoints.every = 20
    checkpoints._commits = 0  # (opening the file and `set` committed too: count from here)
    for _ in range(19):
        await backend.increment("k")
    frames, copied = logged(db)
    assert frames >= 19 and copied == 0, "no checkpoint inside the commits"
    await backend.increment("k")  # the 20th commit starts one, in a thread
    wal = db.with_name(db.name + "-wal")
    for _ in range(1000):  # (the thread may be between its two steps: wait for the end)
        if wal.stat().st_size == 0:
            break
        await asyncio.sleep(0.005)
    assert wal.stat().st_size == 0, "the whole log was copied back into the file, then emptied"
    await backend.increment("k")
    assert logged(db) == (1, 0), "the next commit starts the log over"
    assert await backend.get("k") == "21"
    await backend.close()


async def test_the_log_stays_bounded_under_steady_writes(db: Path) -> None:
    """A passive checkpoint alone never lets the log start over while writes go on (it grew
    without end); the truncating step after it does, with no await between the writes."""
    backend = SQLiteBackend(db)
    await backend.initialize()
    checkpoints = backend._db._checkpoints
    assert checkpoints is not None
    checkpoints.every = 50
    most = 0
    for n in range(1500):
        await backend.increment("k")
        if n % 10 == 0:
            time.sleep(0.001)  # (lets the checkpoint's thread run, as other requests would)
        most = max(most, logged(db)[0])
    assert most < 400, f"the log reached {most} frames"
    assert await backend.get("k") == "1500"
    await backend.close()


async def test_a_checkpoint_gives_the_logs_disk_space_back(db: Path) -> None:
    """The log file keeps its largest size unless it is truncated: a burst of writes between
    two checkpoints (tens of MB under key churn) would stay on disk for good."""
    backend = SQLiteBackend(db)
    await backend.multi_set({f"key-{i}": "x" * 200 for i in range(5000)})
    wal = db.with_name(db.name + "-wal")
    assert wal.stat().st_size > 1_000_000
    checkpoints = backend._db._checkpoints
    assert checkpoints is not None
    checkpoints.checkpoint()
    assert wal.stat().st_size == 0
    await backend.set("k", "v")  # and the log starts over, from its first frames
    frames, copied = logged(db)
    assert copied == 0 and 0 < frames <= 3
    assert await backend.get("key-4999") == "x" * 200
    await backend.close()


@pytest.mark.parametrize("strategy", [FixedWindow(), TokenBucket(), GCRA()], ids=repr)
async def test_a_throttle_decides_at_once_and_goes_the_long_way_when_busy(
    db: Path, strategy: object
) -> None:
    backend = SQLiteBackend(db, timeout=5)
    throttle = HTTPThrottle("t", rate="3/min", backend=backend, strategy=strategy)
    request = Request({"type": "http", "method": "GET", "path": "/", "headers": []})
    await backend.initialize()
    key = backend.get_key("probe") + getattr(strategy, "suffix", "")
    kind = throttle._in_place
    assert kind and backend.decide_now(key, strategy, Rate.parse("3/min"), 1, kind) is not None
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    assert backend.decide_now(key, strategy, Rate.parse("3/min"), 1, kind) is None, "busy"
    waiting = asyncio.ensure_future(throttle.hit(request, skip_handler=True))
    await asyncio.sleep(0.02)
    assert not waiting.done(), "a busy file makes the hit wait its turn"
    holder.execute("COMMIT")
    holder.close()
    await waiting
    for _ in range(2):
        await throttle.hit(request, skip_handler=True)
    with pytest.raises(ConnectionThrottled):
        await throttle.hit(request)
    await backend.close()
