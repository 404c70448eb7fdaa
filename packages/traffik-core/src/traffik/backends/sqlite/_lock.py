"""`SQLiteLock`: a named lock held as a row with an owner token and a time to live."""

from __future__ import annotations

import asyncio
import secrets
from typing import TYPE_CHECKING, Any

from traffik.exceptions import BackendError, LockAcquisitionError, LockReleaseError

if TYPE_CHECKING:
    from traffik.backends.sqlite._backend import SQLiteBackend

__all__ = ["DEFAULT_LOCK_TTL", "Holding", "SQLiteLock"]

DEFAULT_LOCK_TTL = 5.0
"""Seconds a lock lives when neither the call nor the backend gives a `lock_ttl`: a process
killed while holding one blocks it no longer than that."""

_FIRST_DELAY = 0.0005
_MAX_DELAY = 0.01


class Holding:
    """This process's hold on one lock: the owning task, its token and the reentry count."""

    __slots__ = ("count", "owner", "token")

    def __init__(self, owner: asyncio.Task[Any], token: str) -> None:
        self.owner = owner
        self.token = token
        self.count = 1


class SQLiteLock:
    """A lock shared by every process using the same file and lock name.

    Acquiring writes the lock's row with a random token, in one transaction, only if no live
    row is there; the row expires after `ttl` seconds, so a holder that died cannot block
    others for longer. Waiting polls with backoff (0.5 ms doubling to 10 ms) up to
    `blocking_timeout`. Releasing deletes the row only if it still holds our token.
    Reentrancy (when `reentrant`) is counted in this process.
    """

    __slots__ = ("_backend", "_reentrant", "_ttl", "name")

    def __init__(self, backend: SQLiteBackend, name: str, ttl: float, reentrant: bool) -> None:
        self._backend = backend
        self.name = name
        self._ttl = ttl
        self._reentrant = reentrant

    def __repr__(self) -> str:
        return f"SQLiteLock({self.name!r}, ttl={self._ttl!r})"

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
                taken = await self._backend._take_lock(self.name, token, self._ttl)
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
            released = await self._backend._drop_lock(self.name, holding.token)
        except BackendError as exc:
            raise LockReleaseError(f"could not release lock {self.name!r}: {exc}") from exc
        if not released:
            raise LockReleaseError(
                f"lock {self.name!r} outlived its ttl={self._ttl}s and expired before it was "
                "released (another holder may have taken it); give it a longer ttl"
            )
