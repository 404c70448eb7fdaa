"""One memcached node: its client (rebuilt in each event loop), timeouts, errors and namespace generation."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Sequence
from typing import Callable, Optional, TypeVar

from aiomcache.exceptions import ClientException
from aiomcache.pool import Connection

from traffik.backends.health import DEFAULT_POLICY, CircuitPolicy, StoreCircuit
from traffik.backends.memcached._client import ConnectionLimit, Flagged, NodeClient, ReplyError
from traffik.backends.memcached._expiry import NEVER
from traffik.backends.memcached._keys import GenerationKeys, KeySpace
from traffik.backends.memcached._pool import CommandTimeout, ConnectTimeout, PoolTimeout
from traffik.backends.memcached._servers import Server
from traffik.backends.services import MEMCACHED, identify
from traffik.exceptions import (
    BackendConnectionError,
    BackendError,
    CircuitOpenError,
    ConfigurationError,
)

__all__ = ["Node", "Operation", "fetch"]

T = TypeVar("T")
Operation = Callable[[NodeClient, Connection], Awaitable[T]]
"""What runs on one connection of a node: one command, or a read and its compare-and-swap."""


def _closed_by_peer(exc: Exception) -> bool:
    """Whether `exc` says the server closed an established connection (end of stream, reset,
    broken pipe), not that it was silent (a timeout) or refused a new one."""
    return isinstance(
        exc, (EOFError, ConnectionResetError, BrokenPipeError, ConnectionAbortedError)
    ) and not isinstance(exc, (CommandTimeout, ConnectTimeout))


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

    Every operation runs on one pooled connection within `command_timeout` seconds (up to
    a quarter more: the pool's watchdog ticks four times per timeout), counted from when it
    has its connection (opening one takes at most `connect_timeout`). While all `pool_size`
    are busy, it waits for one as long as the server answers the operations ahead, at most
    `connect_timeout + command_timeout` (as on Redis), and times out with them when the
    server answers none for `command_timeout`. Failures become `BackendConnectionError`
    (unreachable, timed out, connection lost, no connection free in time) or `BackendError`
    (an unexpected reply), chained and naming the server.

    `circuit` is the node's store-health circuit (`traffik.backends.health`): while it is
    open, operations on this node fail at once and a background `version` probes the server.
    It counts what says the server is down (a timeout, a lost or refused connection), not a
    long wait for a busy pool while the server answers: that server is no outage.

    The namespace generation read from this node is cached for `generation_refresh`
    seconds: a `clear()` in another process is seen here within that time. While it is
    fresh, `keys` maps the backend's keys into it (`GenerationKeys`).
    """

    def __init__(
        self,
        server: Server,
        keys: KeySpace,
        *,
        pool_size: int,
        connect_timeout: float,
        command_timeout: float,
        generation_refresh: float,
        circuit: CircuitPolicy = DEFAULT_POLICY,
    ) -> None:
        self.server = server
        self.name = str(server)
        self.circuit = StoreCircuit(f"memcached {self.name}", self.ping, circuit)
        self._space = keys
        self._generation_key = keys.generation_key
        self._pool_size = pool_size
        self._connect_timeout = connect_timeout
        self._command_timeout = command_timeout
        self._generation_refresh = generation_refresh
        self._clients: dict[asyncio.AbstractEventLoop, NodeClient] = {}
        self._last: tuple[Optional[asyncio.AbstractEventLoop], Optional[NodeClient]] = (None, None)
        self.generation: Optional[int] = None
        self.keys: Optional[GenerationKeys] = None
        self.fresh_until = 0.0
        """`time.monotonic()` until which `generation` (and `keys`) may be used unread."""
        self._reading: Optional[asyncio.Task[GenerationKeys]] = None
        """The read of the generation in flight, which every task needing it shares."""
        self._bumps = 0
        self.closed = False
        """Set by `close()` until `reopen()`: no connection opens meanwhile (an operation
        that was on its way when the backend closed fails instead of leaving one open)."""

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
            if self.closed:
                raise BackendConnectionError(
                    f"memcached {self.name}: the backend was closed; call "
                    "`await backend.initialize()` (or enter `async with backend:`) to use it again"
                )
            self._drop_closed_loops()
            client = self._clients[loop] = NodeClient(
                self.server.host,
                self.server.port,
                pool_size=self._pool_size,
                connect_timeout=self._connect_timeout,
                command_timeout=self._command_timeout,
            )
        self._last = (loop, client)
        return client

    def _drop_closed_loops(self) -> None:
        # (`list` copies the keys at once, and `pop` takes each once: loops in other threads
        # may be dropping the same ones)
        for loop in [loop for loop in list(self._clients) if loop.is_closed()]:
            client = self._clients.pop(loop, None)
            if client is not None:
                client.abandon(running=False)

    def reopen(self) -> None:
        """Let connections open again (the backend is initialised after `close()`)."""
        self.closed = False

    async def close(self) -> None:
        """Close this loop's connections once the operations in flight on them are over;
        those of closed loops are dropped, other loops close their own (a loop stopped now
        does when it runs again: as asyncio requires, to shut down its async generators
        before it is closed)."""
        self.closed = True
        self._drop_closed_loops()
        here = asyncio.get_running_loop()
        clients, self._clients, self._last = self._clients, {}, (None, None)
        self.generation, self.keys, self.fresh_until = None, None, 0.0
        for loop, client in clients.items():
            if loop is not here:
                loop.call_soon_threadsafe(client.abandon)
        if here in clients:
            await clients[here].close()

    # -- running operations -----------------------------------------------------------------

    async def run(self, operation: Operation[T], what: str) -> T:
        """Run `operation` on one connection of this loop's pool, within the timeouts.

        Every command takes this one path, the fixed window's hot path too: an idle
        connection (or the next one released) stamped for the pool's watchdog (no timer),
        the operation, the connection given back (closed unless the operation ended well or
        with a complete error reply), and any failure translated (`_failure`). An operation
        whose connection the server had closed (a restart the loop has not seen yet: the
        socket still looked healthy) runs once more on a new connection. The node's
        circuit is read before (refusing at once while it is open), and again after a wait
        for a connection (one that opened meanwhile refuses the operation, unsent), and told
        of timeouts and lost connections, and of the first answer after them.
        """
        circuit = self.circuit
        if circuit.tripped:
            circuit.check(what)
        client = self._client_here()
        pool = client.pool
        retried = False
        while True:
            conn = None
            try:
                conn = pool.take()
                if conn is None:
                    conn = await pool.acquire()
                    if circuit.tripped:
                        circuit.check(what)
                else:
                    pool.hold(conn, pool.tick)
                result = await operation(client, conn)
            except BaseException as exc:
                timed_out = conn is not None and pool.give_back(conn, isinstance(exc, ReplyError))
                if not isinstance(exc, Exception) or isinstance(exc, CircuitOpenError):
                    raise  # a cancellation stays one; a refusal is no failure of the server
                if not retried and conn is not None and not timed_out and _closed_by_peer(exc):
                    # The server had closed this connection (a restart the loop has not
                    # seen yet): so it had likely closed the idle ones too. Once more, on a
                    # new connection, as redis-py retries a broken connection once.
                    pool.drop_idle()
                    retried = True
                    continue
                failure = self._failure(CommandTimeout() if timed_out else exc, what)
                if isinstance(failure, BackendConnectionError) and not isinstance(exc, PoolTimeout):
                    circuit.failed(failure, self._silence(exc, timed_out))
                if failure is exc:
                    raise
                raise failure from exc
            pool.give_back(conn, True)
            if circuit.failures:
                circuit.answered()
            return result

    def _silence(self, exc: Exception, timed_out: bool) -> float:
        """How long a failure proves the server silent: a whole timeout, or nothing known."""
        if isinstance(exc, ConnectTimeout):
            return self._connect_timeout
        if timed_out or isinstance(exc, (CommandTimeout, asyncio.TimeoutError)):
            return self._command_timeout
        return 0.0

    def _failure(self, exc: Exception, what: str) -> Exception:
        """The backend error that `exc`, raised while running `what`, stands for."""
        if isinstance(exc, ConnectTimeout):
            return BackendConnectionError(
                f"memcached {self.name}: could not connect within connect_timeout={self._connect_timeout}s "
                f"({what}); is the server up and reachable?"
            )
        if isinstance(exc, (CommandTimeout, asyncio.TimeoutError)):
            return BackendConnectionError(
                f"memcached {self.name}: no answer within {self._command_timeout:g}s ({what}); the "
                "server is down or overloaded, or command_timeout is too short"
            )
        if isinstance(exc, PoolTimeout):
            return BackendConnectionError(
                f"memcached {self.name}: no connection came free within "
                f"{self._connect_timeout + self._command_timeout:g}s ({what}): the "
                f"pool_size={self._pool_size} connections of this event loop stayed busy with "
                "the operations ahead, which the server answers; raise pool_size"
            )
        if isinstance(exc, ConnectionLimit):
            return BackendConnectionError(
                f"memcached {self.name}: refused a new connection ({what}), it is at its "
                f"connection limit ({exc}); raise memcached's -c (1024 by default), or open "
                f"fewer connections: each process opens up to pool_size={self._pool_size} per "
                "event loop"
            )
        if isinstance(exc, (OSError, EOFError)):
            return BackendConnectionError(
                f"memcached {self.name}: connection failed ({what}): {exc!r}; is memcached running there?"
            )
        if isinstance(exc, ClientException):
            if "too large" in str(exc):  # (SERVER_ERROR object too large for cache)
                return BackendError(
                    f"memcached {self.name}: {what} failed, the server refused a value as too "
                    f"large for an item ({exc}): its -I (item size, 1m by default) is below "
                    "the backend's max_item_bytes; start memcached with -I at least that, or "
                    "give MemcachedBackend max_item_bytes= the server's -I, so that a limit "
                    "whose state could outgrow it is refused when its throttle is built"
                )
            return BackendError(f"memcached {self.name}: {what} failed: {exc}")
        return exc

    async def ping(self) -> bool:
        await self.run(lambda client, conn: client.version_on(conn), "version")
        return True

    async def greet(self, url: str) -> None:
        """Ask the server its `version`: `ConfigurationError` naming `url` (the backend's) when
        the server that answers is not memcached (a Redis, a web server), a setting to fix;
        a `BackendConnectionError` when none answers."""

        async def hello(client: NodeClient, conn: Connection) -> None:
            reply = await client.hello_on(conn)
            if reply.startswith(b"VERSION "):
                return
            found = identify(reply)
            if found == MEMCACHED or reply.startswith((b"CLIENT_ERROR", b"SERVER_ERROR")):
                return  # memcached, answering an error: its commands will say more
            first = reply.split(b"\n", 1)[0][:80]
            raise ConfigurationError(
                f"memcached URL {url!r}: {found or 'a server that is not memcached'} answers "
                f"at {self.name} (its reply to `version`: {first!r}); point the URL at a "
                "memcached server's host and port (11211 by default)"
            )

        await self.run(hello, "version")

    # -- namespace generation -------------------------------------------------------------

    def remember_generation(self, generation: int) -> None:
        if generation != self.generation or self.keys is None:
            self.keys = self._space.of(generation)
            self.generation = generation
        self.fresh_until = time.monotonic() + self._generation_refresh

    async def current_keys(self) -> GenerationKeys:
        """The keys of this node's namespace generation, read at most every `generation_refresh` s.

        The hot path reads `keys` itself while `time.monotonic() < fresh_until`. Past that,
        the tasks that need the generation share one read (a task of its own, so that a
        cancelled caller never cuts it) and go on in the order they asked: the hits of a
        burst reach their keys' rounds in arrival order, after one round trip.
        """
        keys = self.keys
        if keys is not None and time.monotonic() < self.fresh_until:
            return keys
        loop = asyncio.get_running_loop()
        reading = self._reading
        if reading is None or reading.get_loop() is not loop:
            reading = self._reading = loop.create_task(self._read_keys())
            reading.add_done_callback(self._read)
        return await asyncio.shield(reading)

    async def _read_keys(self) -> GenerationKeys:
        bumps = self._bumps
        generation = await self.run(self._read_generation, "reading the namespace generation")
        if (
            bumps == self._bumps or self.keys is None
        ):  # else a clear() here is newer than what was read
            self.remember_generation(generation)
        assert self.keys is not None
        return self.keys

    def _read(self, reading: asyncio.Task[GenerationKeys]) -> None:
        """The shared read is over: the next one starts afresh (its error, if any, was its
        callers'; seen here in case they had all gone)."""
        if self._reading is reading:
            self._reading = None
        if not reading.cancelled():
            reading.exception()

    async def current_generation(self) -> int:
        """This node's namespace generation; read from the server at most every `generation_refresh` s."""
        return (await self.current_keys()).generation

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
        self._bumps += 1
        self.remember_generation(generation)
        return generation


async def fetch(located: Sequence[tuple[Node, bytes]], what: str) -> list[bytes | Flagged | None]:
    """The values of `located` keys (None where missing): one `get` per node, the nodes in parallel."""
    by_node: dict[Node, list[bytes]] = {}
    for node, mkey in located:
        by_node.setdefault(node, []).append(mkey)

    def read(mkeys: list[bytes]) -> Operation[dict[bytes, bytes | Flagged]]:
        return lambda client, conn: client.get_many_on(conn, mkeys)

    found: dict[bytes, bytes | Flagged] = {}
    for values in await asyncio.gather(*(node.run(read(mk), what) for node, mk in by_node.items())):
        found.update(values)
    return [found.get(mkey) for _, mkey in located]
