"""One client per event loop: a backend built at import time serves every loop that uses it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from typing import Any

from traffik.backends.redis._lane import Lane, capacity
from traffik.backends.redis.connection import ClientSource, needs_deadline
from traffik.backends.redis.gate import Gate, pool_size

__all__ = ["Link", "LoopClients"]


class Link:
    """What one event loop uses: the client, its `Gate`, whether each operation needs the
    backend's own deadline (`needs_deadline`), and the `Lane` its scripts take (None: the
    client's path)."""

    __slots__ = ("client", "deadline", "gate", "lane")

    def __init__(self, client: Any, gate: Gate, deadline: bool, lane: Lane | None = None) -> None:
        self.client = client
        self.gate = gate
        self.deadline = deadline
        self.lane = lane


def _link(
    source: ClientSource, client: Any, connect_timeout: float, command_timeout: float
) -> Link:
    """The `Link` of `client`: a `Lane` for a single-node client built here whose pool has room
    for one (its gate then admits as many operations fewer as the lane may keep)."""
    deadline = needs_deadline(source, client, connect_timeout, command_timeout)
    size = pool_size(client)
    kept = capacity(size)
    if deadline or source.cluster or not kept or getattr(client, "single_connection_client", False):
        return Link(client, Gate(size), deadline)
    return Link(client, Gate(size - kept), deadline, Lane(client.connection_pool, kept))


async def _closing(clients: list[Any]) -> AsyncGenerator[None, None]:
    """Keeps `clients` open until it is closed: by `LoopClients.aclose`, or by its event loop.

    Started in the loop the clients belong to, it is one of the async generators that the
    loop finalises when it shuts down (`asyncio.run`, `asyncio.Runner`,
    `loop.shutdown_asyncgens()`), while it still runs: the connections close in their own
    loop, as they must, even when nobody closed the backend there.
    """
    try:
        yield
    finally:
        for client in clients:
            with contextlib.suppress(Exception):
                close = getattr(client, "aclose", None) or client.close
                await close()


class LoopClients:
    """The `Link` for the running loop, built on first use in that loop (owned sources only).

    A client given by the user is the same in every loop (each loop has its own `Gate`) and
    is never closed. Clients the backend built close with their loop, or with `aclose()`.
    """

    __slots__ = ("_building", "_by_loop", "_last", "_timeouts", "source")

    def __init__(
        self, source: ClientSource, connect_timeout: float, command_timeout: float
    ) -> None:
        self.source = source
        self._timeouts = (connect_timeout, command_timeout)
        self._by_loop: dict[asyncio.AbstractEventLoop, tuple[Link, AsyncGenerator[None, None]]] = {}
        self._building: dict[asyncio.AbstractEventLoop, asyncio.Future[Link]] = {}
        self._last: tuple[asyncio.AbstractEventLoop | None, Any] = (None, None)

    def get(self) -> Link | None:
        """The running loop's `Link`, or None before `build()` in this loop."""
        loop = asyncio.get_running_loop()
        last_loop, link = self._last
        if last_loop is loop:
            return link
        entry = self._by_loop.get(loop)
        if entry is None:
            return None
        self._last = (loop, entry[0])
        return entry[0]

    async def build(self) -> Link:
        """Build the running loop's client and `Link`, once: callers that come while a client
        is being built (a connection factory may take a while) share that one."""
        loop = asyncio.get_running_loop()
        building = self._building.get(loop)
        if building is None:
            building = self._building[loop] = loop.create_task(self._build(loop))
            building.add_done_callback(lambda _: self._building.pop(loop, None))
        return await asyncio.shield(building)

    async def _build(self, loop: asyncio.AbstractEventLoop) -> Link:
        for closed in [other for other in self._by_loop if other.is_closed()]:
            del self._by_loop[closed]
        client, owned = await self.source.build()
        link = _link(self.source, client, *self._timeouts)
        closer = _closing(owned)
        await closer.__anext__()  # runs to its `yield`: now the loop will finalise it
        self._by_loop[loop] = (link, closer)
        self._last = (loop, link)
        return link

    async def aclose(self, drain: float = 0.0) -> None:
        """Close what this loop built, once the operations in flight on it are over (waiting
        at most `drain` seconds); clients of other loops close with their loops."""
        self._last = (None, None)
        entry = self._by_loop.pop(asyncio.get_running_loop(), None)
        if entry is not None:
            link, closer = entry
            if drain > 0 and link.gate.busy():
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(link.gate.drained(), drain)
            await closer.aclose()
