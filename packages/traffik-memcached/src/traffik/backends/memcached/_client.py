"""One memcached node's client: aiomcache, made safe to time out and to outlive its server.

What differs from a plain `aiomcache.Client`:

- its own pool: up to `pool_size` connections opened on demand (aiomcache's never grows past
  its minimum), and a connection used by a command that failed, timed out or was cancelled
  is closed instead of going back to the pool (its reply may be half read, and the next
  command would read it);
- a server that closes the connection mid-reply raises `ConnectionResetError` (aiomcache
  would spin on the empty reads);
- opening a connection is bounded by `connect_timeout`.

Commands take the connection, so one caller can run a read and its compare-and-swap on the
same connection (`acquire`, commands, `release`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from typing import NamedTuple, Optional

import aiomcache
from aiomcache.exceptions import ClientException
from aiomcache.pool import Connection

__all__ = ["ConnectTimeout", "Flagged", "NodeClient", "NotNumeric", "ReplyError"]


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


def _healthy(conn: Connection) -> bool:
    return not (conn.reader.at_eof() or conn.reader.exception() or conn.writer.is_closing())


class _Pool:
    """Up to `size` connections to one server, opened on demand and reused while healthy."""

    def __init__(self, host: str, port: int, *, size: int, connect_timeout: float) -> None:
        self._host = host
        self._port = port
        self._connect_timeout = connect_timeout
        self._slots = asyncio.Semaphore(size)
        self._idle: list[Connection] = []
        self._in_use: set[Connection] = set()

    def must_connect(self) -> bool:
        """True when the next `acquire` opens a new connection rather than reusing or waiting."""
        return not self._idle and not self._slots.locked()

    async def acquire(self) -> Connection:
        await self._slots.acquire()
        try:
            conn = None
            while self._idle and conn is None:
                conn = self._idle.pop()
                if not _healthy(conn):
                    conn.writer.close()
                    conn = None
            if conn is None:
                conn = await self._open()
        except BaseException:
            self._slots.release()
            raise
        self._in_use.add(conn)
        return conn

    def release(self, conn: Connection, reusable: bool) -> None:
        self._in_use.discard(conn)
        if reusable and _healthy(conn):
            self._idle.append(conn)
        else:
            conn.writer.close()
        self._slots.release()

    async def _open(self) -> Connection:
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
        for conn in idle:
            conn.writer.close()
        for conn in idle:
            with contextlib.suppress(OSError):
                await conn.writer.wait_closed()

    def abandon(self) -> None:
        """Drop every connection without awaiting: for a pool whose event loop is closed."""
        connections = self._idle + list(self._in_use)
        self._idle, self._in_use = [], set()
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
    """The client of one node, with a pool of up to `pool_size` connections."""

    def __init__(self, host: str, port: int, *, pool_size: int, connect_timeout: float) -> None:
        super().__init__(
            host,
            port,
            pool_size=1,
            get_flag_handler=_read_flagged,
            set_flag_handler=_write_flagged,
        )
        self._connections = _Pool(host, port, size=pool_size, connect_timeout=connect_timeout)

    def must_connect(self) -> bool:
        return self._connections.must_connect()

    async def close(self) -> None:
        await self._connections.close()

    def abandon(self) -> None:
        self._connections.abandon()

    async def acquire(self) -> Connection:
        """A connection for a few commands; give it back with `release`."""
        return await self._connections.acquire()

    def release(self, conn: Connection, reusable: bool) -> None:
        """Return `conn`; one that may hold a half-read reply (`reusable=False`) is closed."""
        self._connections.release(conn, reusable)

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
        if reply.isdigit():
            return int(reply)
        if reply == b"NOT_FOUND":
            return None
        if reply.startswith(b"CLIENT_ERROR cannot increment or decrement non-numeric value"):
            raise NotNumeric(f"{verb.decode()} on a value that is not an unsigned number", key)
        raise ReplyError(f"{verb.decode()} failed", reply)

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
