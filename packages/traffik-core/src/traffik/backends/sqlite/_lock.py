"""`SQLiteLock`: a named lock held as a row with an owner token and a time to live."""

from __future__ import annotations

from traffik.backends.store_locks import DEFAULT_LOCK_TTL, Holding, StoreLock

__all__ = ["DEFAULT_LOCK_TTL", "Holding", "SQLiteLock"]


class SQLiteLock(StoreLock):
    """A lock shared by every process using the same file and lock name.

    Acquiring writes the lock's row with a random token, in one transaction, only if no live
    row is there; the row expires after `ttl` seconds, so a holder that died cannot block
    others for longer. Waiting polls with backoff (0.5 ms doubling to 10 ms) up to
    `blocking_timeout`. Releasing deletes the row only if it still holds our token.
    Reentrancy (when `reentrant`) is counted in this process.
    """

    __slots__ = ()

    async def _take(self, token: str) -> bool:
        return bool(await self._backend._take_lock(self.name, token, self._ttl))

    async def _drop(self, token: str) -> bool:
        return bool(await self._backend._drop_lock(self.name, token))
