"""One memcached node: its client (rebuilt in each event loop), timeouts, errors and namespace generation."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Callable, Optional, TypeVar

from aiomcache.exceptions import ClientException
from aiomcache.pool import Connection

from traffik.backends.memcached._client import ConnectTimeout, Flagged, NodeClient, ReplyError
from traffik.backends.memcached._deadline import deadline
from traffik.backends.memcached._expiry import NEVER
from traffik.backends.memcached._servers import Server
from traffik.exceptions import BackendConnectionError, BackendError

__all__ = ["Node", "Operation"]

T = TypeVar("T")
Operation = Callable[[NodeClient, Connection], Awaitable[T]]
"""What runs on one connection of a node: one command, or a read and its compare-and-swap."""


def _new_generation() -> int:
    # Wall-clock milliseconds: a generation key lost to eviction or a restart comes back
    # newer than any generation handed out before, so cleared keys never reappear.
    return int(time.time() * 1000)


def _parse_generation(raw: bytes | Flagged) -> int:
    text = raw.value if isinstance(raw, Flagged) else raw
    try:
        return int(text)
    except ValueError:
        raise ReplyError("the namespace generation key holds a non-number", text) from None


class Node:
    """A memcached server as the backend uses it.

    Every operation runs on one pooled connection within `command_timeout` seconds (plus
    `connect_timeout` when a connection must be opened first); failures become
    `BackendConnectionError` (unreachable, timed out, connection lost) or `BackendError`
    (an unexpected reply), chained and naming the server.

    The namespace generation read from this node is cached for `generation_refresh`
    seconds: a `clear()` in another process is seen here within that time.
    """

    def __init__(
        self,
        server: Server,
        generation_key: bytes,
        *,
        pool_size: int,
        connect_timeout: float,
        command_timeout: float,
        generation_refresh: float,
    ) -> None:
        self.server = server
        self.name = str(server)
        self._generation_key = generation_key
        self._pool_size = pool_size
        self._connect_timeout = connect_timeout
        self._command_timeout = command_timeout
        self._generation_refresh = generation_refresh
        self._clients: dict[asyncio.AbstractEventLoop, NodeClient] = {}
        self._last: tuple[Optional[asyncio.AbstractEventLoop], Optional[NodeClient]] = (None, None)
        self.generation: Optional[int] = None
        self._generation_until = 0.0
        self._refresh_started: Optional[float] = None

    def __repr__(self) -> str:
        return f"Node({self.name})"

    def _client_here(self) -> NodeClient:
        """The client of the running loop: connections belong to the loop that opened them."""
        loop = asyncio.get_running_loop()
        last_loop, client = self._last
        if last_loop is loop and client is not None:
            return client
        client = self._clients.get(loop)
        if client is None:
            self._drop_closed_loops()
            client = self._clients[loop] = NodeClient(
                self.server.host,
                self.server.port,
                pool_size=self._pool_size,
                connect_timeout=self._connect_timeout,
            )
        self._last = (loop, client)
        return client

    def _drop_closed_loops(self) -> None:
        for loop in [loop for loop in self._clients if loop.is_closed()]:
            self._clients.pop(loop).abandon()

    async def close(self) -> None:
        """Close this loop's connections; those of closed loops are dropped, live loops close their own."""
        self._drop_closed_loops()
        here = asyncio.get_running_loop()
        clients, self._clients, self._last = self._clients, {}, (None, None)
        self.generation = None
        for loop, client in clients.items():
            if loop is not here:
                loop.call_soon_threadsafe(client.abandon)
        if here in clients:
            await clients[here].close()

    async def run(self, operation: Operation[T], what: str) -> T:
        client = self._client_here()
        timeout = self._command_timeout
        if client.must_connect():
            timeout += self._connect_timeout
        try:
            async with deadline(timeout):
                conn = await client.acquire()
                reusable = False
                try:
                    result = await operation(client, conn)
                    reusable = True
                    return result
                except ReplyError:
                    reusable = True
                    raise
                finally:
                    # A connection whose reply may be half read never serves another command.
                    client.release(conn, reusable)
        except ConnectTimeout as exc:
            raise BackendConnectionError(
                f"memcached {self.name}: could not connect within connect_timeout={self._connect_timeout}s "
                f"({what}); is the server up and reachable?"
            ) from exc
        except asyncio.TimeoutError as exc:
            raise BackendConnectionError(
                f"memcached {self.name}: no answer within {timeout:g}s ({what}); the server is down or "
                "overloaded, or command_timeout is too short"
            ) from exc
        except (OSError, EOFError) as exc:
            raise BackendConnectionError(
                f"memcached {self.name}: connection failed ({what}): {exc!r}; is memcached running there?"
            ) from exc
        except ClientException as exc:
            raise BackendError(f"memcached {self.name}: {what} failed: {exc}") from exc

    async def ping(self) -> bool:
        await self.run(lambda client, conn: client.version_on(conn), "version")
        return True

    # -- namespace generation -------------------------------------------------------------

    def remember_generation(self, generation: int) -> None:
        self.generation = generation
        self._generation_until = time.monotonic() + self._generation_refresh

    async def current_generation(self) -> int:
        """This node's namespace generation; read from the server at most every `generation_refresh` s."""
        generation, now = self.generation, time.monotonic()
        if generation is not None:
            if now < self._generation_until:
                return generation
            started = self._refresh_started
            if (
                started is not None
                and now - started < self._connect_timeout + self._command_timeout
            ):
                return generation  # another task is reading it right now
        self._refresh_started = now
        try:
            generation = await self.run(self._read_generation, "reading the namespace generation")
        finally:
            self._refresh_started = None
        self.remember_generation(generation)
        return generation

    async def _read_generation(self, client: NodeClient, conn: Connection) -> int:
        key = self._generation_key
        raw = await client.get_on(conn, key)
        if raw is not None:
            return _parse_generation(raw)
        generation = _new_generation()
        if await client.store_on(conn, b"add", key, b"%d" % generation, NEVER):
            return generation
        raw = await client.get_on(conn, key)
        if raw is None:
            raise ReplyError("the namespace generation key vanished while it was being created")
        return _parse_generation(raw)

    async def bump_generation(self) -> int:
        """Move this node's namespace to a fresh generation: its old keys are no longer reachable."""

        async def bump(client: NodeClient, conn: Connection) -> int:
            key = self._generation_key
            value = await client.incr_on(conn, key, 1)
            if value is not None:
                return value
            generation = _new_generation()
            if await client.store_on(conn, b"add", key, b"%d" % generation, NEVER):
                return generation
            value = await client.incr_on(conn, key, 1)
            if value is None:
                raise ReplyError("the namespace generation key vanished while it was being bumped")
            return value

        generation = await self.run(bump, "clearing the namespace")
        self.remember_generation(generation)
        return generation
