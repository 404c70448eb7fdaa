"""`RedisLock`: a named lock in Redis (`SET NX PX` with a random token), owned per asyncio task."""

from __future__ import annotations

from traffik.backends.store_locks import Holding, StoreLock

__all__ = ["Holding", "RedisLock"]


class RedisLock(StoreLock):
    """A lock shared by every process using the same Redis and lock name.

    Acquiring sets the key to a random token only if it is absent, with a `ttl` so a
    crashed holder cannot block others forever (`DEFAULT_LOCK_TTL`, 5 s, when none is
    given). Waiting
    polls with exponential backoff (0.5 ms doubling to 10 ms) up to `blocking_timeout`.
    Releasing deletes the key only if it still holds our token. Reentrancy (when
    `reentrant`) is counted in this process; tokens are random, so no counter key is
    left behind.
    """

    __slots__ = ()

    async def _take(self, token: str) -> bool:
        return bool(await self._backend._set_if_absent(self.name, token, self._ttl))

    async def _drop(self, token: str) -> bool:
        # The release script answers -1 when the key no longer holds our token.
        return await self._backend._delete_if_token(self.name, token) >= 0
