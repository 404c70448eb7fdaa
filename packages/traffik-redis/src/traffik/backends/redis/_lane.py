"""`Lane`: one pooled connection kept aside for the backend's scripts, sent on without the client.

`client.evalsha(...)` walks redis-py's whole client path for each decision: the pool's lock
and checks, the retry wrapper, the response callbacks, and (redis-py 8) the observability
records, about 20 µs of the process's CPU per call over what the connection itself does. A
lane takes one connection from the pool once and sends each `EVALSHA` on it directly:
`send_packed_command` then `read_response`, redis-py's own connection calls, so reconnects,
health checks and errors stay redis-py's. The connection's retry policy runs as the client
would run it (one immediate retry on a broken connection, for the clients the backend builds).

The command and its reply are bounded together by one `asyncio.timeout` of the connection's
`socket_timeout` (Python 3.11 and later), where redis-py would bound the write with
`asyncio.wait_for`, a task of its own per command (about 10 µs), and the read with a timer:
the connection's own `socket_timeout` is set aside for it, and put back while it connects
(the handshake's replies stay bounded). A timeout cancels the exchange, and redis-py drops
the connection then as it does on its own timeouts. Earlier Pythons keep the socket timeouts.

Only one operation uses the lane at a time; an `EVALSHA` that comes while it is in use
takes the client's path, as before. The connection is never given back: the backend's
`Gate` admits one operation fewer than the pool holds, so the pool never runs out because
of it. A lane is made only for single-node clients the backend built itself
(`needs_deadline` is False for them), with a pool of two or more and not asked for a single
connection: a user's client keeps every one of its own settings.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Sequence
from typing import Any, Optional

__all__ = ["Lane"]

_TIMEOUT = getattr(asyncio, "timeout", None)
"""`asyncio.timeout` (Python 3.11 and later), else None: the socket timeouts bound the exchange."""


class Lane:
    """The connection one event loop's scripts are sent on while no other uses it."""

    __slots__ = ("_connection", "_pool", "_take", "_timeout")

    def __init__(self, pool: Any) -> None:
        self._pool = pool
        self._connection: Optional[Any] = None
        self._timeout: Optional[float] = None
        # redis-py 5.0 to 5.2 want a command name here; later versions warn when given one.
        named = inspect.signature(pool.get_connection).parameters.get("command_name")
        self._take: tuple[str, ...] = (
            ("EVALSHA",) if named is not None and named.default is named.empty else ()
        )

    async def _taken(self, pool: Any) -> Any:
        """The pool's connection for the lane, its socket timeout set aside when one timer
        bounds each exchange instead."""
        connection = await pool.get_connection(*self._take)
        if _TIMEOUT is not None and connection.socket_timeout:
            self._timeout, connection.socket_timeout = connection.socket_timeout, None
        return connection

    async def evalsha(self, client: Any, sha: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """`client.evalsha(sha, len(keys), *keys, *args)`, on the lane's connection when it is
        free (taken from the pool on first use)."""
        connection = self._connection
        if connection is None:
            if self._pool is None:  # in use by an operation in flight: the client's path
                return await client.evalsha(sha, len(keys), *keys, *args)
            pool, self._pool = self._pool, None
            try:
                connection = await self._taken(pool)
            except BaseException:
                self._pool = pool  # (the next operation tries again)
                raise
        self._connection = None
        try:
            command = connection.pack_command("EVALSHA", sha, len(keys), *keys, *args)
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
            self._connection = connection
