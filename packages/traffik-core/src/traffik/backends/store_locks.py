"""`StoreLock`: a named lock held in a store shared by processes, as a key or row with a token.

The store-specific part is two steps a backend provides: take the lock (write our random
token only if no live holder is there, with a time to live) and drop it (delete it only if it
still holds our token). Everything else is the same on every store and lives here: ownership
per asyncio task, reentrancy counted in this process (`Holding`, kept in the backend's
`_holdings`), and waiting by polling with exponential backoff (0.5 ms doubling to 10 ms) up to
`blocking_timeout`. `RedisLock` (traffik-redis) and `SQLiteLock` are built on it.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any, Optional

from traffik.exceptions import BackendError, LockAcquisitionError, LockReleaseError

__all__ = ["Holding", "StoreLock"]

_FIRST_DELAY = 0.0005
_MAX_DELAY = 0.01


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
                taken = await self._take(token)
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
            released = await self._drop(holding.token)
        except BackendError as exc:
            raise LockReleaseError(f"could not release lock {self.name!r}: {exc}") from exc
        if not released:
            raise LockReleaseError(
                f"lock {self.name!r} outlived its ttl={self._ttl}s and expired before it was "
                "released (another holder may have taken it); give it a longer ttl"
            )
