"""One memcached node: its client (rebuilt in each event loop), timeouts, errors and namespace generation."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Callable, Optional, TypeVar

from aiomcache.exceptions import ClientException
from aiomcache.pool import Connection

from traffik.backends.memcached._client import ConnectTimeout, Flagged, NodeClient, ReplyError
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
        self._client: Optional[NodeClient] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self.generation: Optional[int] = None
        self._generation_until = 0.0
        self._refreshing = False

    def __repr__(self) -> str:
        return f"Node({self.name})"

    def _client_here(self) -> NodeClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            # Connections belong to the loop that opened them; a new loop gets a new client.
            self._client = NodeClient(
                self.server.host,
                self.server.port,
                pool_size=self._pool_size,
                connect_timeout=self._connect_timeout,
            )
            self._loop = loop
            self._refreshing = False
        return self._client

    async def close(self) -> None:
        client, self._client = self._client, None
        self.generation = None
        if client is not None and self._loop is asyncio.get_running_loop():
            await client.close()

    async def run(self, operation: Operation[T], what: str) -> T:
        client = self._client_here()
        timeout = self._command_timeout
        if client.must_connect():
            timeout += self._connect_timeout
        try:
            return await asyncio.wait_for(self._session(client, operation), timeout)
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

    @staticmethod
    async def _session(client: NodeClient, operation: Operation[T]) -> T:
        async with client.connection() as conn:
            return await operation(client, conn)

    async def ping(self) -> bool:
        await self.run(lambda client, conn: client.version_on(conn), "version")
        return True

    # -- namespace generation -------------------------------------------------------------

    def remember_generation(self, generation: int) -> None:
        self.generation = generation
        self._generation_until = time.monotonic() + self._generation_refresh

    async def current_generation(self) -> int:
        """This node's namespace generation; read from the server at most every `generation_refresh` s."""
        generation = self.generation
        if generation is not None and (self._refreshing or time.monotonic() < self._generation_until):
            return generation
        self._refreshing = True
        try:
            generation = await self.run(self._read_generation, "reading the namespace generation")
        finally:
            self._refreshing = False
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
