"""`RedisLock`: a named lock in Redis (`SET NX PX` with a random token), owned per asyncio task."""

from __future__ import annotations

import asyncio
import secrets
from typing import TYPE_CHECKING, Any

from traffik.exceptions import BackendError, LockAcquisitionError, LockReleaseError

if TYPE_CHECKING:
    from traffik.backends.redis.backend import RedisBackend

__all__ = ["Holding", "RedisLock"]

_FIRST_DELAY = 0.0005
_MAX_DELAY = 0.01


class Holding:
    """This process's hold on one lock: the owning task, its token and the reentry count."""

    __slots__ = ("count", "owner", "token")

    def __init__(self, owner: asyncio.Task[Any], token: str) -> None:
        self.owner = owner
        self.token = token
        self.count = 1


class RedisLock:
    """A lock shared by every process using the same Redis and lock name.

    Acquiring sets the key to a random token only if it is absent, with a `ttl` so a
    crashed holder cannot block others forever (no `ttl`: held until released). Waiting
    polls with exponential backoff (0.5 ms doubling to 10 ms) up to `blocking_timeout`.
    Releasing deletes the key only if it still holds our token. Reentrancy (when
    `reentrant`) is counted in this process; tokens are random, so no counter key is
    left behind.
    """

    __slots__ = ("_backend", "_reentrant", "_ttl", "name")

    def __init__(
        self, backend: RedisBackend, name: str, ttl: float | None, reentrant: bool
    ) -> None:
        self._backend = backend
        self.name = name
        self._ttl = ttl
        self._reentrant = reentrant

    def __repr__(self) -> str:
        return f"RedisLock({self.name!r}, ttl={self._ttl!r})"

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
                taken = await self._backend._set_if_absent(self.name, token, self._ttl)
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
            released = await self._backend._delete_if_token(self.name, holding.token)
        except BackendError as exc:
            raise LockReleaseError(f"could not release lock {self.name!r}: {exc}") from exc
        if released < 0:
            raise LockReleaseError(
                f"lock {self.name!r} expired (ttl={self._ttl}s) and was taken by another holder before release"
            )
