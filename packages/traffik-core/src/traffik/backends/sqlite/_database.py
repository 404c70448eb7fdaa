"""`Database`: one SQLite file as this process uses it: a connection per event loop, bounded waits.

SQLite calls block. Each operation here is one short synchronous step (a transaction of a
few statements, tens of microseconds) run on the event loop itself, with SQLite's own busy
handler off: when another connection holds the write lock, the step fails at once with
`SQLITE_BUSY`, the task sleeps (0.5 ms doubling to 8 ms, jittered) while the loop serves
other tasks, and the step runs again until `timeout` has passed, when it becomes a
`BackendConnectionError`. The loop is never blocked for longer than one step (and, once
per thousand or so pages written, the checkpoint SQLite runs inside a commit, which ends
with an fsync). A process that dies inside a transaction leaves nothing held: the operating
system drops its file locks, and its unfinished write is rolled back from the log.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import sqlite3
import weakref
from collections.abc import Awaitable
from typing import Any, Callable, TypeVar

from traffik.backends.sqlite._errors import is_busy, locked, translate
from traffik.backends.sqlite._path import MEMORY
from traffik.exceptions import BackendError

__all__ = ["Database"]

T = TypeVar("T")

_FIRST_DELAY = 0.0005
_MAX_DELAY = 0.008
_memories = itertools.count()
_INHERITED: list[Callable[[], None]] = []
"""The `close` of each connection a parent process opened before a fork: in the child it is
never called (SQLite forbids using a connection across `fork`, closing included); keeping it
here keeps its connection from the garbage collector."""


class Database:
    """The file at `path` (or a private in-memory database for `:memory:`), for this process.

    Connections are opened lazily, one per event loop and process: a backend built at import
    time serves every loop, and a worker forked from a process that used it (gunicorn)
    opens its own instead of touching the parent's. A loop's connection closes with `close()`
    or once the loop is gone. A `:memory:` database is shared by the loops of this process
    and lives until `close()`.
    """

    def __init__(self, path: str, timeout: float) -> None:
        self.path = path
        self.timeout = timeout
        self.memory = path == MEMORY
        self._memory_name = f"traffik-{os.getpid()}-{next(_memories)}"
        self._pid = os.getpid()
        self._by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, sqlite3.Cursor]
        self._by_loop = weakref.WeakKeyDictionary()
        self._last: tuple[Any, sqlite3.Cursor | None] = (None, None)
        self._anchored = False
        self._closers: list[weakref.finalize[Any, Any]] = []

    def cursor(self) -> sqlite3.Cursor:
        """The cursor of the running loop's connection in this process, opened on first use
        (by `run`); one cursor serves every statement, saving a cursor per statement."""
        loop = asyncio.get_running_loop()
        if os.getpid() != self._pid:
            self._forget_parent()
        last_loop, cursor = self._last
        if last_loop is loop and cursor is not None:
            return cursor
        cursor = self._by_loop.get(loop)
        if cursor is None:
            if self.memory and not self._anchored:
                self._open(self)  # keeps the shared in-memory database alive until close()
                self._anchored = True
            cursor = self._by_loop[loop] = self._open(loop).cursor()
        self._last = (loop, cursor)
        return cursor

    def _open(self, owner: Any) -> sqlite3.Connection:
        """A new connection, closed by `close()` or once `owner` is gone; its errors (a busy
        or corrupt file) reach `run`, which handles them."""
        target, uri = self.path, False
        if self.memory:
            target, uri = f"file:{self._memory_name}?mode=memory&cache=shared", True
        conn = sqlite3.connect(
            target, timeout=0, isolation_level=None, check_same_thread=False, uri=uri
        )
        closer = weakref.finalize(owner, conn.close)
        closer.atexit = False
        try:
            conn.execute("PRAGMA synchronous = NORMAL")
        except BaseException:
            closer()
            raise
        self._closers = [c for c in self._closers if c.alive] + [closer]
        return conn

    def _forget_parent(self) -> None:
        for closer in self._closers:
            detached = closer.detach()
            if detached is not None:
                _INHERITED.append(detached[1])
        self._reset()
        self._pid = os.getpid()

    def _reset(self) -> None:
        self._by_loop = weakref.WeakKeyDictionary()
        self._last, self._anchored, self._closers = (None, None), False, []

    def close(self) -> None:
        """Close this process's connections (the data in a file stays)."""
        if os.getpid() != self._pid:
            self._forget_parent()
        closers = self._closers
        self._reset()
        for closer in closers:
            closer()

    async def run(self, doing: str, step: Callable[..., T], *args: Any) -> T:
        """`step(cursor, *args)`, run again while the file is busy, for at most `timeout`."""
        deadline, delay = None, _FIRST_DELAY
        while True:
            try:
                return step(self.cursor(), *args)
            except sqlite3.Error as exc:
                if not is_busy(exc):
                    raise translate(exc, self.path, doing) from exc
            now = asyncio.get_running_loop().time()
            if deadline is None:
                deadline = now + self.timeout
            elif now >= deadline:
                raise locked(self.path, self.timeout, doing)
            await asyncio.sleep(min(delay * (0.5 + random.random() / 2), deadline - now))
            delay = min(delay * 2, _MAX_DELAY)

    def write(self, doing: str, step: Callable[..., T], *args: Any) -> Awaitable[T]:
        """`step(cursor, *args)` inside one `BEGIN IMMEDIATE` transaction (see `run`)."""
        return self.run(doing, self._transaction, step, *args)

    @staticmethod
    def _transaction(cursor: sqlite3.Cursor, step: Callable[..., T], *args: Any) -> T:
        """`BEGIN IMMEDIATE`, the step, `COMMIT`; rolled back if anything fails."""
        cursor.execute("BEGIN IMMEDIATE")
        try:
            result = step(cursor, *args)
            cursor.execute("COMMIT")
        except BaseException:
            if cursor.connection.in_transaction:
                cursor.execute("ROLLBACK")
            raise
        return result

    async def prepare(self, schema: tuple[str, ...]) -> None:
        """Write-ahead logging (for a file) and the tables in `schema`, if missing."""
        if not self.memory:
            await self.run("switching it to write-ahead logging", _use_wal, self.path)
        await self.write("creating its tables", _create, schema)


def _create(cursor: sqlite3.Cursor, schema: tuple[str, ...]) -> None:
    for statement in schema:
        cursor.execute(statement)


def _use_wal(cursor: sqlite3.Cursor, path: str) -> None:
    """Switch the file to write-ahead logging (kept in the file), or say why it cannot be."""
    mode = cursor.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise BackendError(
            f"SQLite file {path!r} cannot use write-ahead logging (journal_mode is {mode!r}): "
            "put it on a local filesystem (not NFS or SMB) that supports shared memory"
        )
