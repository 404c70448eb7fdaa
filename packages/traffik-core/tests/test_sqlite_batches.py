"""`SQLiteBackend` under contention: the first task in a loop's line writes for those behind it.

Another connection holds the file's write lock (`BEGIN IMMEDIATE` on a raw `sqlite3`
connection), several writes queue on the backend, then the lock is released: the first in
line runs them all in one transaction, each in a savepoint, and hands out their outcomes.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import pytest
from sqlite_kit import hold, insert, release, statements, values

from traffik import Rate
from traffik.backends.sqlite import SQLiteBackend
from traffik.backends.sqlite._turns import MAX_BATCH
from traffik.exceptions import BackendConnectionError, BackendError
from traffik.strategies import TokenBucket

pytestmark = pytest.mark.anyio


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "traffik.db"


@pytest.fixture
async def backend(db: Path) -> AsyncIterator[SQLiteBackend]:
    backend = SQLiteBackend(db, timeout=5)
    await backend.initialize()
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as conn:
        conn.execute("CREATE TABLE t (v INTEGER UNIQUE)")
    yield backend
    await backend.close()


async def queue(backend: SQLiteBackend, *calls: Awaitable[Any]) -> list[asyncio.Task[Any]]:
    """Each call started in order, all of them waiting in the loop's line once this returns."""
    tasks = []
    for call in calls:
        tasks.append(asyncio.ensure_future(call))
        await asyncio.sleep(0)  # it makes its first attempt, or joins the line
    await asyncio.sleep(0.01)
    assert len(backend._db._handle().turns._line) == len(calls)
    return tasks


def commits(backend: SQLiteBackend) -> int:
    checkpoints = backend._db._checkpoints
    assert checkpoints is not None
    return checkpoints._commits


async def test_waiting_writes_commit_once_each_with_its_own_count_in_arrival_order(
    backend: SQLiteBackend, db: Path
) -> None:
    held = hold(db)
    tasks = await queue(backend, *(backend.increment_with_ttl("hits", 1, 60) for _ in range(10)))
    before = commits(backend)
    with statements(backend) as seen:
        release(held)
        counts = await asyncio.gather(*tasks)
    assert counts == list(range(1, 11))
    assert commits(backend) == before + 1
    assert seen.count("BEGIN IMMEDIATE") == 1 and seen.count("COMMIT") == 1
    assert seen.count("SAVEPOINT step") == seen.count("RELEASE step") == 10
    assert int(await backend.get("hits") or 0) == 10


async def test_a_long_line_is_served_in_turns_of_max_batch(
    backend: SQLiteBackend, db: Path
) -> None:
    # A turn holds the event loop: at most MAX_BATCH writes each, the rest of the line next.
    count = 2 * MAX_BATCH + 3
    held = hold(db)
    tasks = await queue(backend, *(backend.increment_with_ttl("hits", 1, 60) for _ in range(count)))
    before = commits(backend)
    with statements(backend) as seen:
        release(held)
        counts = await asyncio.gather(*tasks)
    assert counts == list(range(1, count + 1))
    assert commits(backend) == before + 3
    assert seen.count("BEGIN IMMEDIATE") == 3
    assert seen.count("SAVEPOINT step") == count


async def test_a_write_alone_takes_no_savepoint(backend: SQLiteBackend) -> None:
    with statements(backend) as seen:
        assert await backend.increment_with_ttl("hits", 1, 60) == 1
    assert seen == ["BEGIN IMMEDIATE", "COMMIT"]


async def test_each_waiting_decision_gets_its_own(backend: SQLiteBackend, db: Path) -> None:
    strategy, rate = TokenBucket(), Rate.parse("5/min")
    held = hold(db)
    tasks = await queue(backend, *(backend.evaluate("k", strategy, rate, 1) for _ in range(8)))
    release(held)
    decisions = await asyncio.gather(*tasks)
    assert [d.allowed for d in decisions] == [True] * 5 + [False] * 3


async def test_a_failing_step_fails_alone(backend: SQLiteBackend, db: Path) -> None:
    write = backend._db.write
    held = hold(db)
    tasks = await queue(
        backend,
        write("inserting", insert(1, ValueError("first"))),  # the head's own step
        write("inserting", insert(2)),
        write("inserting", insert(2)),  # a duplicate: sqlite3.IntegrityError
        write("inserting", insert(3, KeyError("third"))),
        write("inserting", insert(4)),
    )
    before = commits(backend)
    release(held)
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[0], ValueError)
    assert results[1] == 2 and results[4] == 4
    assert isinstance(results[2], BackendError) and not isinstance(results[2], sqlite3.Error)
    assert "while inserting" in str(results[2])
    assert isinstance(results[2].__cause__, sqlite3.IntegrityError)
    assert isinstance(results[3], KeyError)
    assert values(db) == [2, 4]  # the failed steps' own inserts were undone
    assert commits(backend) == before + 1


async def test_a_failing_commit_fails_every_step(backend: SQLiteBackend, db: Path) -> None:
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as conn:
        conn.execute(
            "CREATE TABLE child (parent INTEGER REFERENCES t (v) DEFERRABLE INITIALLY DEFERRED)"
        )
    handle = backend._db._handle()
    assert handle.cursor is not None
    handle.cursor.execute("PRAGMA foreign_keys = ON")

    def orphan(cursor: sqlite3.Cursor) -> None:  # only COMMIT checks a deferred foreign key
        cursor.execute("INSERT INTO child (parent) VALUES (42)")

    write = backend._db.write
    held = hold(db)
    tasks = await queue(backend, write("a", insert(1)), write("b", orphan), write("c", insert(3)))
    release(held)
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, BackendError) for r in results)
    assert all(str(r).endswith(f"while {doing}") for r, doing in zip(results, "abc"))
    assert values(db) == []
    assert await write("inserting", insert(5)) == 5  # the connection is usable again


async def test_a_cancelled_waiter_s_step_does_not_run(backend: SQLiteBackend, db: Path) -> None:
    write = backend._db.write
    held = hold(db)
    tasks = await queue(backend, *(write("inserting", insert(v)) for v in (1, 2, 3, 4)))
    tasks[2].cancel()
    await asyncio.sleep(0)
    release(held)
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert results[:2] == [1, 2] and results[3] == 4
    assert isinstance(results[2], asyncio.CancelledError)
    assert values(db) == [1, 2, 4]
    assert not backend._db._handle().turns


async def test_a_waiter_cancelled_once_its_step_ran_drops_the_result(
    backend: SQLiteBackend, db: Path
) -> None:
    write = backend._db.write
    loop = asyncio.get_running_loop()
    tasks: list[asyncio.Task[Any]] = []

    def last(cursor: sqlite3.Cursor) -> int:
        # Runs in the batch, before the outcomes are handed out: the cancellation lands
        # after task 1 has its result, before it resumes.
        loop.call_soon(tasks[1].cancel)
        return insert(3)(cursor)

    held = hold(db)
    tasks += await queue(
        backend, write("inserting", insert(1)), write("inserting", insert(2)), write("x", last)
    )
    release(held)
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert results[0] == 1 and results[2] == 3
    assert isinstance(results[1], asyncio.CancelledError)
    assert values(db) == [1, 2, 3]  # it was charged, as if it completed just before
    await write("inserting", insert(4))  # the line is clear
    assert not backend._db._handle().turns


async def test_a_read_in_line_runs_alone_and_in_its_turn(backend: SQLiteBackend, db: Path) -> None:
    held = hold(db)
    tasks = await queue(
        backend,
        backend.increment_with_ttl("hits", 1, 60),
        backend.increment_with_ttl("hits", 1, 60),
        backend.get("hits"),
        backend.increment_with_ttl("hits", 1, 60),
    )
    with statements(backend) as seen:
        release(held)
        results = await asyncio.gather(*tasks)
    assert results[:2] == [1, 2] and int(results[2]) == 2 and results[3] == 3
    assert seen.count("COMMIT") == 2  # the two first together, the last alone


async def test_waiting_writes_still_time_out(db: Path) -> None:
    backend = SQLiteBackend(db, timeout=0.2)
    await backend.initialize()
    held = hold(db)
    try:
        started = time.monotonic()
        tasks = await queue(backend, *(backend.increment_with_ttl("hits", 1, 60) for _ in range(5)))
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(r, BackendConnectionError) for r in results)
        assert time.monotonic() - started < 2
    finally:
        release(held)
        await backend.close()
    assert values_in(db) == 0


def values_in(db: Path) -> int:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return int(conn.execute("SELECT count(*) FROM traffik_entries").fetchone()[0])
