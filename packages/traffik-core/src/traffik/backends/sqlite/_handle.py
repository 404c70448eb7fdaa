"""`Handle`: one event loop's connection to the SQLite file, its line of waiting tasks, and the watch on its path."""

from __future__ import annotations

import asyncio
import sqlite3
import weakref
from typing import TYPE_CHECKING, Callable

from traffik.backends.sqlite._process import Process
from traffik.backends.sqlite._turns import Turns

if TYPE_CHECKING:
    from traffik.backends.sqlite._connections import Connections

__all__ = ["CHECK_EVERY", "Handle", "drop"]

CHECK_EVERY = 1.0
"""Seconds between two checks that the path still names the file a loop's connection has
open (see `traffik.backends.sqlite._connections`)."""


class Handle:
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

    def watch(self, db: Connections, identity: tuple[int, int] | None) -> None:
        """Check every `CHECK_EVERY` seconds, on the loop, that `db`'s path still names
        the file of `identity` (`Connections.reopen_if_moved`); the database is not kept
        alive by it, and a forked child never touches the parent's connection."""
        self.unwatch()
        database, pid = weakref.ref(db), Process.pid

        def check() -> None:
            db = database()
            if db is None or Process.pid != pid or db.reopen_if_moved(self, identity):
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


def drop(handle: Handle) -> None:
    """Close `handle`'s connection: the next step opens the file again. Its cursor first: a
    statement of it still open (kept by the traceback of an error) would keep SQLite's
    connection, and the files as it opened them, open until the error is gone."""
    cursor = handle.cursor
    if cursor is not None:
        handle.cursor = None
        cursor.close()
        cursor.connection.close()
