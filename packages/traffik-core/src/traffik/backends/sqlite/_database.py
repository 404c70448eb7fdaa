"""`Database`: one SQLite file as this process uses it: a connection per event loop, bounded waits.

SQLite calls block. Each operation here is one short synchronous step (a transaction of a
few statements, tens of microseconds) run on the event loop itself, with SQLite's own busy
handler off (it sleeps whole milliseconds). When another process holds the write lock, the
step fails at once with `SQLITE_BUSY` and the task waits its turn: the tasks of one loop
queue in arrival order behind one of them, which alone asks the file again (so one process
sends one attempt at a time, not one per request). It first naps a few tens of
microseconds with the loop held (a transaction elsewhere ends that fast; a few naps at
most per wait), then sleeps on the loop, from 1 ms doubling to 8 ms
(jittered), while the loop serves other tasks, until `timeout` has passed, when it becomes a
`BackendConnectionError`. When the first in line gets the lock, it also runs the writes
of the tasks queued behind it, in their order, in its own transaction, each in a savepoint
(a failing one is undone alone and raises in its own task; an atomic step, one statement,
needs none: SQLite undoes a failing statement alone), and commits once: under
contention a process takes the lock once per line of waiting requests instead of once per
request, and the tasks behind neither ask nor sleep (plain reads, through `run`, still go
alone). Checkpoints (copying the log back into the file, with an fsync) run in a thread,
never inside a decision. A process that dies inside a transaction leaves nothing held: the
operating system drops its file locks, and its unfinished write is rolled back from the log.

Writes of one loop gather even when the file is free: a commit costs tens of microseconds
(a few system calls), more than a decision's own statements, and concurrent requests often
reach their decisions in the same loop iteration (50 started by one `gather` all do). The
first task to write in an iteration writes at once, as above, and is remembered until the
loop's next iteration (`_Handle.alone`: one `call_soon`). Another task writing in that
iteration queues instead, and the loop itself serves the line in its next iteration
(`Turns.wait(serve=True)`): the writes queued by then, in arrival order, in one transaction
with a savepoint each, as a first in line does, `MAX_BATCH` per iteration. A task writing
again with nobody in line (two throttles on one route) still writes at once, and a lone
request never waits. When the loop finds the file busy, the line goes on as above: its
first task asks again, and no one overtakes it.

An atomic step (`write_atomic`, `now_atomic`: one statement, or several made all or
nothing by `atomically`) runs alone outside a transaction, since a statement commits by
itself, and in a batch without a savepoint.

A file deleted or replaced while in use (a deploy script, a restored backup) would split the
workers: those that had it open would go on counting in the old file, which nobody else
sees, and those started after in the new one. So every `CHECK_EVERY` seconds a timer of
each loop compares the file the path names with the one its connection has open (one
`os.stat`, nothing on the decision path); when they differ, or the path names nothing, the
connection is closed, and the next step opens the path again, creating the file and its
tables if they are missing.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import sqlite3
import weakref
from typing import Any, Callable, TypeVar

from traffik.backends.sqlite._checkpoints import Checkpoints
from traffik.backends.sqlite._errors import is_busy, locked, translate
from traffik.backends.sqlite._path import MEMORY
from traffik.backends.sqlite._turns import BUSY, Outcome, Turns
from traffik.exceptions import BackendConnectionError, BackendError

__all__ = ["CHECK_EVERY", "Database"]

T = TypeVar("T")

CHECK_EVERY = 1.0
"""Seconds between two checks that the path still names the file a loop's connection has
open (see the module)."""

logger = logging.getLogger("traffik.backends.sqlite")

_memories = itertools.count()


class _Process:
    """This process's id, kept current by a fork hook: a decision reads it with no system
    call (`os.getpid()` is one, each time)."""

    pid = os.getpid()


def _forked() -> None:
    _Process.pid = os.getpid()


if hasattr(os, "register_at_fork"):  # (no fork, no hook, where it is missing: Windows)
    os.register_at_fork(after_in_child=_forked)

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

    def __init__(
        self, path: str, timeout: float, cursor: type[sqlite3.Cursor] = sqlite3.Cursor
    ) -> None:
        self.path = path
        self.timeout = timeout
        self.cursor_type = cursor
        self.memory = path == MEMORY
        self._pid = _Process.pid
        self._memory_name = f"traffik-{self._pid}-{next(_memories)}"
        self._by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Handle]
        self._by_loop = weakref.WeakKeyDictionary()
        self._last: tuple[Any, _Handle | None] = (None, None)
        self._anchored = False
        self._closers: list[weakref.finalize[Any, Any]] = []
        self._checkpoints = None if self.memory else Checkpoints(path)
        self._closed = False
        """Set by `close()` until `prepare()`: no connection opens meanwhile (a task that
        was waiting for the file when the backend closed fails instead of opening one)."""
        self._create: Callable[[sqlite3.Cursor, str], None] | None = None
        """What `prepare` ran, run again on each connection opened after it (the file may
        be new: see the module)."""

    def _handle(self) -> _Handle:
        """The running loop's connection in this process (its cursor and its line of
        waiting tasks), opened on first use; one cursor serves every statement."""
        loop = asyncio.get_running_loop()
        if _Process.pid != self._pid:
            self._forget_parent()
        last_loop, handle = self._last
        if last_loop is loop and handle is not None:
            return handle
        handle = self._by_loop.get(loop)
        if handle is None:
            self._drop_dead_loops()
            handle = self._by_loop[loop] = _Handle(loop)
        self._last = (loop, handle)
        return handle

    def _drop_dead_loops(self) -> None:
        """Close the connections of loops that are closed (a loop per request or per
        `asyncio.run`): done when a new loop comes, so none waits for the garbage collector."""
        for loop, handle in list(self._by_loop.items()):
            if loop.is_closed():
                handle.unwatch()
                _drop(handle)
                del self._by_loop[loop]

    def _connect(self, handle: _Handle) -> sqlite3.Cursor:
        """Open the handle's connection (inside `_attempt`, which handles its errors); after
        `prepare`, with the tables created if missing, and watched (see the module)."""
        if self._closed:
            raise BackendConnectionError(
                f"SQLite file {self.path!r}: the backend was closed; call "
                "`await backend.initialize()` (or enter `async with backend:`) to use it again"
            )
        if self.memory and not self._anchored:
            self._open(self)  # keeps the shared in-memory database alive until close()
            self._anchored = True
        conn = self._open(handle.loop())
        try:
            cursor = conn.cursor(self.cursor_type)
            if self._create is not None:
                if not self.memory:
                    _use_wal(cursor, self.path)
                self.transaction(cursor, self._create, self.path)
        except BaseException:
            conn.close()
            raise
        handle.cursor = cursor
        if not self.memory:
            handle.watch(self, _identity(self.path))
        return cursor

    def reopen_if_moved(self, handle: _Handle, identity: tuple[int, int] | None) -> bool:
        """Close `handle`'s connection when the path no longer names the file it has open
        (`identity`, see the module), so that the next step opens the path again; whether
        it did."""
        if _identity(self.path) == identity or handle.cursor is None:
            return False
        logger.warning(
            "SQLite file %r was deleted or replaced while in use: opening the path again "
            "(counts kept in the old file are lost)",
            self.path,
        )
        _drop(handle)
        return True

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
            if not self.memory:
                conn.execute("PRAGMA wal_autocheckpoint = 0")  # `Checkpoints` does it
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
        self._pid = _Process.pid
        if self._checkpoints is not None:
            self._checkpoints.forked()

    def _reset(self) -> None:
        for handle in self._by_loop.values():
            handle.unwatch()
        self._by_loop = weakref.WeakKeyDictionary()
        self._last, self._anchored, self._closers = (None, None), False, []

    def close(self) -> None:
        """Close this process's connections (the data in a file stays)."""
        if _Process.pid != self._pid:
            self._forget_parent()
        self._closed = True
        closers = self._closers
        for handle in self._by_loop.values():
            handle.cursor = None  # (its tasks still waiting for the file: see `_connect`)
        self._reset()
        for closer in closers:
            closer()

    async def run(self, doing: str, step: Callable[..., T], *args: Any) -> T:
        """`step(cursor, *args)`, run again while the file is busy (in turn with this
        loop's other waiting tasks), for at most `timeout`; always alone (see `write`)."""
        handle = self._handle()
        tried = False
        if not handle.turns:
            result = self._attempt(handle, doing, step, args)
            if result is not BUSY:
                return result  # type: ignore[return-value]
            tried = True
        return await handle.turns.wait(
            lambda: self._attempt(handle, doing, step, args),
            self.deadline(),
            lambda: locked(self.path, self.timeout, doing),
            tried,
        )

    def deadline(self) -> float:
        """When a task that asks for the file now must give up: `timeout` from now, on the
        running loop's clock."""
        return asyncio.get_running_loop().time() + self.timeout

    def now_atomic(self, doing: str, step: Callable[..., T], *args: Any) -> T | object:
        """An atomic step (see `write_atomic`), `step(cursor, *args)`, run at once as it is,
        outside a transaction, with no coroutine: `BUSY` when the file is busy, this loop's
        tasks already wait for it, or another task wrote in this loop iteration (the caller
        then goes through `write_atomic`, which waits its turn, or gathers with it). The
        throttle's hot path: `_handle`'s lookup, `_attempt` and `_committed` are inlined."""
        loop = asyncio.get_running_loop()
        last_loop, handle = self._last
        if last_loop is not loop or _Process.pid != self._pid or handle is None:
            handle = self._handle()
        if handle.turns._line or not handle.alone():  # (`Turns.__bool__`, without the call)
            return BUSY
        try:
            result = step(handle.cursor or self._connect(handle), *args)
        except sqlite3.Error as exc:
            if is_busy(exc):
                return BUSY
            raise translate(exc, self.path, doing) from exc
        if self._checkpoints is not None:
            self._checkpoints.committed()
        return result

    def _attempt(
        self, handle: _Handle, doing: str, step: Callable[..., T], args: tuple[Any, ...]
    ) -> T | object:
        """`step(cursor, *args)`, or `BUSY` when another connection holds the lock."""
        try:
            return step(handle.cursor or self._connect(handle), *args)
        except sqlite3.Error as exc:
            if is_busy(exc):
                return BUSY
            raise translate(exc, self.path, doing) from exc

    async def write(
        self, doing: str, step: Callable[..., T], *args: Any, deadline: float | None = None
    ) -> T:
        """`step(cursor, *args)` inside one `BEGIN IMMEDIATE` transaction (see `run`), given
        up at `deadline` (the loop's time; None: `timeout` from now) if the file stays busy
        (for work asked for earlier, such as the hits a round of `Lanes` decides). While
        the file is busy, the task waits in line; the first in line may run this step in
        its own transaction (`_batch`) and hand over its result. So does the loop, in its
        next iteration, when another task wrote in this one (see the module). A task
        cancelled while waiting never has its step run; one cancelled after it ran (the
        request was decided and charged, as if it completed just before) drops the result."""
        return await self._write(doing, step, args, False, deadline)

    async def write_atomic(self, doing: str, step: Callable[..., T], *args: Any) -> T:
        """`write` for a step that is all or nothing by itself: one statement (SQLite
        makes each atomic, and undoes a failing one alone inside a transaction), or several
        inside `atomically`. Alone it runs outside a transaction; in a batch, without a
        savepoint of its own (the statement is one)."""
        return await self._write(doing, step, args, True, None)

    async def _write(
        self,
        doing: str,
        step: Callable[..., T],
        args: tuple[Any, ...],
        atomic: bool,
        deadline: float | None,
    ) -> T:
        handle = self._handle()
        run = self._committed if atomic else self.transaction
        tried = gather = False
        if not handle.turns:
            if handle.alone():
                result = self._attempt(handle, doing, run, (step, *args))
                if result is not BUSY:
                    return result  # type: ignore[return-value]
                tried = True
            else:  # another task wrote in this loop iteration: gather with the next ones
                gather = True
        return await handle.turns.wait(
            lambda: self._attempt(handle, doing, run, (step, *args)),
            self.deadline() if deadline is None else deadline,
            lambda: locked(self.path, self.timeout, doing),
            tried,
            (doing, step, args, atomic),
            lambda works: self._batch(handle, works),
            gather,
        )

    def _batch(
        self,
        handle: _Handle,
        works: list[tuple[str, Callable[..., Any], tuple[Any, ...], bool]],
    ) -> list[Outcome] | object:
        """Each `(doing, step, args, atomic)` of `works` in one `BEGIN IMMEDIATE`
        transaction, in order, each in a savepoint unless `atomic` (see `write_atomic`): the
        outcome of each (its error, translated as `_attempt` does, or its result), or `BUSY`
        when another connection holds the lock (nothing ran). A failing step is undone
        alone; a busy one, or a failing `COMMIT`, undoes them all (every step then gets the
        error)."""
        try:
            cursor = handle.cursor or self._connect(handle)
            cursor.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            if is_busy(exc):
                return BUSY
            raise translate(exc, self.path, works[0][0]) from exc
        outcomes: list[Outcome] = []
        try:
            for doing, step, args, atomic in works:
                if not atomic:
                    cursor.execute("SAVEPOINT step")
                try:
                    result = step(cursor, *args)
                except Exception as exc:
                    if not cursor.connection.in_transaction:
                        raise  # it took the whole transaction with it
                    if isinstance(exc, sqlite3.Error) and is_busy(exc):
                        raise
                    if not atomic:  # (an atomic step is undone already)
                        cursor.execute("ROLLBACK TO step")
                        cursor.execute("RELEASE step")
                    outcomes.append((self._error(exc, doing), None))
                    continue
                if not atomic:
                    cursor.execute("RELEASE step")
                outcomes.append((None, result))
            cursor.execute("COMMIT")
        except BaseException as exc:
            if cursor.connection.in_transaction:
                cursor.execute("ROLLBACK")
            if not isinstance(exc, sqlite3.Error):
                raise
            if is_busy(exc):
                return BUSY
            return [(self._error(exc, work[0]), None) for work in works]
        if self._checkpoints is not None:
            self._checkpoints.committed()
        return outcomes

    def _error(self, exc: Exception, doing: str) -> BaseException:
        """`exc` as its task gets it: a SQLite error translated as `_attempt` does."""
        if not isinstance(exc, sqlite3.Error):
            return exc
        error = translate(exc, self.path, doing)
        error.__cause__ = exc
        return error

    def atomically(self, cursor: sqlite3.Cursor, step: Callable[..., T], *args: Any) -> T:
        """`step(cursor, *args)` all or nothing: in a savepoint inside a transaction (a
        batch), else in a `transaction` of its own."""
        if not cursor.connection.in_transaction:
            return self.transaction(cursor, step, *args)
        cursor.execute("SAVEPOINT atomically")
        try:
            result = step(cursor, *args)
        except BaseException:
            if cursor.connection.in_transaction:
                cursor.execute("ROLLBACK TO atomically")
                cursor.execute("RELEASE atomically")
            raise
        cursor.execute("RELEASE atomically")
        return result

    def _committed(self, cursor: sqlite3.Cursor, step: Callable[..., T], *args: Any) -> T:
        """An atomic step run alone: it committed (a checkpoint may be due)."""
        result = step(cursor, *args)
        if self._checkpoints is not None:
            self._checkpoints.committed()
        return result

    def transaction(self, cursor: sqlite3.Cursor, step: Callable[..., T], *args: Any) -> T:
        """`BEGIN IMMEDIATE`, the step, `COMMIT`; rolled back if anything fails."""
        cursor.execute("BEGIN IMMEDIATE")
        try:
            result = step(cursor, *args)
            cursor.execute("COMMIT")
        except BaseException:
            if cursor.connection.in_transaction:
                cursor.execute("ROLLBACK")
            raise
        if self._checkpoints is not None:
            self._checkpoints.committed()
        return result

    async def prepare(self, create: Callable[[sqlite3.Cursor, str], None]) -> None:
        """Write-ahead logging (for a file), then `create(cursor, path)` in a transaction:
        the tables, if missing."""
        self._closed = False
        if not self.memory:
            await self.run("switching it to write-ahead logging", _use_wal, self.path)
        await self.write("creating its tables", create, self.path)
        self._create = create


class _Handle:
    """One loop's connection: its cursor, the line of its tasks waiting for the file, and
    the task that wrote at once in this loop iteration (see `alone`)."""

    __slots__ = ("_forget", "_timer", "_writer", "cursor", "loop", "turns")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = weakref.ref(loop)  # not kept alive: the connection closes once it is gone
        self.cursor: sqlite3.Cursor | None = None
        self.turns = Turns()
        self._writer: object = _NOBODY
        self._forget = self._forgotten  # made once: the hot path schedules it
        self._timer: weakref.ref[asyncio.TimerHandle] | None = None

    def watch(self, db: Database, identity: tuple[int, int] | None) -> None:
        """Check every `CHECK_EVERY` seconds, on the loop, that `db`'s path still names
        the file of `identity` (`Database.reopen_if_moved`); the database is not kept
        alive by it, and a forked child never touches the parent's connection."""
        self.unwatch()
        database, pid = weakref.ref(db), _Process.pid

        def check() -> None:
            db = database()
            if db is None or _Process.pid != pid or db.reopen_if_moved(self, identity):
                self._timer = None
            else:
                self._schedule(check)

        self._schedule(check)

    def _schedule(self, check: Callable[[], None]) -> None:
        """`check` in `CHECK_EVERY` seconds, on the loop; its timer is held weakly, as the
        loop is (a timer refers to its loop: held strongly, the loop would never go)."""
        loop = self.loop()
        self._timer = None if loop is None else weakref.ref(loop.call_later(CHECK_EVERY, check))

    def unwatch(self) -> None:
        timer = None if self._timer is None else self._timer()
        if timer is not None:
            timer.cancel()
        self._timer = None

    def alone(self) -> bool:
        """Whether the current task may write at once: no other task wrote in this loop
        iteration (if one did, this one gathers with it, see the module). The first task
        to write in an iteration is remembered until the loop's next iteration."""
        loop = self.loop()
        task = asyncio.current_task(loop)
        writer = self._writer
        if writer is task:
            return True
        if writer is _NOBODY and loop is not None:
            self._writer = task
            loop.call_soon(self._forget)
            return True
        return False

    def _forgotten(self) -> None:
        self._writer = _NOBODY


_NOBODY = object()
"""No task wrote at once in this loop iteration."""


def _drop(handle: _Handle) -> None:
    """Close `handle`'s connection: the next step opens the file again."""
    if handle.cursor is not None:
        conn = handle.cursor.connection
        handle.cursor = None
        conn.close()


def _identity(path: str) -> tuple[int, int] | None:
    """The file `path` names (its device and inode), or None when it names none."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


def _use_wal(cursor: sqlite3.Cursor, path: str) -> None:
    """Switch the file to write-ahead logging (kept in the file), or say why it cannot be."""
    mode = cursor.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise BackendError(
            f"SQLite file {path!r} cannot use write-ahead logging (journal_mode is {mode!r}): "
            "put it on a local filesystem (not NFS or SMB) that supports shared memory"
        )
