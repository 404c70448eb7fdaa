"""`SQLiteStorage`: `SQLiteBackend`'s storage operations and locks, each one step of `Rows` in a transaction."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from traffik.backends.sqlite._lock import DEFAULT_LOCK_TTL, SQLiteLock
from traffik.backends.sqlite._rows import Rows, prefix_range
from traffik.backends.window_count import WindowCount

if TYPE_CHECKING:
    import sqlite3

    from traffik.backends.base import ThrottleBackend as _Backend
    from traffik.backends.sqlite._database import Database
else:
    _Backend = object

__all__ = ["SQLiteStorage", "ms"]

T = TypeVar("T")


def ms(seconds: float) -> int:
    """Whole milliseconds for a time to live in seconds: rounded to the nearest, at least 1."""
    return max(round(seconds * 1000), 1)


class SQLiteStorage(_Backend):
    """The storage operations of `SQLiteBackend` on its `Database`, and its locks."""

    _db: Database
    _rows: Rows

    def _key(self, key: str) -> str:
        """`key` inside this namespace, so `clear()` finds every row the backend wrote."""
        return key if key.startswith(self._prefix) else self._prefix + key

    # -- storage: each operation one step of `Rows` (`_step`) ----------------------------

    def _step(self, cursor: sqlite3.Cursor, step: Callable[..., T], *args: Any) -> T:
        """`step(rows, cursor, now, *args)`, `now` read once the transaction began."""
        return step(self._rows, cursor, self.now_ms(), *args)

    async def get(self, key: str) -> str | None:
        """Read a key's value.

        Args:
            key: The key (namespaced if it is not already).

        Returns:
            The value, or None when the key is missing or expired.
        """
        if not self.initialized:
            await self.ensure()
        return await self._db.run("reading a key", self._step, Rows.get, self._key(key))

    async def set(self, key: str, value: str, expire: float | None = None) -> None:
        """Store `value` under `key`, replacing any value and expiry.

        Args:
            key: The key (namespaced if it is not already).
            value: The value, stored as a string.
            expire: Seconds until the key expires (at least 1 ms), or None for no expiry.
        """
        if not self.initialized:
            await self.ensure()
        items = {self._key(key): str(value)}
        ttl_ms = None if expire is None else ms(expire)
        await self._db.write("writing a key", self._step, Rows.set_many, items, ttl_ms)

    async def delete(self, key: str) -> bool:
        """Delete a key.

        Args:
            key: The key (namespaced if it is not already).

        Returns:
            True when a live key was deleted.
        """
        if not self.initialized:
            await self.ensure()
        return await self._db.write("deleting a key", self._step, Rows.delete_live, self._key(key))

    async def increment(self, key: str, amount: int = 1) -> int:
        """Add `amount` to a counter, in one transaction; a missing key starts from 0.

        Args:
            key: The key (namespaced if it is not already).
            amount: What to add (negative to subtract).

        Returns:
            The counter's new value.
        """
        if not self.initialized:
            await self.ensure()
        count, _ = await self._db.write(
            "counting", self._step, Rows.count, self._key(key), amount, None
        )
        return count

    async def increment_with_ttl(self, key: str, amount: int = 1, ttl: float = 60) -> int:
        """Add `amount`; a key created by this call lives `ttl` seconds. One transaction.

        Args:
            key: The key (namespaced if it is not already).
            amount: What to add.
            ttl: Seconds a key created here lives (at least 1 ms).

        Returns:
            The counter's new value, a `WindowCount` that also carries the milliseconds
            until the key is gone (`ttl_ms`).
        """
        if not self.initialized:
            await self.ensure()
        return await self._db.write(
            "counting", self._step, _window_count, self._key(key), amount, ms(ttl)
        )

    async def expire(self, key: str, seconds: float) -> bool:
        """Set a live key to expire after `seconds`.

        Args:
            key: The key (namespaced if it is not already).
            seconds: Seconds from now until the key expires (at least 1 ms).

        Returns:
            True when the key exists.
        """
        if not self.initialized:
            await self.ensure()
        return await self._db.write(
            "setting an expiry", self._step, Rows.expire, self._key(key), ms(seconds)
        )

    async def ttl(self, key: str) -> float | None:
        """Milliseconds until `key` is gone (it exists for `ttl - 1` more ms).

        Args:
            key: The key (namespaced if it is not already).

        Returns:
            The milliseconds left, or None when the key is missing or immortal.
        """
        if not self.initialized:
            await self.ensure()
        return await self._db.run("reading an expiry", self._step, Rows.ttl, self._key(key))

    async def multi_get(self, *keys: str) -> list[str | None]:
        """Read several keys in one read.

        Args:
            *keys: The keys (each namespaced if it is not already).

        Returns:
            Each key's value, or None, in the order given.
        """
        if not keys:
            return []
        if not self.initialized:
            await self.ensure()
        names = [self._key(k) for k in keys]
        return await self._db.run("reading keys", self._step, Rows.get_many, names)

    async def multi_set(self, items: Mapping[str, str], expire: float | None = None) -> None:
        """Store several values in one transaction.

        Args:
            items: The keys and their values (stored as strings).
            expire: Seconds until each key expires, or None for no expiry.
        """
        if not items:
            return
        if not self.initialized:
            await self.ensure()
        pairs = {self._key(key): str(value) for key, value in items.items()}
        ttl_ms = None if expire is None else ms(expire)
        await self._db.write("writing keys", self._step, Rows.set_many, pairs, ttl_ms)

    async def scan(self, prefix: str, limit: int | None = None) -> list[str]:
        """The live keys of this namespace that start with `prefix`, in order, at most `limit`.

        Args:
            prefix: The key prefix (namespaced if it is not already).
            limit: The most keys to return, or None for all.

        Returns:
            The matching keys, in order.
        """
        if not self.initialized:
            await self.ensure()
        low, high = prefix_range(self._key(prefix))
        return await self._db.run("listing keys", self._step, Rows.scan, low, high, limit)

    # -- locks -------------------------------------------------------------------------

    def get_lock(self, name: str, ttl: float | None = None, reentrant: bool = False) -> SQLiteLock:
        """A lock held in the database file, shared by every process that opens it.

        Args:
            name: The lock's name (namespaced if it is not already).
            ttl: Seconds after which a held lock expires; None for the default (5 seconds).
            reentrant: Whether the holder may acquire it again.

        Returns:
            The lock.
        """
        return SQLiteLock(
            self, self._key(name), DEFAULT_LOCK_TTL if ttl is None else ttl, reentrant
        )

    async def _take_lock(self, name: str, token: str, ttl: float) -> bool:
        if not self.initialized:
            await self.ensure()
        return await self._db.write("taking a lock", self._step, Rows.take, name, token, ms(ttl))

    async def _drop_lock(self, name: str, token: str) -> bool:
        if not self.initialized:
            await self.ensure()
        return await self._db.write("releasing a lock", self._step, Rows.drop, name, token)


def _window_count(
    rows: Rows, cursor: sqlite3.Cursor, now: int, key: str, amount: int, ttl_ms: int
) -> WindowCount:
    """`Rows.count` as `increment_with_ttl` answers it, saying when it counted (`at`: what
    `FixedWindow` makes its decision's, for refunds)."""
    count = WindowCount(*rows.count(cursor, now, key, amount, ttl_ms))
    count.at = now  # type: ignore[attr-defined]
    return count
