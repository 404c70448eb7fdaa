"""One memcached node's commands, run on a connection the caller holds (from `Pool`).

`NodeClient` is aiomcache's `FlagClient` for parsing retrievals and storage commands, with
its own `Pool` instead of aiomcache's; every one-line command goes through `line_on`, which
fails with `ConnectionResetError`/`IncompleteReadError` when the server closes the connection
mid-reply (aiomcache would spin on the empty reads). Holding the connection lets one caller
run a read and its compare-and-swap on it. It uses aiomcache internals (`_multi_get`,
`_storage_command`, `_execute_simple_command`), hence the pinned aiomcache range.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import NamedTuple, Optional

import aiomcache
from aiomcache.exceptions import ClientException
from aiomcache.pool import Connection

from traffik.backends.memcached._pool import Pool

__all__ = ["ConnectionLimit", "Flagged", "NodeClient", "NotNumeric", "ReplyError", "incr_reply"]

_AT_LIMIT = b"ERROR Too many open connections"
"""What memcached writes on a connection it accepted past its limit (`-c`), before closing it."""


class Flagged(NamedTuple):
    """A stored value together with its memcached flags (non-zero flags mark special values)."""

    value: bytes
    flags: int


class ReplyError(ClientException):
    """The server answered with a complete error line; the connection is still usable."""


class NotNumeric(ReplyError):
    """`incr`/`decr` on a value that is not an unsigned decimal number."""


class ConnectionLimit(ConnectionRefusedError):
    """Memcached refused a new connection: it holds as many as its `-c` allows."""

    def __init__(self) -> None:
        super().__init__(f"the server answered {_AT_LIMIT.decode()!r} and closed the connection")


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


class NodeClient(aiomcache.FlagClient[Flagged]):
    """The commands of one node, and its pool of up to `pool_size` connections (`pool`)."""

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
        self.pool = Pool(
            host,
            port,
            size=pool_size,
            connect_timeout=connect_timeout,
            command_timeout=command_timeout,
        )

    async def close(self) -> None:
        await self.pool.close()

    def abandon(self, running: bool = True) -> None:
        self.pool.abandon(running)

    # -- commands on a connection ---------------------------------------------------------

    async def line_on(self, conn: Connection, line: bytes) -> bytes:
        """Send `line` (a whole command) and return its one-line reply, without the CRLF.

        One write and one read: no `drain`, as a connection carries one command at a time,
        whose bytes the transport buffers until they are sent.
        """
        conn.writer.transport.write(line)
        reply = (await conn.reader.readuntil(b"\r\n"))[:-2]
        if reply == _AT_LIMIT:
            raise ConnectionLimit()
        return reply

    async def _execute_simple_command(self, conn: Connection, raw_command: bytes) -> bytes:
        # aiomcache's storage commands (`_storage_command`) send through this.
        return await self.line_on(conn, raw_command)

    async def _retrieve(
        self, conn: Connection, keys: Sequence[bytes], with_cas: bool
    ) -> tuple[dict[bytes, bytes | Flagged], Mapping[bytes, Optional[int]]]:
        try:
            if with_cas:
                return await self._multi_get(conn, *keys, with_cas=True)
            return await self._multi_get(conn, *keys, with_cas=False)
        except ClientException as exc:
            if _AT_LIMIT.decode() in str(exc):  # (aiomcache's message quotes the line)
                raise ConnectionLimit() from None
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
        reply = await self.line_on(conn, b"%s %s %d\r\n" % (verb, key, delta))
        return incr_reply(reply, key, verb)

    async def delete_on(self, conn: Connection, key: bytes) -> bool:
        reply = await self.line_on(conn, b"delete " + key + b"\r\n")
        if reply not in (b"DELETED", b"NOT_FOUND"):
            raise ReplyError("delete failed", reply)
        return reply == b"DELETED"

    async def touch_on(self, conn: Connection, key: bytes, exptime: int) -> bool:
        reply = await self.line_on(conn, b"touch %s %d\r\n" % (key, exptime))
        if reply not in (b"TOUCHED", b"NOT_FOUND"):
            raise ReplyError("touch failed", reply)
        return reply == b"TOUCHED"

    async def metadump_on(self, conn: Connection) -> list[bytes]:
        """Every key the server holds (`lru_crawler metadump all`), as stored (URL-encoded).
        The dump's lines end with a bare LF, and the whole with `END` and CRLF. Read line by
        line: a busy server's dump runs to megabytes, past what a stream reads in one chunk."""
        conn.writer.transport.write(b"lru_crawler metadump all\r\n")
        readline = conn.reader.readline
        line = await readline()
        if not line.startswith((b"key=", b"END\r\n")):
            raise ReplyError("lru_crawler metadump failed", line.rstrip())
        keys = []
        while line != b"END\r\n":
            if line.startswith(b"key="):
                keys.append(line[4:].split(b" ", 1)[0])
            elif not line:
                raise ReplyError("the connection closed in the middle of a metadump", line)
            line = await readline()
        return keys

    async def hello_on(self, conn: Connection) -> bytes:
        """The reply to `version`, whatever the server is: a line without its CRLF, or the
        bytes it sent before closing the connection (an HTTP server's page)."""
        conn.writer.transport.write(b"version\r\n")
        try:
            reply = (await conn.reader.readuntil(b"\r\n"))[:-2]
        except asyncio.IncompleteReadError as exc:
            if not exc.partial:
                raise
            return exc.partial
        if reply == _AT_LIMIT:
            raise ConnectionLimit()
        return reply

    async def version_on(self, conn: Connection) -> bytes:
        reply = await self.line_on(conn, b"version\r\n")
        if not reply.startswith(b"VERSION "):
            raise ReplyError("version failed", reply)
        return reply[8:]
