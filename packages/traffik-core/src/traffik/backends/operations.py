"""`StorageOperations`: what a backend implements (`get`, `set`, `increment`, ...), and the generic forms of the rest."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from traffik.typing import AsyncLock

__all__ = ["StorageOperations"]


class StorageOperations:
    """The storage operations of `ThrottleBackend`: each raises `NotImplementedError` until a
    backend implements it, except those with a generic form on the others (`decrement`,
    `increment_with_ttl`, `multi_get`, `multi_set`, `reset`) or a neutral answer (`ttl`)."""

    async def get(self, key: str) -> str | None:
        raise NotImplementedError(f"{type(self).__name__} must implement get()")

    async def set(self, key: str, value: str, expire: float | None = None) -> None:
        """Store `value`; `expire` in seconds, None for no expiry."""
        raise NotImplementedError(f"{type(self).__name__} must implement set()")

    async def delete(self, key: str) -> bool:
        raise NotImplementedError(f"{type(self).__name__} must implement delete()")

    async def increment(self, key: str, amount: int = 1) -> int:
        raise NotImplementedError(f"{type(self).__name__} must implement increment()")

    async def decrement(self, key: str, amount: int = 1) -> int:
        return await self.increment(key, -amount)

    async def expire(self, key: str, seconds: float) -> bool:
        raise NotImplementedError(f"{type(self).__name__} must implement expire()")

    async def ttl(self, key: str) -> float | None:
        """Milliseconds until `key` is gone (it exists for `ttl - 1` more ms, not `ttl`); None
        when missing, immortal or unknown."""
        return None

    async def increment_with_ttl(self, key: str, amount: int = 1, ttl: float = 60) -> int:
        """Add `amount`; a key created by this call expires after `ttl` seconds.

        This generic form is two calls and not atomic across processes; every built-in
        backend replaces it with a single atomic step.
        """
        value = await self.increment(key, amount)
        if value == amount:
            await self.expire(key, ttl)
        return value

    async def multi_get(self, *keys: str) -> list[str | None]:
        return list(await asyncio.gather(*(self.get(k) for k in keys)))

    async def multi_set(self, items: Mapping[str, str], expire: float | None = None) -> None:
        await asyncio.gather(*(self.set(k, v, expire) for k, v in items.items()))

    def get_lock(self, name: str, ttl: float | None = None, reentrant: bool = False) -> AsyncLock:
        raise NotImplementedError(
            f"{type(self).__name__} must implement get_lock() to support locks"
        )

    async def scan(self, prefix: str, limit: int | None = None) -> list[str]:
        """The keys of this namespace that start with `prefix` (a namespaced prefix, from
        `get_key`), at most `limit` of them; for `python -m traffik` and admin tools."""
        raise NotImplementedError(
            f"{type(self).__name__} cannot list its keys: it has no scan(prefix, limit) (the "
            "keys of its namespace starting with prefix, at most limit of them); implement "
            "it, or use a backend that can (memory, sqlite, redis, memcached)"
        )

    async def clear(self) -> None:
        """Delete every key of this namespace, and nothing else."""
        raise NotImplementedError(f"{type(self).__name__} must implement clear()")

    async def reset(self) -> None:
        await self.clear()
