"""`Connections`: the connections of one SQLite file in this process: one per event loop, never across a fork.

A file deleted or replaced while in use (a deploy script, a restored backup) would split the
workers: those that had it open would go on counting in the old file, which nobody else
sees, and those started after in the new one. So every `CHECK_EVERY` seconds a timer of
each loop compares the file the path names with the one its connection has open (one
`os.stat`, nothing on the decision path); when they differ, or the path names nothing, the
connection is closed, and the next step opens the path again, creating the file and its
tables if they are missing.

A reader (`read_only`: `python -m traffik keys` and `inspect`) never creates the file, its
tables or the -wal and -shm files of a file it may not write, and never switches the journal
mode: see `reading_uri` and `traffik.backends.sqlite._schema.readable`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import sqlite3
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from traffik.backends.sqlite._checkpoints import Checkpoints
from traffik.backends.sqlite._handle import Handle, drop
from traffik.backends.sqlite._path import MEMORY
from traffik.backends.sqlite._process import Process
from traffik.exceptions import BackendConnectionError, BackendError

__all__ = ["Connections", "reading_uri", "use_wal"]

T = TypeVar("T")

logger = logging.getLogger("traffik.backends.sqlite")

_memories = itertools.count()

_INHERITED: list[Callable[[], None]] = []
"""The `close` of each connection a parent process opened before a fork: in the child it is
never called (SQLite forbids using a connection across `fork`, closing included); keeping it
here keeps its connection from the garbage collector."""


class Connections:
    """The connections to the file at `path` (or to a private in-memory database for
    `:memory:`) of this process; `Database` runs its steps on them.

    Connections are opened lazily, one per event loop and process: a backend built at import
    time serves every loop, and a worker forked from a process that used it (gunicorn)
    opens its own instead of touching the parent's. A loop's connection closes with `close()`
    or once the loop is gone. A `:memory:` database is shared by the loops of this process
    and lives until `close()`.
    """

    def __init__(
        self,
        path: str,
        timeout: float,
        cursor: type[sqlite3.Cursor] = sqlite3.Cursor,
        read_only: bool = False,
    ) -> None:
        self.path = path
        self.timeout = timeout
        self.cursor_type = cursor
        self.read_only = read_only
        self.memory = path == MEMORY
        self._pid = Process.pid
        self._memory_name = f"traffik-{self._pid}-{next(_memories)}"
        self._by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Handle]
        self._by_loop = weakref.WeakKeyDictionary()
        self._last: tuple[Any, Handle | None] = (None, None)
        self._anchored = False
        self._closers: list[weakref.finalize[Any, Any]] = []
        self._checkpoints = None if self.memory else Checkpoints(path)
        self._closed = False
        """Set by `close()` until `prepare()`: no connection opens meanwhile (a task that
        was waiting for the file when the backend closed fails instead of opening one)."""
        self._create: Callable[[sqlite3.Cursor, str], None] | None = None
        """What `prepare` ran, run again on each connection opened after it (the file may
        be new: see the module); a reader's runs outside a transaction."""

    def _handle(self) -> Handle:
        """The running loop's connection in this process (its cursor and its line of
        waiting tasks), opened on first use; one cursor serves every statement."""
        loop = asyncio.get_running_loop()
        if Process.pid != self._pid:
            self._forget_parent()
        last_loop, handle = self._last
        if last_loop is loop and handle is not None:
            return handle
        handle = self._by_loop.get(loop)
        if handle is None:
            self._drop_dead_loops()
            handle = self._by_loop[loop] = Handle(loop)
        self._last = (loop, handle)
        return handle

    def _drop_dead_loops(self) -> None:
        """Close the connections of loops that are closed (a loop per request or per
        `asyncio.run`): done when a new loop comes, so none waits for the garbage collector."""
        # (`keyrefs` copies the keys at once, and `pop` takes each once: loops in other
        # threads may be dropping the same ones)
        closed = [
            loop for loop in map(_deref, self._by_loop.keyrefs()) if loop and loop.is_closed()
        ]
        for loop in closed:
            handle = self._by_loop.pop(loop, None)
            if handle is not None:
                handle.unwatch()
                drop(handle)

    def _connect(self, handle: Handle) -> sqlite3.Cursor:
        """Open the handle's connection (inside `_attempt`, which handles its errors); after
        `prepare`, with the tables created if missing (a reader's checked), and watched (see
        the module)."""
        if self._closed:
            raise BackendConnectionError(
                f"SQLite file {self.path!r}: the backend was closed; call "
                "`await backend.initialize()` (or enter `async with backend:`) to use it again"
            )
        if self.memory and not self._anchored:
            self._open(self)  # keeps the shared in-memory database alive until close()
            self._anchored = True
        handle.cursor = cursor = self._open(handle.loop()).cursor(self.cursor_type)
        try:
            if self._create is not None and self.read_only:
                self._create(cursor, self.path)
            elif self._create is not None:
                if not self.memory:
                    use_wal(cursor, self.path)
                self.transaction(cursor, self._create, self.path)
        except BaseException:
            drop(handle)
            raise
        if not self.memory:
            handle.watch(self, _identity(self.path))
        return cursor

    def reopen_if_moved(self, handle: Handle, identity: tuple[int, int] | None) -> bool:
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
        drop(handle)
        return True

    def _open(self, owner: Any) -> sqlite3.Connection:
        """A new connection, closed by `close()` or once `owner` is gone; its errors (a busy
        or corrupt file) reach `run`, which handles them."""
        target, uri = self.path, False
        if self.memory:
            target, uri = f"file:{self._memory_name}?mode=memory&cache=shared", True
        elif self.read_only:
            target, uri = reading_uri(target), True
        elif os.path.isfile(target) and not os.access(target, os.W_OK):
            # (in that order: a file another connection creates meanwhile is writable)
            # The error SQLite gives at the first write, before it opens the file to read
            # only: it would make the -wal and -shm files with the file's mode, read-only
            # too, and leave them, keeping the file read-only once it is writable again.
            raise sqlite3.OperationalError("attempt to write a readonly database")
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
        self._pid = Process.pid
        if self._checkpoints is not None:
            self._checkpoints.forked()

    def _reset(self) -> None:
        for handle in self._by_loop.values():
            handle.unwatch()
        self._by_loop = weakref.WeakKeyDictionary()
        self._last, self._anchored, self._closers = (None, None), False, []

    def close(self) -> None:
        """Close this process's connections (the data in a file stays)."""
        if Process.pid != self._pid:
            self._forget_parent()
        self._closed = True
        closers = self._closers
        for handle in self._by_loop.values():
            handle.cursor = None  # (its tasks still waiting for the file: see `_connect`)
        self._reset()
        for closer in closers:
            closer()

    if TYPE_CHECKING:

        def transaction(self, cursor: sqlite3.Cursor, step: Callable[..., T], *args: Any) -> T: ...


def _identity(path: str) -> tuple[int, int] | None:
    """The file `path` names (its device and inode), or None when it names none."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


def use_wal(cursor: sqlite3.Cursor, path: str) -> None:
    """Switch the file to write-ahead logging (kept in the file), or say why it cannot be."""
    mode = cursor.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise BackendError(
            f"SQLite file {path!r} cannot use write-ahead logging (journal_mode is {mode!r}): "
            "put it on a local filesystem (not NFS or SMB) that supports shared memory"
        )


def _deref(ref: weakref.ref[T]) -> T | None:
    return ref()


def reading_uri(path: str) -> str:
    """The URI a reader opens `path` by: never creating it, nor leaving files beside it.

    A file this process may write is opened as usual, so that SQLite deletes at close the
    -wal and -shm files it may have made (`readable` keeps it from writing anything else).
    One it may not write is opened read-only; and when no process has it open (there is no
    -wal file), as immutable, which reads it without them (an app opening it meanwhile
    writes to a -wal file, which the reader does not see): SQLite would otherwise make them
    with this process's owner and the file's mode, and leave them, so that the app could
    not write the file; in a directory this process may not write, it could not read it."""
    uri = Path(os.path.abspath(path)).as_uri()
    if os.access(path, os.W_OK):
        return f"{uri}?mode=rw"
    if os.path.exists(f"{path}-wal"):
        return f"{uri}?mode=ro"
    return f"{uri}?mode=ro&immutable=1"
