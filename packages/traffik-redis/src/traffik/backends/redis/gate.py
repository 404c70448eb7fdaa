"""`Gate`: at most as many operations in flight as the client's pool has connections; the rest queue.

redis-py's asyncio `ConnectionPool` raises `MaxConnectionsError` when every connection is
busy (100 by default since redis-py 8), so a burst of decisions would fail; its
`BlockingConnectionPool` queues, but costs about 20 us on every command. The gate admits
an operation with one counter decrement while there is room and queues it (first come,
first served) only when there is none.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any

from redis.asyncio import BlockingConnectionPool

__all__ = ["Gate", "pool_size"]

_UNBOUNDED = 2**31
_POLL = 0.001  # seconds between two looks at a draining gate


def pool_size(client: Any) -> int:
    """How many connections `client` may open at once (per node, for a cluster: gating the
    whole cluster at one node's size is conservative, never wrong)."""
    pool = getattr(client, "connection_pool", None)
    if pool is not None:
        if isinstance(pool, BlockingConnectionPool):  # it queues by itself
            return _UNBOUNDED
        size = getattr(pool, "max_connections", None)
    else:
        size = getattr(client, "connection_kwargs", {}).get("max_connections")
    return size if isinstance(size, int) and size > 0 else _UNBOUNDED


class Gate:
    """A counting semaphore whose uncontended path needs no `await`.

    `free` is the number of operations that may start now: take a place with
    `if gate.free: gate.free -= 1` (else `await gate.wait()`), and give it back with
    `gate.release()`, which hands it straight to the oldest waiter, if any.
    """

    __slots__ = ("_waiters", "free", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self.free = size
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    def busy(self) -> bool:
        """Whether an operation holds a place or waits for one."""
        return self.free < self.size or any(not waiter.done() for waiter in self._waiters)

    async def drained(self) -> None:
        """Return once no operation holds a place or waits for one (for a closing backend:
        polled, so the gate's own path pays nothing for it)."""
        while self.busy():
            await asyncio.sleep(_POLL)

    async def wait(self) -> None:
        """Wait for a place (handed over by `release`)."""
        if self.free:  # never while anyone waits: `release` serves waiters first
            self.free -= 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed a place, but cancelled before taking it: pass it on
            else:
                waiter.cancel()  # `release` skips it
            raise

    def release(self) -> None:
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.free += 1
