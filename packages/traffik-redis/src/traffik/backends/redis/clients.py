"""One client per event loop: a backend built at import time serves every loop that uses it."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from traffik.backends.redis.connection import Built, ClientSource, needs_deadline
from traffik.backends.redis.gate import Gate, pool_size

__all__ = ["Link", "LoopClients"]


class Link:
    """What one event loop uses: the client, its `Gate`, and whether each operation needs
    the backend's own deadline (`needs_deadline`)."""

    __slots__ = ("client", "deadline", "gate")

    def __init__(self, client: Any, gate: Gate, deadline: bool) -> None:
        self.client = client
        self.gate = gate
        self.deadline = deadline


def _connections(client: Any) -> list[Any]:
    """The open connections of a redis-py asyncio client, single-node or cluster."""
    found: list[Any] = []
    pool = getattr(client, "connection_pool", None)
    if pool is not None:
        found += list(getattr(pool, "_available_connections", ())) + list(
            getattr(pool, "_in_use_connections", ())
        )
    manager = getattr(client, "nodes_manager", None)
    for node in getattr(manager, "nodes_cache", {}).values():
        found += list(getattr(node, "_connections", ()))
    return found


def _abandon(built: Built) -> None:
    """Close the sockets of clients whose event loop is closed, so nothing leaks or warns.

    Their loop can no longer run `aclose()`; closing each transport's socket directly is
    what the transport would have done, minus the loop callbacks.
    """
    for client in built[1]:
        for connection in _connections(client):
            writer = getattr(connection, "_writer", None)
            if writer is None:
                continue
            transport = writer.transport
            sock = getattr(transport, "_sock", None)
            if sock is not None:
                sock.close()
                transport._sock = None
            transport._closing = True
            connection._reader = connection._writer = None


class LoopClients:
    """The `Link` for the running loop, built on first use in that loop (owned sources only).

    A client given by the user is the same in every loop (each loop has its own `Gate`).
    Clients of loops that have been closed are dropped the next time a new loop shows up.
    """

    __slots__ = ("_by_loop", "_last", "_timeouts", "source")

    def __init__(
        self, source: ClientSource, connect_timeout: float, command_timeout: float
    ) -> None:
        self.source = source
        self._timeouts = (connect_timeout, command_timeout)
        self._by_loop: dict[asyncio.AbstractEventLoop, tuple[Link, Built]] = {}
        self._last: tuple[asyncio.AbstractEventLoop | None, Any] = (None, None)

    def get(self) -> Link:
        loop = asyncio.get_running_loop()
        last_loop, link = self._last
        if last_loop is loop:
            return link
        entry = self._by_loop.get(loop)
        if entry is None:
            self._drop_closed_loops()
            built = self.source.build()
            client = built[0]
            deadline = needs_deadline(self.source, client, *self._timeouts)
            entry = self._by_loop[loop] = (Link(client, Gate(pool_size(client)), deadline), built)
        self._last = (loop, entry[0])
        return entry[0]

    def _drop_closed_loops(self) -> None:
        for loop in [loop for loop in self._by_loop if loop.is_closed()]:
            _abandon(self._by_loop.pop(loop)[1])

    async def aclose(self) -> None:
        """Close what this loop built; abandon what closed loops left; keep live loops' clients."""
        self._last = (None, None)
        self._drop_closed_loops()
        entry = self._by_loop.pop(asyncio.get_running_loop(), None)
        if entry is None:
            return
        for client in entry[1][1]:
            with contextlib.suppress(Exception):
                close = getattr(client, "aclose", None) or client.close
                await close()
