"""`MemcachedCommands`: `MemcachedBackend`'s key-value operations, each on the node that holds the key."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Callable, Optional

from traffik.backends.memcached._client import Flagged, NodeClient
from traffik.backends.memcached._counters import ATTEMPTS, increment, window_of
from traffik.backends.memcached._expiry import exptime
from traffik.backends.memcached._lock import DEFAULT_LOCK_TTL, Hold, MemcachedLock
from traffik.backends.memcached._node import Node, fetch
from traffik.backends.memcached._options import whole
from traffik.backends.memcached._scan import scan
from traffik.backends.memcached._sliding import MARKER_FLAG, describe_marker, forget_windows
from traffik.backends.memcached._window import WINDOW_FLAG, pack, window_end
from traffik.exceptions import BackendConnectionError, BackendError

if TYPE_CHECKING:
    from aiomcache.pool import Connection

__all__ = ["MemcachedCommands"]


def _text(raw: bytes | Flagged | None, now: int) -> Optional[str]:
    if raw is None:
        return None
    window = window_of(raw)
    if window is not None:
        end, count = window
        return str(count) if end > now else None
    if isinstance(raw, Flagged):
        if raw.flags == MARKER_FLAG:  # (`get` describes it instead)
            return None
        raw = raw.value
    stripped = raw.rstrip(b" ")
    if stripped.isdigit():  # `decr` may leave a shorter number padded with spaces
        return stripped.decode("ascii")
    return raw.decode("utf-8", "replace")


class MemcachedCommands:
    """`get`, `set`, `delete`, `increment`, `expire`, `ttl`, `multi_get`, `multi_set`,
    `scan`, `clear` and `get_lock`: the operations on keys, each run on the node that
    `_locate` picks for its key (the nodes in parallel for several keys)."""

    namespace: str
    now_ms: Callable[[], int]
    _prefix: str
    _nodes: list[Node]
    _held: dict[str, Hold]
    _full: dict[bytes, int]

    if TYPE_CHECKING:

        @property
        def initialized(self) -> bool: ...

        async def ensure(self) -> None: ...

        async def _locate(self, key: str) -> tuple[Node, bytes]: ...

    async def get(self, key: str) -> Optional[str]:
        """Read a key's value.

        Args:
            key: The key.

        Returns:
            The value, or None when the key is missing.
        """
        node, mkey = await self._locate(key)
        raw = await node.run(lambda client, conn: client.get_on(conn, mkey), "get")
        if isinstance(raw, Flagged) and raw.flags == MARKER_FLAG:
            # a `SlidingWindowCounter` key: its state is in its window counters (`_sliding`)
            return await node.run(describe_marker(mkey, raw, self.now_ms), "get")
        return _text(raw, self.now_ms())

    async def set(self, key: str, value: str, expire: Optional[float] = None) -> None:
        """Store `value` under `key`, replacing any value and expiry.

        Args:
            key: The key.
            value: The value, stored as a string.
            expire: Seconds until the key expires (rounded up to whole seconds, plus one),
                or None for no expiry.
        """
        node, mkey = await self._locate(key)
        data, expiry = str(value).encode("utf-8", "surrogatepass"), exptime(expire)
        await node.run(
            lambda client, conn: client.store_on(conn, b"set", mkey, data, expiry), "set"
        )

    async def delete(self, key: str) -> bool:
        """Delete a key; a `SlidingWindowCounter` key's window counters go with it (`_sliding`).

        Args:
            key: The key.

        Returns:
            True when the key (or one of its window counters) existed.
        """
        node, mkey = await self._locate(key)
        self._full.pop(mkey, None)
        return await node.run(forget_windows(mkey, self.now_ms), "delete")

    async def increment(self, key: str, amount: int = 1) -> int:
        """Add `amount` to a counter.

        Args:
            key: The key.
            amount: What to add (a whole number).

        Returns:
            The counter's new value.
        """
        amount = whole(amount)
        node, mkey = await self._locate(key)
        return await node.run(increment(mkey, amount), "increment")

    async def expire(self, key: str, seconds: float) -> bool:
        """Set a key to expire after `seconds` (a window counter's window end moves too).

        Args:
            key: The key.
            seconds: Seconds from now until the key expires.

        Returns:
            True when the key exists.

        Raises:
            BackendError: When a window counter's compare-and-swap loses `ATTEMPTS` races in
                a row.
        """
        node, mkey = await self._locate(key)
        now, expiry = self.now_ms(), exptime(seconds)

        async def run(client: NodeClient, conn: Connection) -> bool:
            for _ in range(ATTEMPTS):
                raw, token = await client.gets_on(conn, mkey)
                if raw is None:
                    return False
                window = window_of(raw)
                if window is None:
                    return await client.touch_on(conn, mkey, expiry)
                count = window[1]
                moved = Flagged(b"%d" % pack(window_end(now, seconds), count), WINDOW_FLAG)
                if await client.store_on(conn, b"cas", mkey, moved, expiry, token):
                    return True
            raise BackendError(f"expire: lost {ATTEMPTS} compare-and-swap races in a row")

        return await node.run(run, "expire")

    async def ttl(self, key: str) -> Optional[float]:
        """Milliseconds until a window counter's window closes; None for other keys (memcached
        does not report TTLs).

        Args:
            key: The key.

        Returns:
            The milliseconds left, or None for a closed window or another key.
        """
        node, mkey = await self._locate(key)
        raw = await node.run(lambda client, conn: client.get_on(conn, mkey), "ttl")
        window = None if raw is None else window_of(raw)
        if window is None:
            return None
        left = window[0] - self.now_ms()
        return left if left > 0 else None

    async def multi_get(self, *keys: str) -> list[Optional[str]]:
        """Read several keys.

        Args:
            *keys: The keys.

        Returns:
            Each key's value, or None, in the order given.
        """
        located = [await self._locate(key) for key in keys]
        values = await fetch(located, "multi_get") if located else []
        now = self.now_ms()
        return [_text(raw, now) for raw in values]

    async def multi_set(self, items: Mapping[str, str], expire: Optional[float] = None) -> None:
        """Store several values, the nodes in parallel.

        Args:
            items: The keys and their values (stored as strings).
            expire: Seconds until each key expires, or None for no expiry.
        """
        expiry = exptime(expire)
        by_node: dict[Node, list[tuple[bytes, bytes]]] = {}
        for key, value in items.items():
            node, mkey = await self._locate(key)
            by_node.setdefault(node, []).append((mkey, str(value).encode("utf-8", "surrogatepass")))

        def store(pairs: list[tuple[bytes, bytes]]) -> Callable[[NodeClient, Connection], Any]:
            async def run(client: NodeClient, conn: Connection) -> None:
                for mkey, data in pairs:
                    await client.store_on(conn, b"set", mkey, data, expiry)

            return run

        await asyncio.gather(
            *(node.run(store(pairs), "multi_set") for node, pairs in by_node.items())
        )

    async def scan(self, prefix: str, limit: Optional[int] = None) -> list[str]:
        """The keys starting with `prefix` (a namespaced prefix), from `lru_crawler metadump`.

        Keys stored hashed (longer than 250 bytes, or with spaces, control or non-ASCII
        characters) cannot be listed: the result's `hidden` counts those that may match
        (`_scan.Listing`), so a caller can say what it could not see.

        Args:
            prefix: The namespaced key prefix.
            limit: The most keys to return, or None for all.

        Returns:
            The matching keys.
        """
        if not self.initialized:
            await self.ensure()
        return await scan(self._nodes, self._prefix, prefix, limit)

    async def clear(self) -> None:
        """Move every node to a new namespace generation; other namespaces are untouched.

        A node that fails leaves its keys as they were: a `BackendConnectionError` when every
        node that failed could not be reached (timed out, refused), else a `BackendError`."""
        if not self.initialized:
            await self.ensure()
        results = await asyncio.gather(
            *(node.bump_generation() for node in self._nodes), return_exceptions=True
        )
        failed = [
            (node, exc) for node, exc in zip(self._nodes, results) if isinstance(exc, BaseException)
        ]
        if failed:
            names = ", ".join(node.name for node, _ in failed)
            unreachable = all(isinstance(exc, BackendConnectionError) for _, exc in failed)
            raise (BackendConnectionError if unreachable else BackendError)(
                f"clearing namespace {self.namespace!r} failed on {names}; its keys there are not cleared: "
                f"{failed[0][1]}"
            ) from failed[0][1]

    def get_lock(
        self, name: str, ttl: Optional[float] = None, reentrant: bool = False
    ) -> MemcachedLock:
        """A lock in memcached; it always has a time to live (`DEFAULT_LOCK_TTL` seconds by default).

        Args:
            name: The lock's name.
            ttl: Seconds after which a held lock expires; None for `DEFAULT_LOCK_TTL`.
            reentrant: Whether the task that holds the lock may acquire it again.

        Returns:
            The lock.
        """
        return MemcachedLock(
            self._locate, self._held, name, DEFAULT_LOCK_TTL if ttl is None else ttl, reentrant
        )
