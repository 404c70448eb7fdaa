"""`StoreLock`: a named lock held in a store shared by processes, as a key or row with a token.

The store-specific part is two steps a backend provides: take the lock (write our random
token only if no live holder is there, with a time to live) and drop it (delete it only if it
still holds our token). Everything else is the same on every store and lives here: ownership
per asyncio task, reentrancy counted in this process (`Holding`, kept in the backend's
`_holdings`), and waiting by polling with exponential backoff (0.5 ms doubling to 10 ms) up to
`blocking_timeout`. `RedisLock` (traffik-redis) and `SQLiteLock` are built on it.

A store step is never cut by a cancellation of its caller (a client that disconnected, an
`asyncio.wait_for` around the block): once sent, a take or a drop runs to its end in a task
of its own (`finished`), and a take that succeeded for a caller who left is dropped at once,
so the lock is free for the next holder instead of held until its ttl runs out.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import sys
from collections.abc import Awaitable
from typing import Any, Callable, Optional, TypeVar

from traffik.exceptions import BackendError, LockAcquisitionError, LockReleaseError

__all__ = ["DEFAULT_LOCK_TTL", "Holding", "StoreLock", "finished"]

T = TypeVar("T")

DEFAULT_LOCK_TTL = 5.0
"""Seconds a lock in a shared store (Redis, Memcached, SQLite) lives when neither the call nor
the backend gives a `lock_ttl`: a process killed while holding one blocks it no longer than
that (traffik 1.2 kept such a lock for ever)."""

_FIRST_DELAY = 0.0005
_MAX_DELAY = 0.01
_log = logging.getLogger("traffik")
_running: set[asyncio.Future[Any]] = set()
"""Store steps going on after their caller was cancelled (held here: the loop keeps only
weak references to tasks)."""


async def finished(
    step: Awaitable[T], name: str, then: Optional[Callable[[T], Awaitable[Any]]] = None
) -> T:
    """`await step`, which a cancellation of the caller does not cut: the step then goes on
    in a task of its own and the cancellation is raised at once; once the step is over,
    `then(result)` runs (to undo what the caller will never use). A failure of either is
    logged with `name` (what the step is: `"lock 'x'"`, `"redis evaluate_all"`), never left
    unretrieved."""
    task = _started(step)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        if task.done():
            _after(task, name, then)
        else:
            _running.add(task)
            task.add_done_callback(lambda done: _after(done, name, then))
        raise


if sys.version_info >= (3, 12):

    def _started(step: Awaitable[T]) -> asyncio.Future[T]:
        """`step` in a task of its own, begun at once: it runs here up to its first wait, so a
        step that never waits (an in-memory store's) is over before `finished` awaits it,
        with no trip through the event loop."""
        if asyncio.iscoroutine(step):
            return asyncio.Task(step, loop=asyncio.get_running_loop(), eager_start=True)
        return asyncio.ensure_future(step)

else:  # (no eager tasks before Python 3.12: the task begins at the loop's next turn)
    _started = asyncio.ensure_future


def _after(
    task: asyncio.Future[Any], name: str, then: Optional[Callable[[Any], Awaitable[Any]]]
) -> None:
    _running.discard(task)
    if task.cancelled():
        return
    error = task.exception()
    if error is not None:
        _log.warning("%s: a step left behind by a cancelled caller failed: %r", name, error)
    elif then is not None:
        follow = asyncio.ensure_future(then(task.result()))
        _running.add(follow)
        follow.add_done_callback(lambda done: _after(done, name, None))


class Holding:
    """This process's hold on one lock: the owning task, its token and the reentry count."""

    __slots__ = ("count", "owner", "token")

    def __init__(self, owner: asyncio.Task[Any], token: str) -> None:
        self.owner = owner
        self.token = token
        self.count = 1


class StoreLock:
    """A lock shared by every process using the same store and lock name (module docstring).

    Subclasses implement `_take(token)` and `_drop(token)`; the backend keeps the process's
    holdings in a `_holdings` dict.
    """

    __slots__ = ("_backend", "_reentrant", "_ttl", "name")

    def __init__(self, backend: Any, name: str, ttl: Optional[float], reentrant: bool) -> None:
        self._backend = backend
        self.name = name
        self._ttl = ttl
        self._reentrant = reentrant

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, ttl={self._ttl!r})"

    async def _take(self, token: str) -> bool:
        """Hold the lock with `token` if nobody does; whether it is now ours."""
        raise NotImplementedError

    async def _drop(self, token: str) -> bool:
        """Release the lock if it still holds `token`; False when it expired before that."""
        raise NotImplementedError

    def _undo(self, token: str) -> Callable[[bool], Awaitable[Any]]:
        """What drops the lock taken for a caller cancelled meanwhile."""

        async def undo(taken: bool) -> None:
            if taken:
                await self._drop(token)

        return undo

    def is_owner(self, task: Any = None) -> bool:
        holding = self._backend._holdings.get(self.name)
        return holding is not None and holding.owner is (task or asyncio.current_task())

    async def acquire(self, blocking: bool = True, blocking_timeout: float | None = None) -> bool:
        task = asyncio.current_task()
        if task is None:
            raise LockAcquisitionError(
                f"lock {self.name!r} must be acquired inside an asyncio task"
            )
        holdings = self._backend._holdings
        holding = holdings.get(self.name)
        if holding is not None and holding.owner is task:
            if not self._reentrant:
                raise LockAcquisitionError(
                    f"lock {self.name!r} is already held by this task (not reentrant)"
                )
            holding.count += 1
            return True
        token = secrets.token_hex(16)
        loop = asyncio.get_running_loop()
        deadline = None if blocking_timeout is None else loop.time() + blocking_timeout
        delay = _FIRST_DELAY
        while True:
            try:
                taken = await finished(self._take(token), f"lock {self.name!r}", self._undo(token))
            except BackendError as exc:
                raise LockAcquisitionError(f"could not acquire lock {self.name!r}: {exc}") from exc
            if taken:
                holdings[self.name] = Holding(task, token)
                return True
            if not blocking:
                return False
            if deadline is not None:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return False
                delay = min(delay, remaining)
            await asyncio.sleep(delay)
            delay = min(delay * 2, _MAX_DELAY)

    async def release(self) -> None:
        holdings = self._backend._holdings
        holding = holdings.get(self.name)
        if holding is None or holding.owner is not asyncio.current_task():
            raise LockReleaseError(f"lock {self.name!r} is not held by this task")
        holding.count -= 1
        if holding.count:
            return
        del holdings[self.name]
        try:
            released = await finished(self._drop(holding.token), f"lock {self.name!r}")
        except BackendError as exc:
            raise LockReleaseError(f"could not release lock {self.name!r}: {exc}") from exc
        if not released:
            raise LockReleaseError(
                f"lock {self.name!r} outlived its ttl={self._ttl}s and expired before it was "
                "released (another holder may have taken it); give it a longer ttl"
            )
