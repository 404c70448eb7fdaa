"""One memcached node's client: aiomcache, made safe to time out and to outlive its server.

What differs from a plain `aiomcache.Client`:

- its own pool: up to `pool_size` connections opened on demand (aiomcache's never grows past
  its minimum), and a connection used by a command that failed, timed out or was cancelled
  is closed instead of going back to the pool (its reply may be half read, and the next
  command would read it);
- a server that closes the connection mid-reply raises `ConnectionResetError` (aiomcache
  would spin on the empty reads);
- opening a connection is bounded by `connect_timeout`, and an operation by
  `command_timeout`, kept by a watchdog that ticks only while operations are pending (no
  timer per command: see `_Pool`).

Commands take the connection, so one caller can run a read and its compare-and-swap on the
same connection (`pool.take()` or `pool.acquire()`, commands, `pool.release()`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, Optional

import aiomcache
from aiomcache.exceptions import ClientException
from aiomcache.pool import Connection

__all__ = [
    "TICKS",
    "CommandTimeout",
    "ConnectTimeout",
    "Flagged",
    "NodeClient",
    "NotNumeric",
    "ReplyError",
    "incr_reply",
]


class Flagged(NamedTuple):
    """A stored value together with its memcached flags (non-zero flags mark special values)."""

    value: bytes
    flags: int


class ConnectTimeout(ConnectionError):
    """The server did not accept a connection within `connect_timeout`."""


class ReplyError(ClientException):
    """The server answered with a complete error line; the connection is still usable."""


class NotNumeric(ReplyError):
    """`incr`/`decr` on a value that is not an unsigned decimal number."""


async def _read_flagged(value: bytes, flags: int) -> Flagged:
    return Flagged(value, flags)


async def _write_flagged(value: Flagged) -> tuple[bytes, int]:
    return value.value, value.flags


def incr_reply(reply: bytes, key: bytes, verb: bytes = b"incr") -> Optional[int]:
    """The value an `incr`/`decr` answered, None for a missing key; `NotNumeric` for a key
    holding something else, `ReplyError` for any other answer."""
    if reply.isdigit():
        return int(reply)
    if reply == b"NOT_FOUND":
        return None
    if reply.startswith(b"CLIENT_ERROR cannot increment or decrement non-numeric value"):
        raise NotNumeric(f"{verb.decode()} on a value that is not an unsigned number", key)
    raise ReplyError(f"{verb.decode()} failed", reply)


def _healthy(conn: Connection) -> bool:
    # A connection that failed or was closed has a closing transport (its reader's exception
    # is set only then); one the server closed has a reader at EOF.
    return not (conn.writer.transport.is_closing() or conn.reader.at_eof())


TICKS = 4
"""The watchdog ticks `TICKS` times per `command_timeout`: an operation is stopped between
`command_timeout` and `command_timeout * (1 + 1 / TICKS)` after it started."""

_EXPIRED = object()  # what an expired waiter receives instead of a connection


class CommandTimeout(ConnectionError):
    """The operation had no answer within `command_timeout` (set by the watchdog)."""


class _Pool:
    """Up to `size` connections to one server, opened on demand and reused while healthy.

    Timeouts cost the hot path no timer: a watchdog ticks every `command_timeout / TICKS`
    seconds, and only while an operation is pending. An operation is stamped with the tick
    it started on (`busy[conn] = pool.tick`, or `waiting[future]` while it queues for a
    connection); a tick finding a stamp `TICKS + 1` ticks old aborts that connection (the
    pending read then fails, and the operation reports `CommandTimeout`) or fails the wait.
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
        self.ticker: Optional[asyncio.TimerHandle] = None
        self.tick = 0
        self.busy: dict[Connection, int] = {}
        self.expired: set[Connection] = set()
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

    async def acquire(self, stamp: int) -> Connection:
        """A connection, registered in `busy`: an idle one, a new one (opening it takes at
        most `connect_timeout`, and restarts the clock), or the next one released, waiting
        until the watchdog expires `stamp` at the latest."""
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
                stamp = self.tick
            if conn is None:
                conn = await self._wait(stamp)  # None: a connection closed, a slot is free
            if conn is not None:
                self.busy[conn] = stamp
                self.watch()
                return conn

    async def _wait(self, stamp: int) -> Optional[Connection]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        self._waiting[future] = stamp
        self.watch()
        try:
            handed = await future
        except asyncio.CancelledError:
            self._waiting.pop(future, None)
            if future.done() and not future.cancelled():
                handed = future.result()  # handed over, then cancelled before it resumed
                if handed is None:
                    self._wake(None)
                elif handed is not _EXPIRED:
                    self.release(handed, True)
            raise
        self._waiting.pop(future, None)
        if handed is _EXPIRED:
            raise CommandTimeout("no connection came free within command_timeout")
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

    def release(self, conn: Connection, reusable: bool) -> None:
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

    def watch(self) -> None:
        """Make sure the watchdog ticks (`busy` or waiting operations pending)."""
        if self.ticker is None:
            self.ticker = asyncio.get_running_loop().call_later(self._period, self._on_tick)

    def _on_tick(self) -> None:
        self.tick += 1
        oldest = self.tick - TICKS - 1  # a stamp this old has run at least TICKS periods
        busy, waiting = self.busy, self._waiting
        for conn in [conn for conn, stamp in busy.items() if stamp <= oldest]:
            del busy[conn]
            self.expired.add(conn)
            conn.writer.transport.abort()  # the pending read fails now
        for future in [future for future, stamp in waiting.items() if stamp <= oldest]:
            del waiting[future]
            if not future.done():
                future.set_result(_EXPIRED)
        self.ticker = None
        if busy or waiting:
            self.watch()

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

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        self._open -= len(idle)
        for conn in idle:
            conn.writer.close()
        for conn in idle:
            with contextlib.suppress(OSError):
                await conn.writer.wait_closed()

    def abandon(self) -> None:
        """Drop every connection without awaiting: for a pool whose event loop is closed."""
        connections = self._idle + list(self.busy)
        self._idle, self.busy, self._open = [], {}, 0
        self.ticker = None
        for conn in connections:
            transport = conn.writer.transport
            try:
                transport.abort()
            except RuntimeError:
                # Its loop is closed, so the transport cannot finish closing by itself:
                # close the socket as it would have (otherwise it warns when collected).
                sock = getattr(transport, "_sock", None)
                if sock is not None:
                    sock.close()
                    transport._sock = None  # type: ignore[attr-defined]


class NodeClient(aiomcache.FlagClient[Flagged]):
    """The client of one node, with a pool of up to `pool_size` connections (`pool`)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        pool_size: int,
        connect_timeout: float,
        command_timeout: float,
    ) -> None:
        super().__init__(
            host,
            port,
            pool_size=1,
            get_flag_handler=_read_flagged,
            set_flag_handler=_write_flagged,
        )
        self.pool = _Pool(
            host,
            port,
            size=pool_size,
            connect_timeout=connect_timeout,
            command_timeout=command_timeout,
        )

    async def close(self) -> None:
        await self.pool.close()

    def abandon(self) -> None:
        self.pool.abandon()

    async def _execute_simple_command(self, conn: Connection, raw_command: bytes) -> bytes:
        conn.writer.write(raw_command)
        await conn.writer.drain()
        line = await conn.reader.readline()
        if not line.endswith(b"\r\n"):
            raise ConnectionResetError("the server closed the connection before answering")
        return line[:-2]

    # -- commands on a connection ---------------------------------------------------------

    async def _retrieve(
        self, conn: Connection, keys: Sequence[bytes], with_cas: bool
    ) -> tuple[dict[bytes, bytes | Flagged], Mapping[bytes, Optional[int]]]:
        try:
            if with_cas:
                return await self._multi_get(conn, *keys, with_cas=True)
            return await self._multi_get(conn, *keys, with_cas=False)
        except ClientException:
            if conn.reader.at_eof():
                raise ConnectionResetError("the server closed the connection mid-reply") from None
            raise

    async def get_on(self, conn: Connection, key: bytes) -> bytes | Flagged | None:
        values, _ = await self._retrieve(conn, (key,), with_cas=False)
        return values.get(key)

    async def gets_on(
        self, conn: Connection, key: bytes
    ) -> tuple[bytes | Flagged | None, Optional[int]]:
        values, tokens = await self._retrieve(conn, (key,), with_cas=True)
        return values.get(key), tokens.get(key)

    async def get_many_on(
        self, conn: Connection, keys: Sequence[bytes]
    ) -> dict[bytes, bytes | Flagged]:
        values, _ = await self._retrieve(conn, list(dict.fromkeys(keys)), with_cas=False)
        return values

    async def store_on(
        self,
        conn: Connection,
        verb: bytes,
        key: bytes,
        value: bytes | Flagged,
        exptime: int,
        cas: Optional[int] = None,
    ) -> bool:
        """`set`, `add` or `cas` (with `cas=`); True when stored."""
        return await self._storage_command(conn, verb, key, value, exptime, cas)

    async def incr_on(
        self, conn: Connection, key: bytes, delta: int, verb: bytes = b"incr"
    ) -> Optional[int]:
        """The new value, or None when the key is missing; `NotNumeric` for other values."""
        self._validate_key(key)
        reply = await self._execute_simple_command(conn, b"%s %s %d\r\n" % (verb, key, delta))
        return incr_reply(reply, key, verb)

    async def delete_on(self, conn: Connection, key: bytes) -> bool:
        self._validate_key(key)
        reply = await self._execute_simple_command(conn, b"delete " + key + b"\r\n")
        if reply not in (b"DELETED", b"NOT_FOUND"):
            raise ReplyError("delete failed", reply)
        return reply == b"DELETED"

    async def touch_on(self, conn: Connection, key: bytes, exptime: int) -> bool:
        self._validate_key(key)
        reply = await self._execute_simple_command(conn, b"touch %s %d\r\n" % (key, exptime))
        if reply not in (b"TOUCHED", b"NOT_FOUND"):
            raise ReplyError("touch failed", reply)
        return reply == b"TOUCHED"

    async def version_on(self, conn: Connection) -> bytes:
        reply = await self._execute_simple_command(conn, b"version\r\n")
        if not reply.startswith(b"VERSION "):
            raise ReplyError("version failed", reply)
        return reply[8:]
