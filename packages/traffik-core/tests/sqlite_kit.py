"""What the SQLite backend's tests share: another process's write lock, traced statements, a
test table, the stored rows. (On the path through pytest's `pythonpath`; not a test module.)"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional, Union

from traffik.backends.sqlite import SQLiteBackend

__all__ = [
    "REWRITE",
    "Seen",
    "Ticker",
    "hold",
    "insert",
    "release",
    "statements",
    "stored",
    "values",
]

WORDS = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE")
REWRITE = "UPDATE traffik_entries SET value = traffik_value("
"""The one statement of a decision made on a row that exists (traced as `REWRITE`)."""


def hold(db: Path) -> sqlite3.Connection:
    """Another connection (another process), holding the file's write lock until `release`."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    return conn


def release(conn: sqlite3.Connection) -> None:
    conn.execute("COMMIT")
    conn.close()


def insert(value: int, fail: Optional[Exception] = None) -> Any:
    """A step inserting `value` into the test table `t` (then raising `fail`, if given)."""

    def step(cursor: sqlite3.Cursor) -> int:
        cursor.execute("INSERT INTO t (v) VALUES (?)", (value,))
        if fail is not None:
            raise fail
        return value

    return step


def values(db: Path) -> list[int]:
    """What the test table `t` holds, in order."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return [v for (v,) in conn.execute("SELECT v FROM t ORDER BY v")]


def stored(db: Union[Path, str]) -> list[tuple[str, str, Any]]:
    """Every entry row `(key, value, expires_at)`, by key."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return conn.execute(
            "SELECT key, value, expires_at FROM traffik_entries ORDER BY key"
        ).fetchall()


class Ticker:
    """Counts the loop's iterations: a callback that schedules itself again each time."""

    def __init__(self) -> None:
        self.n = 0
        self._on = True
        asyncio.get_running_loop().call_soon(self._tick)

    def _tick(self) -> None:
        self.n += 1
        if self._on:
            asyncio.get_running_loop().call_soon(self._tick)

    def stop(self) -> None:
        self._on = False


class Seen(list[str]):
    """The statements traced, in order; `ticks[i]` is the loop iteration statement i ran in
    (0 without a `Ticker`)."""

    def __init__(self) -> None:
        super().__init__()
        self.ticks: list[int] = []


@contextlib.contextmanager
def statements(backend: SQLiteBackend, ticker: Optional[Ticker] = None) -> Iterator[Seen]:
    """The transaction statements (`BEGIN`, `COMMIT`, `ROLLBACK`, `SAVEPOINT`, `RELEASE`)
    and the one-statement decisions (`REWRITE`, found a row or not) this loop's connection
    runs meanwhile."""
    seen = Seen()
    handle = backend._db._handle()
    assert handle.cursor is not None, "the connection is open (something was written)"
    conn = handle.cursor.connection

    def trace(sql: str) -> None:
        if sql.startswith(WORDS):
            seen.append(sql)
        elif sql.startswith(REWRITE):
            seen.append("REWRITE")
        else:
            return
        seen.ticks.append(ticker.n if ticker is not None else 0)

    conn.set_trace_callback(trace)
    try:
        yield seen
    finally:
        conn.set_trace_callback(None)
