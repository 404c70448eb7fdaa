"""`RedisBackend`: rate-limit state in Redis, one `EVALSHA` per decision, on the server's clock."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Mapping
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from traffik.backends.base import ThrottleBackend, WindowCount
from traffik.backends.redis import scripts
from traffik.backends.redis.clients import LoopClients
from traffik.backends.redis.connection import client_source
from traffik.backends.redis.errors import bounded, translate
from traffik.backends.redis.lock import Holding, RedisLock
from traffik.backends.redis.native import native_script
from traffik.decision import Decision
from traffik.exceptions import BackendConnectionError, BackendError, ConfigurationError

if TYPE_CHECKING:
    from traffik.clock import Clock
    from traffik.rates import Rate
    from traffik.strategies.base import StateStrategy

__all__ = ["RedisBackend"]

T = TypeVar("T")

_SCAN_COUNT = 1000
_GLOB_SPECIALS = str.maketrans({c: "\\" + c for c in "\\*?[]"})


def _text(value: Any) -> Any:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _number(value: float) -> str:
    return repr(float(value))


def _ms(seconds: float) -> int:
    """Whole milliseconds for PX/PEXPIRE: rounded up, at least 1."""
    return max(1, math.ceil(seconds * 1000))


def _whole(amount: Any) -> int:
    if isinstance(amount, int) and not isinstance(amount, bool):
        return amount
    if isinstance(amount, float) and amount.is_integer():
        return int(amount)
    raise ValueError(
        f"RedisBackend: amount={amount!r} must be a whole number (Redis counters are integers)"
    )


def _positive(owner: str, name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ConfigurationError(f"{owner}: {name}={value!r} must be a number of seconds > 0")
    return float(value)


class RedisBackend(ThrottleBackend):
    """Rate-limit state in Redis (single node, Sentinel or Cluster) through redis-py's asyncio client.

    `connection` is a URL (`redis://`, `rediss://`, `unix://`, `redis+cluster://h1:7000,h2:7001`,
    `redis+sentinel://h1:26379/service`; default `redis://localhost:6379/0`), a
    `redis.asyncio.Redis` or `RedisCluster` (used as given, never closed; bytes replies are
    fine), a `redis.asyncio.Sentinel` with `sentinel_service_name=`, or a list of `(host, port)`
    cluster nodes. `url_kwargs`, `cluster_kwargs` and `sentinel_kwargs` (passed to
    `master_for`) add client options. Every key the backend writes lies in its namespace (a
    key given without the `namespace:` prefix gets it), so `clear()` finds them all.

    Every built-in strategy decides in one `EVALSHA` whose Lua mirrors the strategy's
    `transition`. Time is the Redis server's `TIME`, so app hosts with skewed clocks agree;
    given a `clock=` (tests), the script uses that clock instead, while key expiry always
    follows the server. Clients are built lazily inside the running event loop, one per
    loop. Each command times out after `command_timeout` seconds (connecting: after
    `connect_timeout`), and no operation takes longer than the two together; failures are
    `BackendConnectionError` (unreachable, timed out) or `BackendError`, naming the server.
    A restarted server is reconnected to and gets its scripts again, with no restart of the app.
    """

    default_namespace = "redis"

    def __init__(
        self,
        connection: Any = None,
        *,
        namespace: str = "redis",
        clock: Clock | None = None,
        connect_timeout: float = 2.0,
        command_timeout: float = 1.0,
        url_kwargs: Mapping[str, Any] | None = None,
        cluster_kwargs: Mapping[str, Any] | None = None,
        sentinel_service_name: str | None = None,
        sentinel_kwargs: Mapping[str, Any] | None = None,
        identifier: Callable[..., Any] | None = None,
        handle_throttled: Callable[..., Any] | None = None,
        persistent: bool = False,
        on_error: Any = "throttle",
        lock_type: str = "redis",
        lock_ttl: float | None = None,
        lock_blocking: bool = True,
        lock_blocking_timeout: float | None = None,
    ) -> None:
        if lock_type == "redlock":
            raise ConfigurationError(
                "RedisBackend: lock_type='redlock' was dropped (it needed pottery); "
                "use the default lock_type='redis', a single-instance lock with a token"
            )
        if lock_type != "redis":
            raise ConfigurationError(
                f"RedisBackend: lock_type={lock_type!r} is unknown; use 'redis'"
            )
        self.connect_timeout = _positive("RedisBackend", "connect_timeout", connect_timeout)
        self.command_timeout = _positive("RedisBackend", "command_timeout", command_timeout)
        self._source = client_source(
            "redis://localhost:6379/0" if connection is None else connection,
            connect_timeout=self.connect_timeout,
            command_timeout=self.command_timeout,
            url_kwargs=url_kwargs,
            cluster_kwargs=cluster_kwargs,
            sentinel_service_name=sentinel_service_name,
            sentinel_kwargs=sentinel_kwargs,
        )
        super().__init__(
            None,
            namespace=namespace,
            identifier=identifier,
            handle_throttled=handle_throttled,
            persistent=persistent,
            on_error=on_error,
            clock=clock,
            lock_ttl=lock_ttl,
            lock_blocking=lock_blocking,
            lock_blocking_timeout=lock_blocking_timeout,
        )
        self.server = self._source.server
        self.cluster = self._source.cluster
        self._server_clock = clock is None
        self._deadline = self.connect_timeout + self.command_timeout
        self._clients = LoopClients(self._source)
        self._holdings: dict[str, Holding] = {}

    def __repr__(self) -> str:
        return f"RedisBackend({self.server!r}, namespace={self.namespace!r})"

    # -- plumbing ---------------------------------------------------------------------------

    async def _client(self) -> Any:
        if not self.initialized:
            await self.ensure()
        return self._clients.get()

    def _key(self, key: str) -> str:
        """The Redis key for `key`: inside this namespace, so `clear()` finds everything written."""
        return key if key.startswith(self._prefix) else self._prefix + key

    async def _call(self, operation: str, awaitable: Awaitable[T]) -> T:
        """Await one Redis operation under the deadline, turning failures into `BackendError`s."""
        try:
            return await bounded(awaitable, self._deadline)
        except Exception as exc:
            raise translate(exc, self.server, operation) from exc

    # -- lifecycle --------------------------------------------------------------------------

    async def _open(self) -> None:
        client = self._clients.get()
        try:
            await self._call("SCRIPT LOAD", scripts.load_all(client, self.cluster))
        except BackendError as exc:
            await self._clients.aclose()
            raise BackendConnectionError(f"could not initialise {self!r}: {exc}") from exc
        self.connection = client

    async def _close(self) -> None:
        self.connection = None
        self._holdings.clear()
        await self._clients.aclose()

    async def _ping(self) -> bool:
        client = self._clients.get()
        return bool(await self._call("PING", client.ping()))

    # -- storage ----------------------------------------------------------------------------

    async def get(self, key: str) -> str | None:
        client = await self._client()
        return _text(await self._call("GET", client.get(self._key(key))))

    async def set(self, key: str, value: str, expire: float | None = None) -> None:
        client = await self._client()
        px = None if expire is None else _ms(expire)
        await self._call("SET", client.set(self._key(key), str(value), px=px))

    async def delete(self, key: str) -> bool:
        client = await self._client()
        return bool(await self._call("DEL", client.delete(self._key(key))))

    async def increment(self, key: str, amount: int = 1) -> int:
        client = await self._client()
        return int(await self._call("INCRBY", client.incrby(self._key(key), _whole(amount))))

    async def decrement(self, key: str, amount: int = 1) -> int:
        client = await self._client()
        return int(await self._call("DECRBY", client.decrby(self._key(key), _whole(amount))))

    async def expire(self, key: str, seconds: float) -> bool:
        client = await self._client()
        return bool(await self._call("PEXPIRE", client.pexpire(self._key(key), _ms(seconds))))

    async def ttl(self, key: str) -> float | None:
        client = await self._client()
        pttl = int(await self._call("PTTL", client.pttl(self._key(key))))
        return None if pttl < 0 else float(pttl)

    async def increment_with_ttl(self, key: str, amount: int = 1, ttl: float = 60) -> int:
        """INCRBY plus a TTL when the key has none, in one atomic script; never leaves an immortal counter."""
        client = await self._client()
        count, pttl = await self._call(
            "INCRBY with TTL",
            scripts.run(
                client,
                scripts.SCRIPTS["increment_with_ttl"],
                self._key(key),
                [_whole(amount), _ms(ttl)],
            ),
        )
        return WindowCount(int(count), float(pttl))

    async def multi_get(self, *keys: str) -> list[str | None]:
        if not keys:
            return []
        client = await self._client()
        if self.cluster:
            values = await self._call("MGET", client.mget_nonatomic([self._key(k) for k in keys]))
        else:
            values = await self._call("MGET", client.mget([self._key(k) for k in keys]))
        return [_text(v) for v in values]

    async def multi_set(self, items: Mapping[str, str], expire: float | None = None) -> None:
        if not items:
            return
        client = await self._client()
        px = None if expire is None else _ms(expire)
        pipe = client.pipeline() if self.cluster else client.pipeline(transaction=True)
        for key, value in items.items():
            pipe.set(self._key(key), str(value), px=px)
        await self._call("SET (pipeline)", pipe.execute())

    async def clear(self) -> None:
        """Delete this namespace's keys: `SCAN` + `UNLINK` in batches, on every master of a cluster."""
        client = await self._client()
        match = self._prefix.translate(_GLOB_SPECIALS) + "*"
        if not self.cluster:
            await self._scan_unlink(client, match, {})
            return
        await self._call("CLUSTER SLOTS", client.initialize())
        for node in client.get_primaries():
            await self._scan_unlink(client, match, {"target_nodes": node})

    async def _scan_unlink(self, client: Any, match: str, target: dict[str, Any]) -> None:
        cursor: Any = 0
        while True:
            cursor, keys = await self._call(
                "SCAN", client.scan(cursor, match=match, count=_SCAN_COUNT, **target)
            )
            if isinstance(cursor, dict):
                cursor = next(iter(cursor.values()))
            if keys:
                await self._call("UNLINK", client.unlink(*keys))
            if not int(cursor):
                return

    # -- locks ------------------------------------------------------------------------------

    def get_lock(self, name: str, ttl: float | None = None, reentrant: bool = False) -> RedisLock:
        return RedisLock(self, name, ttl, reentrant)

    async def _set_if_absent(self, key: str, token: str, px: int | None) -> bool:
        client = await self._client()
        return bool(await self._call("SET NX", client.set(self._key(key), token, nx=True, px=px)))

    async def _delete_if_token(self, key: str, token: str) -> int:
        client = await self._client()
        return int(
            await self._call(
                "lock release",
                scripts.run(client, scripts.SCRIPTS["lock_release"], self._key(key), [token]),
            )
        )

    # -- the decision step ------------------------------------------------------------------

    async def evaluate(
        self, key: str, strategy: StateStrategy, rate: Rate, cost: float, *, commit: bool = True
    ) -> Decision:
        """One `EVALSHA` of the strategy's script; a strategy with no script takes the generic locked path."""
        script = native_script(strategy)
        if script is None:
            return await super().evaluate(key, strategy, rate, cost, commit=commit)
        client = await self._client()
        args = [
            "" if self._server_clock else _number(self.clock() * 1000.0),
            "1" if commit else "0",
            *map(_number, strategy.script_args(rate, cost)),
        ]
        allowed, wait, remaining, reset = await self._call(
            script.name, scripts.run(client, script, self._key(key), args)
        )
        return Decision(
            allowed in ("1", b"1"), float(wait), int(float(remaining)), float(reset), rate.limit
        )
