"""`Lane`: pooled connections kept aside for the backend's scripts, sent on without the client.

`client.evalsha(...)` walks redis-py's whole client path for each decision: the pool's lock
and checks, the retry wrapper, the response callbacks, and (redis-py 8) the observability
records, about 20 µs of the process's CPU per call over what the connection itself does. A
lane takes connections from the pool as decisions need them, keeps them, and sends each
`EVALSHA` on a free one directly: `send_packed_command` then `read_response`, redis-py's own
connection calls, so reconnects, health checks and errors stay redis-py's. The connection's
retry policy runs as the client would run it (one immediate retry on a broken connection,
for the clients the backend builds).

The command and its reply are bounded together by one `asyncio.timeout` of the connection's
`socket_timeout` (Python 3.11 and later), where redis-py would bound the write with
`asyncio.wait_for`, a task of its own per command (about 10 µs), and the read with a timer:
the connection's own `socket_timeout` is set aside for it, and put back while it connects
(the handshake's replies stay bounded). A timeout cancels the exchange, and redis-py drops
the connection then as it does on its own timeouts. Earlier Pythons keep the socket timeouts.

Each connection serves one decision at a time. A lane keeps at most `capacity` of them (half
the pool, at most `MAX_CAPACITY`); an `EVALSHA` that finds them all in use takes the
client's path, as before. They are never given back: the backend's `Gate` admits `capacity`
operations fewer than the pool holds, so the pool never runs out because of them. A lane is
made only for single-node clients the backend built itself (`needs_deadline` is False for
them), with a pool of two or more and not asked for a single connection: a user's client
keeps every one of its own settings.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Sequence
from typing import Any, Optional

__all__ = ["MAX_CAPACITY", "Lane", "capacity"]

MAX_CAPACITY = 64
"""The most connections a lane keeps (an unbounded pool's lane, say)."""

_TIMEOUT = getattr(asyncio, "timeout", None)
"""`asyncio.timeout` (Python 3.11 and later), else None: the socket timeouts bound the exchange."""


_HEADS: dict[tuple[str, int, int], bytes] = {}
"""The start of an `EVALSHA` command in the wire format, per (sha, keys, arguments)."""


def _packed(connection: Any, sha: str, keys: Sequence[Any], args: Sequence[Any]) -> Any:
    """`connection.pack_command("EVALSHA", sha, len(keys), *keys, *args)`, the same bytes,
    written here for the keys and arguments the backend sends (`str`, encoded as the
    connection encodes them, and `bytes`): redis-py's packer checks and converts each item
    for any type, about 2.5 µs a decision. Anything else is redis-py's to pack."""
    encoder = connection.encoder
    encoding, errors = encoder.encoding, encoder.encoding_errors
    parts = [b""]
    for item in (*keys, *args):
        kind = item.__class__
        if kind is str:
            item = item.encode(encoding, errors)
        elif kind is not bytes:
            return connection.pack_command("EVALSHA", sha, len(keys), *keys, *args)
        parts.append(b"$%d\r\n%b\r\n" % (len(item), item))
    shape = (sha, len(keys), len(args))
    head = _HEADS.get(shape)
    if head is None:
        if len(_HEADS) >= 256:  # (a backend has a few dozen programs)
            _HEADS.clear()
        count = b"%d" % len(keys)
        head = _HEADS[shape] = b"*%d\r\n$7\r\nEVALSHA\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n" % (
            3 + len(keys) + len(args),
            len(sha),
            sha.encode(),
            len(count),
            count,
        )
    parts[0] = head
    return b"".join(parts)


def capacity(pool_size: int) -> int:
    """How many connections the lane of a pool of `pool_size` keeps (0: no lane)."""
    return min(pool_size // 2, MAX_CAPACITY)


class Lane:
    """The connections one event loop's scripts are sent on, each by one at a time."""

    __slots__ = ("_free", "_kept", "_pool", "_take", "_timeout", "capacity")

    def __init__(self, pool: Any, capacity: int) -> None:
        self._pool = pool
        self.capacity = capacity
        self._free: list[Any] = []
        """Kept connections no decision is using."""
        self._kept = 0
        """Connections taken from the pool (a connection being taken counts)."""
        self._timeout: Optional[float] = None
        # redis-py 5.0 to 5.2 want a command name here; later versions warn when given one.
        named = inspect.signature(pool.get_connection).parameters.get("command_name")
        self._take: tuple[str, ...] = (
            ("EVALSHA",) if named is not None and named.default is named.empty else ()
        )

    async def _taken(self) -> Any:
        """A new connection from the pool for the lane, its socket timeout set aside when one
        timer bounds each exchange instead."""
        self._kept += 1
        try:
            connection = await self._pool.get_connection(*self._take)
        except BaseException:
            self._kept -= 1  # (the next operation tries again)
            raise
        if _TIMEOUT is not None and connection.socket_timeout:
            self._timeout, connection.socket_timeout = connection.socket_timeout, None
        return connection

    async def evalsha(self, client: Any, sha: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """`client.evalsha(sha, len(keys), *keys, *args)`, on a free connection of the lane
        (a new one from the pool while it keeps fewer than `capacity`)."""
        free = self._free
        if free:
            connection = free.pop()
        elif self._kept < self.capacity:
            connection = await self._taken()
        else:  # every kept connection is in use: the client's path
            return await client.evalsha(sha, len(keys), *keys, *args)
        try:
            command = _packed(connection, sha, keys, args)
            timeout = self._timeout

            async def exchange() -> Any:
                if timeout is None:  # (the socket timeouts bound each step)
                    await connection.send_packed_command(command)
                    return await connection.read_response()
                if not connection.is_connected:  # (bounded by the socket timeouts)
                    connection.socket_timeout = timeout
                    try:
                        await connection.connect()
                    finally:
                        connection.socket_timeout = None
                async with _TIMEOUT(timeout):  # type: ignore[misc]
                    await connection.send_packed_command(command)
                    return await connection.read_response()

            return await connection.retry.call_with_retry(
                exchange, lambda error: connection.disconnect()
            )
        finally:
            # Whatever happened, the connection is clean: redis-py disconnects it on any
            # error or cancellation mid-exchange, and it connects again on its next use.
            free.append(connection)
