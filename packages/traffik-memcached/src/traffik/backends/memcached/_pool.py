"""The connections to one memcached server: a pool that grows on demand, with a watchdog for timeouts.

- up to `size` connections, opened on demand (aiomcache's own pool never grows past its
  minimum); opening one is bounded by `connect_timeout`;
- a connection used by an operation that failed, timed out or was cancelled is closed
  instead of going back to the pool (its reply may be half read, and the next command would
  read it); `drop_idle()` closes the idle ones (the server closed one: likely all of them);
- an operation is bounded by `command_timeout` from when it has its connection, kept by a
  watchdog that ticks only while operations are pending (no timer per command);
- an operation waiting for a connection (every one busy) fails with the ones ahead when the
  server says nothing for `command_timeout` (`CommandTimeout`: it is silent), and otherwise
  waits while the server answers them, at most `connect_timeout + command_timeout`
  (`PoolTimeout`: the pool is too small for the load, which is no silence of the server).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import deque
from typing import Any, Optional

from aiomcache.pool import Connection

__all__ = ["TICKS", "CommandTimeout", "ConnectTimeout", "Pool", "PoolTimeout"]

TICKS = 4
"""The watchdog ticks `TICKS` times per `command_timeout`: an operation is stopped between
`command_timeout` and `command_timeout * (1 + 1 / TICKS)` after it started."""

_POLL = 0.001  # seconds between two looks at a closing pool
_SILENT = object()  # what a waiter receives when the server said nothing for too long
_EXPIRED = object()  # what a waiter receives when it waited as long as it may


class ConnectTimeout(ConnectionError):
    """The server did not accept a connection within `connect_timeout`."""


class CommandTimeout(ConnectionError):
    """The operation had no answer within `command_timeout` (set by the watchdog)."""


class PoolTimeout(Exception):
    """No connection came free within `connect_timeout + command_timeout`, every one busy
    with operations the server answered (set by the watchdog)."""


def _healthy(conn: Connection) -> bool:
    # A connection that failed or was closed has a closing transport (its reader's exception
    # is set only then); one the server closed has a reader at EOF.
    return not (conn.writer.transport.is_closing() or conn.reader.at_eof())


class Pool:
    """Up to `size` connections to one server, opened on demand and reused while healthy.

    Timeouts cost the hot path no timer: a watchdog ticks every `command_timeout / TICKS`
    seconds, and only while an operation is pending. An operation is stamped with the tick
    it got its connection on (`hold`); a tick finding a stamp `TICKS + 1` ticks old aborts
    that connection (the pending read then fails, and `give_back` reports it). One queued for
    a connection is stamped with the tick it began waiting on (`waiting[future]`); a tick
    finding that stamp and the last answer of the server (`_answered`) both `TICKS + 1`
    ticks old fails it as silent (`CommandTimeout`), and one finding the stamp
    `connect_timeout + command_timeout` old fails it as kept waiting (`PoolTimeout`).
    """

    def __init__(
        self, host: str, port: int, *, size: int, connect_timeout: float, command_timeout: float
    ) -> None:
        self._host = host
        self._port = port
        self._connect_timeout = connect_timeout
        self._size = size
        self._open = 0  # connections open or being opened
        self._idle: list[Connection] = []
        self._waiters: deque[asyncio.Future[Any]] = deque()
        self._period = command_timeout / TICKS
        self._patience = TICKS + 1 + math.ceil(connect_timeout / self._period)
        """Ticks a queued operation waits for a connection at most."""
        self._ticker: Optional[asyncio.TimerHandle] = None
        self.tick = 0
        self._answered = 0
        """The tick on which an operation last ended with the server's answer."""
        self._busy: dict[Connection, int] = {}
        self._expired: set[Connection] = set()
        self._waiting: dict[asyncio.Future[Any], int] = {}

    def take(self) -> Optional[Connection]:
        """An idle, healthy connection without waiting; None when there is none."""
        idle = self._idle
        while idle:
            conn = idle.pop()
            if _healthy(conn):
                return conn
            conn.writer.close()
            self._open -= 1
        return None

    def hold(self, conn: Connection, stamp: int) -> None:
        """Register `conn` as running an operation that started on tick `stamp`."""
        self._busy[conn] = stamp
        if self._ticker is None:
            self._watch()

    async def acquire(self) -> Connection:
        """A connection, held from now on (see `hold`): an idle one, a new one (opening it
        takes at most `connect_timeout`), or the next one released, waited for at most
        `connect_timeout + command_timeout`, or `command_timeout` while the server answers
        nothing (then `PoolTimeout` or `CommandTimeout`)."""
        since = self.tick
        while True:
            conn = self.take()
            if conn is None and self._open < self._size:
                self._open += 1
                try:
                    conn = await self._connect()
                except BaseException:
                    self._open -= 1
                    if self._waiters:
                        self._wake(None)
                    raise
            if conn is None:
                conn = await self._wait(since)  # None: a connection closed, a slot is free
            if conn is not None:
                self.hold(conn, self.tick)
                return conn

    def give_back(self, conn: Connection, reusable: bool) -> bool:
        """End the operation on `conn` and return it (closed unless `reusable`); True when the
        watchdog stopped it first (it timed out)."""
        self._busy.pop(conn, None)
        expired = False
        if self._expired:
            expired = conn in self._expired
            self._expired.discard(conn)
        if reusable and not expired:
            self._answered = self.tick
        self._release(conn, reusable and not expired)
        return expired

    async def _wait(self, since: int) -> Optional[Connection]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        self._waiting[future] = since
        self._watch()
        try:
            handed = await future
        except asyncio.CancelledError:
            self._waiting.pop(future, None)
            if future.done() and not future.cancelled():
                handed = future.result()  # handed over, then cancelled before it resumed
                if handed is None:
                    self._wake(None)
                elif handed is not _EXPIRED and handed is not _SILENT:
                    self._release(handed, True)
            raise
        self._waiting.pop(future, None)
        if handed is _SILENT:
            raise CommandTimeout("the server answered nothing within command_timeout")
        if handed is _EXPIRED:
            raise PoolTimeout("no connection came free within connect_timeout + command_timeout")
        return handed

    def _wake(self, conn: Optional[Connection]) -> bool:
        """Hand `conn` (None: a free slot) to the first live waiter; False when none waits."""
        waiters = self._waiters
        while waiters:
            future = waiters.popleft()
            if not future.done():
                future.set_result(conn)
                return True
        return False

    def _release(self, conn: Connection, reusable: bool) -> None:
        """Return `conn`: to a waiter or the idle list, or closed when not `reusable`.

        An idle connection is checked when taken; one handed to a waiter is checked here.
        """
        if reusable:
            if not self._waiters:
                self._idle.append(conn)
                return
            if _healthy(conn):
                if not self._wake(conn):
                    self._idle.append(conn)
                return
        conn.writer.close()
        self._open -= 1
        if self._waiters:
            self._wake(None)

    def _watch(self) -> None:
        """Make sure the watchdog ticks (held or waiting operations pending)."""
        if self._ticker is None:
            self._ticker = asyncio.get_running_loop().call_later(self._period, self._on_tick)

    def _on_tick(self) -> None:
        self.tick += 1
        oldest = self.tick - TICKS - 1  # a stamp this old has run at least TICKS periods
        busy, waiting = self._busy, self._waiting
        for conn in [conn for conn, stamp in busy.items() if stamp <= oldest]:
            del busy[conn]
            self._expired.add(conn)
            conn.writer.transport.abort()  # the pending read fails now
        silent = self._answered <= oldest  # (the server answered nothing for TICKS periods)
        patient = self.tick - self._patience
        for future, since in list(waiting.items()):
            if silent and since <= oldest:
                outcome = _SILENT
            elif since <= patient:
                outcome = _EXPIRED
            else:
                continue
            del waiting[future]
            if not future.done():
                future.set_result(outcome)
        self._ticker = None
        if busy or waiting:
            self._watch()

    async def _connect(self) -> Connection:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self._host, self._port), self._connect_timeout
            )
        except asyncio.TimeoutError as exc:
            raise ConnectTimeout(
                f"no connection within connect_timeout={self._connect_timeout}s"
            ) from exc
        return Connection(reader, writer)

    def drop_idle(self) -> None:
        """Close every idle connection (the server closed one of them: likely all)."""
        idle, self._idle = self._idle, []
        self._open -= len(idle)
        for conn in idle:
            conn.writer.close()
            self._wake(None)  # a slot is free for a waiter, if any

    def busy(self) -> bool:
        """Whether an operation holds a connection, opens one or waits for one."""
        return self._open > len(self._idle) or any(not w.done() for w in self._waiters)

    async def close(self) -> None:
        """Close every connection, once the operations in flight are over: they end within
        their timeouts (the watchdog stops them), so the wait is bounded; whatever still
        runs then is aborted."""
        if self.busy():
            drain = self._connect_timeout + self._period * (TICKS + 2)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._drained(), drain)
            for conn in list(self._busy):
                conn.writer.transport.abort()  # its operation fails, and `give_back` closes it
        idle, self._idle = self._idle, []
        self._open -= len(idle)
        for conn in idle:
            conn.writer.close()
        for conn in idle:
            with contextlib.suppress(OSError):
                await conn.writer.wait_closed()

    async def _drained(self) -> None:
        while self.busy():  # (polled: the operations' own path pays nothing for it)
            await asyncio.sleep(_POLL)

    def abandon(self, running: bool = True) -> None:
        """Drop every connection without awaiting: in the pool's own event loop (`running`),
        or for a pool whose loop no longer runs (closed, or stopped for good: a loop a
        thread ran and left)."""
        connections = self._idle + list(self._busy)
        self._idle, self._busy, self._open = [], {}, 0
        self._ticker = None
        for conn in connections:
            transport = conn.writer.transport
            with contextlib.suppress(RuntimeError):  # (raised once it marked itself closing)
                transport.abort()
            if not running:
                # The loop will not run the rest of the closing, and asyncio offers no
                # public way to close the socket: close it as the transport would have
                # (otherwise it warns when collected).
                sock = getattr(transport, "_sock", None)
                if sock is not None:
                    sock.close()
                    transport._sock = None  # type: ignore[attr-defined]
