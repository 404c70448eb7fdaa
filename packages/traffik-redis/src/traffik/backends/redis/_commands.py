"""`RedisCommands`: `RedisBackend`'s key-value operations and its lock's, each one Redis command."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Mapping
from typing import TYPE_CHECKING, Any, Callable

from redis.exceptions import ResponseError
from traffik.backends.redis import scripts
from traffik.backends.redis._expiry import _gone_in, _px
from traffik.backends.redis.lock import RedisLock
from traffik.backends.store_locks import DEFAULT_LOCK_TTL
from traffik.strategies.state import encode_state

__all__ = ["RedisCommands"]

_SCAN_COUNT = 1000
_GLOB_SPECIALS = str.maketrans({c: "\\" + c for c in "\\*?[]"})


def _text(value: Any) -> Any:
    """A key as text; bytes that are not UTF-8 kept as surrogates (`surrogateescape`)."""
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value


async def _get_string(client: Any, key: str) -> Any:
    """`GET key`, None when the key holds another type (`WRONGTYPE`), as the scripts read it."""
    try:
        return await client.get(key)
    except ResponseError as exc:
        if str(exc).startswith("WRONGTYPE"):
            return None
        raise


def _value(value: Any) -> Any:
    """A stored value as text: text as it is; a strategy's packed state (`scripts.decode_state`)
    as its numbers, comma-separated, as backends storing text keep it (`encode_state`); any
    other bytes with what is not UTF-8 kept as surrogates (`surrogateescape`)."""
    if not isinstance(value, bytes):
        return value
    text = value.decode("utf-8", "surrogateescape")
    if text.isprintable():
        return text
    state = scripts.decode_state(value)
    return text if state is None else encode_state(state)


def _scan(client: Any, cursor: Any, match: str, target: dict[str, Any]) -> Awaitable[Any]:
    return client.scan(cursor, match=match, count=_SCAN_COUNT, **target)


def _unlink(client: Any, keys: list[Any]) -> Awaitable[Any]:
    return client.unlink(*keys)


async def _primaries(client: Any) -> list[Any]:
    """A cluster's primaries, after refreshing its slot map."""
    await client.initialize()
    return list(client.get_primaries())


def _whole(amount: Any) -> int:
    if isinstance(amount, int) and not isinstance(amount, bool):
        return amount
    if isinstance(amount, float) and amount.is_integer():
        return int(amount)
    raise ValueError(
        f"RedisBackend: amount={amount!r} must be a whole number (Redis counters are integers)"
    )


class RedisCommands:
    """`get`, `set`, `increment`, `scan`, `clear`, ...: each one command (or a pipeline, a
    `SCAN` loop) through `RedisBackend._run`, on keys inside the backend's namespace; and
    the two commands of `RedisLock` (`SET NX PX`, and the release script)."""

    cluster: bool
    _prefix: str

    if TYPE_CHECKING:

        def _key(self, key: str) -> str: ...

        async def _run(
            self, operation: str, command: Callable[..., Awaitable[Any]], *args: Any
        ) -> Any: ...

    # -- storage ----------------------------------------------------------------------------

    async def get(self, key: str) -> str | None:
        """Read a key's value (`GET`).

        Args:
            key: The key (namespaced if it is not already).

        Returns:
            The value, or None when the key is missing or holds another type than a string
            (a hash, a list: written by something else); a strategy's packed state as its
            numbers, comma-separated (`1,5,0`), and other bytes that are not UTF-8 kept as
            surrogates.
        """
        key = self._key(key)
        return _value(await self._run("GET", lambda client: _get_string(client, key)))

    async def set(self, key: str, value: str, expire: float | None = None) -> None:
        """Store `value` under `key` (`SET`), replacing any value and expiry.

        Args:
            key: The key (namespaced if it is not already).
            value: The value, stored as a string.
            expire: Seconds until the key is gone, or None for no expiry.
        """
        key, value, px = self._key(key), str(value), None if expire is None else _px(expire)
        await self._run("SET", lambda client: client.set(key, value, px=px))

    async def delete(self, key: str) -> bool:
        """Delete a key (`DEL`).

        Args:
            key: The key (namespaced if it is not already).

        Returns:
            True when the key existed.
        """
        key = self._key(key)
        return bool(await self._run("DEL", lambda client: client.delete(key)))

    async def increment(self, key: str, amount: int = 1) -> int:
        """Add `amount` to a counter (`INCRBY`); a missing key starts from 0, with no expiry.

        Args:
            key: The key (namespaced if it is not already).
            amount: What to add (a whole number).

        Returns:
            The counter's new value.

        Raises:
            ValueError: When `amount` is not a whole number.
        """
        key, amount = self._key(key), _whole(amount)
        return int(await self._run("INCRBY", lambda client: client.incrby(key, amount)))

    async def decrement(self, key: str, amount: int = 1) -> int:
        """Subtract `amount` from a counter (`DECRBY`); a missing key starts from 0.

        Args:
            key: The key (namespaced if it is not already).
            amount: What to subtract (a whole number).

        Returns:
            The counter's new value.

        Raises:
            ValueError: When `amount` is not a whole number.
        """
        key, amount = self._key(key), _whole(amount)
        return int(await self._run("DECRBY", lambda client: client.decrby(key, amount)))

    async def expire(self, key: str, seconds: float) -> bool:
        """Set a key to be gone after `seconds` (`PEXPIRE`).

        Args:
            key: The key (namespaced if it is not already).
            seconds: Seconds from now until the key is gone.

        Returns:
            True when the key exists.
        """
        key, px = self._key(key), _px(seconds)
        return bool(await self._run("PEXPIRE", lambda client: client.pexpire(key, px)))

    async def ttl(self, key: str) -> int | None:
        """Milliseconds until `key` is gone (`PTTL`; it exists for `ttl - 1` more ms).

        Args:
            key: The key (namespaced if it is not already).

        Returns:
            The milliseconds left, or None when the key is missing or immortal.
        """
        key = self._key(key)
        return _gone_in(int(await self._run("PTTL", lambda client: client.pttl(key))))

    async def multi_get(self, *keys: str) -> list[str | None]:
        """Read several keys (`MGET`; on a cluster, one per slot).

        Args:
            *keys: The keys (each namespaced if it is not already).

        Returns:
            Each key's value, or None, in the order given.
        """
        if not keys:
            return []
        names = [self._key(k) for k in keys]
        if self.cluster:
            values = await self._run("MGET", lambda client: client.mget_nonatomic(names))
        else:
            values = await self._run("MGET", lambda client: client.mget(names))
        return [_value(v) for v in values]

    async def multi_set(self, items: Mapping[str, str], expire: float | None = None) -> None:
        """Store several values in one pipeline (a transaction on a single node).

        Args:
            items: The keys (namespaced if they are not already) and their values.
            expire: Seconds until each key is gone, or None for no expiry.
        """
        if not items:
            return
        px = None if expire is None else _px(expire)
        pairs = [(self._key(key), str(value)) for key, value in items.items()]

        def pipeline(client: Any) -> Awaitable[Any]:
            pipe = client.pipeline() if self.cluster else client.pipeline(transaction=True)
            for key, value in pairs:
                pipe.set(key, value, px=px)
            return pipe.execute()

        await self._run("SET (pipeline)", pipeline)

    async def clear(self) -> None:
        """Delete this namespace's keys: `SCAN` + `UNLINK` in batches, on every master of a cluster."""
        async for keys in self._batches(self._prefix.translate(_GLOB_SPECIALS) + "*"):
            await self._run("UNLINK", _unlink, keys)

    async def scan(self, prefix: str, limit: int | None = None) -> list[str]:
        """The keys starting with `prefix` (a namespaced prefix): `SCAN`, every master of a cluster.

        Args:
            prefix: The key prefix (namespaced if it is not already).
            limit: The most keys to return, or None for all.

        Returns:
            The matching keys.
        """
        found: list[str] = []
        async for keys in self._batches(self._key(prefix).translate(_GLOB_SPECIALS) + "*"):
            found.extend(_text(key) for key in keys)
            if limit is not None and len(found) >= limit:
                return found[:limit]
        return found

    async def _batches(self, match: str) -> AsyncIterator[list[Any]]:
        """The keys matching `match`, a `SCAN` batch at a time (on every master of a cluster)."""
        targets: list[dict[str, Any]] = [{}]
        if self.cluster:
            targets = [
                {"target_nodes": node} for node in await self._run("CLUSTER SLOTS", _primaries)
            ]
        for target in targets:
            cursor: Any = 0
            while True:
                cursor, keys = await self._run("SCAN", _scan, cursor, match, target)
                if isinstance(cursor, dict):
                    cursor = next(iter(cursor.values()))
                if keys:
                    yield keys
                if not int(cursor):
                    break

    # -- locks ------------------------------------------------------------------------------

    def get_lock(self, name: str, ttl: float | None = None, reentrant: bool = False) -> RedisLock:
        """A lock shared by every process using the same Redis and lock name.

        Args:
            name: The lock's name (its key is namespaced).
            ttl: Seconds after which a held lock expires, so a crashed holder cannot block
                others forever; None for `DEFAULT_LOCK_TTL` (5 s).
            reentrant: Whether the task that holds the lock may acquire it again.

        Returns:
            The lock.
        """
        return RedisLock(self, name, DEFAULT_LOCK_TTL if ttl is None else ttl, reentrant)

    async def _set_if_absent(self, key: str, token: str, ttl: float | None) -> bool:
        key, px = self._key(key), None if ttl is None else _px(ttl)
        return bool(
            await self._run("SET NX", lambda client: client.set(key, token, nx=True, px=px))
        )

    async def _delete_if_token(self, key: str, token: str) -> int:
        release = scripts.SCRIPTS["lock_release"]
        return int(
            await self._run(release.name, scripts.evalsha, release.sha, (self._key(key),), (token,))
        )
