"""`InMemoryStore`: `InMemoryBackend`'s entries (expiry, capacity, sweeping) and its storage operations."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from traffik.backends.capacity import entry_size
from traffik.backends.inmemory_steps import whole_number
from traffik.backends.lifecycle import READY
from traffik.backends.window_count import window_count
from traffik.strategies.fixed_window import too_late
from traffik.strategies.state import encode_state

if TYPE_CHECKING:
    import threading

    from traffik.backends.base import ThrottleBackend as _Backend
    from traffik.backends.capacity import Capacity
    from traffik.backends.locks import LocalLock, LocalLockTable
else:
    _Backend = object

__all__ = ["InMemoryStore"]

_SWEEP_CHUNK = 512


class InMemoryStore(_Backend):
    """The dict of `InMemoryBackend` and the storage operations on it, each without an `await`
    between its read and its write."""

    capacity: Capacity
    _data: dict[str, list[Any]]
    _bytes: int
    _mutex: threading.Lock
    _locks: LocalLockTable
    _sweep_keys: list[str]
    _sweep_ms: int
    _next_sweep: int

    # -- internals (synchronous: no await between a read and its write) -------------------
    # An entry is `[value, expires_at_ms or None, size, kept_until_ms]`; time is whole
    # milliseconds (`now_ms`), and an entry is gone from its expiry millisecond on. A decision
    # that refuses sets `kept_until_ms` to when the client's state is whole again: until
    # then, a full store does not evict it (`Capacity`), so a throttled client never gets a
    # fresh budget from a flood of new keys. Only a refusal writes it.

    def _live(self, key: str, now: int) -> list[Any] | None:
        entry = self._data.get(key)
        if entry is not None and entry[1] is not None and entry[1] <= now:
            self._remove(key)
            return None
        return entry

    def _remove(self, key: str) -> list[Any] | None:
        entry = self._data.pop(key, None)
        if entry is not None:
            self._bytes -= entry[2]
        return entry

    def _insert(self, key: str, entry: list[Any], now: int) -> None:
        size = entry_size(key, entry[0])
        entry += (size, 0)
        data = self._data
        if self.capacity.full(len(data), self._bytes, size):
            self.capacity.make_room(self, key, size, now)
        data[key] = entry
        self._bytes += size
        if self._sweep_keys or not 0 < self._next_sweep - now <= self._sweep_ms:
            self._step_sweep(now)  # (a pass is due, or the clock was set back since the last)

    def _step_sweep(self, now: int) -> None:
        if not self._sweep_keys:
            self._next_sweep = now + self._sweep_ms
            self._sweep_keys = list(self._data)
        chunk = self._sweep_keys[-_SWEEP_CHUNK:]
        del self._sweep_keys[-_SWEEP_CHUNK:]
        self._sweep(now, chunk)

    def _sweep(self, now: int, keys: list[str]) -> None:
        data = self._data
        for key in keys:
            entry = data.get(key)
            if entry is not None and entry[1] is not None and entry[1] <= now:
                self._remove(key)

    # -- storage -------------------------------------------------------------------------

    async def get(self, key: str) -> str | None:
        """Read a key's value.

        Args:
            key: The namespaced key.

        Returns:
            The value as a string (a strategy state is encoded), or None when the key is
            missing or expired.
        """
        if self._status != READY:
            await self.ensure()
        entry = self._live(key, self.now_ms())
        if entry is None:
            return None
        value = entry[0]
        if isinstance(value, list):
            return encode_state(value)
        return str(value)

    async def set(self, key: str, value: str, expire: float | None = None) -> None:
        """Store `value` under `key`, replacing any value and expiry.

        Args:
            key: The namespaced key.
            value: The value, stored as a string.
            expire: Seconds until the key expires (at least 1 ms), or None for no expiry.
        """
        if self._status != READY:
            await self.ensure()
        now = self.now_ms()
        expires_at = None if expire is None else now + _ms(expire)
        entry = self._live(key, now)
        if entry is None:
            self._insert(key, [str(value), expires_at], now)
        else:
            entry[0], entry[1] = str(value), expires_at

    async def delete(self, key: str) -> bool:
        """Delete a key.

        Args:
            key: The namespaced key.

        Returns:
            True when a live key was deleted, False when it was missing or expired.
        """
        if self._status != READY:
            await self.ensure()
        return self._live(key, self.now_ms()) is not None and self._remove(key) is not None

    def _add(self, key: str, amount: int, ttl_ms: int | None, now: int) -> list[Any]:
        entry = self._data.get(key)
        if entry is None or (entry[1] is not None and entry[1] <= now):  # new, or expired
            if entry is not None:
                self._remove(key)
            entry = [amount, None if ttl_ms is None else now + ttl_ms]
            self._insert(key, entry, now)
            return entry
        value = entry[0]
        entry[0] = (value if type(value) is int else whole_number(value)) + amount
        if ttl_ms is not None and (entry[1] is None or too_late(entry[1] - now, ttl_ms)):
            entry[1] = now + ttl_ms
        return entry

    async def increment(self, key: str, amount: int = 1) -> int:
        """Add `amount` to a counter; a missing or expired key starts from 0, with no expiry.

        Args:
            key: The namespaced key.
            amount: What to add (negative to subtract).

        Returns:
            The counter's new value.
        """
        if self._status != READY:
            await self.ensure()
        with self._mutex:
            return int(self._add(key, amount, None, self.now_ms())[0])

    async def increment_with_ttl(self, key: str, amount: int = 1, ttl: float = 60) -> int:
        """Add `amount` to a counter, in one step; a key created by this call expires after `ttl`.

        A key that exists and has no expiry is given one; so is a key that would outlive
        `ttl` by more than `AHEAD_MS` (`FixedWindow`'s `too_late`: opened before the clock
        stepped back, or with a longer `ttl`), its count kept.

        Args:
            key: The namespaced key.
            amount: What to add.
            ttl: Seconds until a key created here expires (at least 1 ms).

        Returns:
            The counter's new value, a `WindowCount` that also carries the milliseconds
            until the key is gone (`ttl_ms`).
        """
        if self._status != READY:
            await self.ensure()
        now = self.now_ms()
        with self._mutex:
            entry = self._add(key, amount, round(ttl * 1000) or 1, now)
        count = window_count(entry[0], entry[1] - now)
        count.at = now  # type: ignore[attr-defined]  # (when: `Decision.at`, for refunds)
        return count

    async def expire(self, key: str, seconds: float) -> bool:
        """Set a live key to expire after `seconds`.

        Args:
            key: The namespaced key.
            seconds: Seconds from now until the key expires (at least 1 ms).

        Returns:
            True when the key exists, False when it is missing or expired.
        """
        if self._status != READY:
            await self.ensure()
        now = self.now_ms()
        entry = self._live(key, now)
        if entry is None:
            return False
        entry[1] = now + _ms(seconds)
        return True

    async def ttl(self, key: str) -> float | None:
        """Milliseconds until `key` is gone (it exists for `ttl - 1` more ms).

        Args:
            key: The namespaced key.

        Returns:
            The milliseconds left, or None when the key is missing, expired or immortal.
        """
        if self._status != READY:
            await self.ensure()
        now = self.now_ms()
        entry = self._live(key, now)
        if entry is None or entry[1] is None:
            return None
        return entry[1] - now

    async def multi_get(self, *keys: str) -> list[str | None]:
        """Read several keys (as `get`).

        Args:
            *keys: The namespaced keys.

        Returns:
            Each key's value, or None, in the order given.
        """
        return [await self.get(key) for key in keys]

    async def multi_set(self, items: Mapping[str, str], expire: float | None = None) -> None:
        """Store several values (as `set`).

        Args:
            items: The namespaced keys and their values.
            expire: Seconds until each key expires, or None for no expiry.
        """
        for key, value in items.items():
            await self.set(key, value, expire)

    async def keys(self) -> list[str]:
        """Every live key, namespaced.

        Returns:
            The keys that exist and have not expired.
        """
        if self._status != READY:
            await self.ensure()
        now = self.now_ms()
        return [k for k, e in list(self._data.items()) if e[1] is None or e[1] > now]

    async def scan(self, prefix: str, limit: int | None = None) -> list[str]:
        """The live keys that start with `prefix`; for `python -m traffik` and admin tools.

        Args:
            prefix: A namespaced key prefix (from `get_key`).
            limit: The most keys to return, or None for all.

        Returns:
            The matching keys.
        """
        found = [key for key in await self.keys() if key.startswith(prefix)]
        return found if limit is None else found[:limit]

    def get_lock(self, name: str, ttl: float | None = None, reentrant: bool = False) -> LocalLock:
        """A lock of this process, made on demand and shared by `name`.

        Args:
            name: The lock's name.
            ttl: Seconds after which a held lock is released, or None for never.
            reentrant: Whether the task that holds the lock may acquire it again.

        Returns:
            The lock.
        """
        return self._locks.get(name, ttl, reentrant)


def _ms(seconds: float) -> int:
    """Whole milliseconds for a time to live in seconds: rounded to the nearest, at least 1."""
    return max(round(seconds * 1000), 1)
