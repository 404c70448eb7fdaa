"""`Database`: the steps run on one SQLite file: in line behind a busy file for a bounded wait, gathered into shared transactions.

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
loop's next iteration (`Handle.alone`: one `call_soon`). Another task writing in that
iteration queues instead, and the loop itself serves the line in its next iteration
(`Turns.wait(serve=True)`): the writes queued by then, in arrival order, in one transaction
with a savepoint each, as a first in line does, `MAX_BATCH` per iteration. A task writing
again with nobody in line (two throttles on one route) still writes at once, and a lone
request never waits. When the loop finds the file busy, the line goes on as above: its
first task asks again, and no one overtakes it.

An atomic step (`write_atomic`, `now_atomic`: one statement, or several made all or
nothing by `atomically`) runs alone outside a transaction, since a statement commits by
itself, and in a batch without a savepoint.
"""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any, Callable, TypeVar

from traffik.backends.sqlite._connections import Connections, use_wal
from traffik.backends.sqlite._errors import is_busy, locked, translate
from traffik.backends.sqlite._handle import Handle, drop
from traffik.backends.sqlite._process import Process
from traffik.backends.sqlite._turns import BUSY, Outcome

__all__ = ["Database"]

T = TypeVar("T")


class Database(Connections):
    """Steps run on the file (see the module): reads (`run`), writes in a transaction
    (`write`), atomic steps (`write_atomic`, `now_atomic`), gathered in batches while the
    file is busy or tasks of one loop iteration write together."""

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
        if last_loop is not loop or Process.pid != self._pid or handle is None:
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
        self, handle: Handle, doing: str, step: Callable[..., T], args: tuple[Any, ...]
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
        handle: Handle,
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
        the tables, if missing; for a reader, `create` alone, outside a transaction (see
        `Connections`). When it fails, the connection it opened is closed: one that met
        -wal and -shm files this process may not write reads only, for as long as it is
        open, so the next attempt opens the file again (they may be writable by then)."""
        self._closed = False
        try:
            if self.read_only:
                await self.run("reading its tables", create, self.path)
            else:
                if not self.memory:
                    await self.run("switching it to write-ahead logging", use_wal, self.path)
                await self.write("creating its tables", create, self.path)
        except BaseException:
            drop(self._handle())
            raise
        self._create = create
