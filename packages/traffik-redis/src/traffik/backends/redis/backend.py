"""`RedisBackend`: rate-limit state in Redis, one `EVALSHA` per decision, on the server's clock."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Awaitable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from redis.exceptions import NoScriptError, ResponseError
from traffik.backends.base import ThrottleBackend, WindowCount
from traffik.backends.health import StoreCircuit, circuit_policy
from traffik.backends.lanes import counter_decider
from traffik.backends.redis import scripts
from traffik.backends.redis.clients import Link, LoopClients
from traffik.backends.redis.connection import client_source
from traffik.backends.redis.errors import bounded, misconfigured, timed_out, translate
from traffik.backends.redis.lock import Holding, RedisLock
from traffik.backends.redis.steps import ScriptSteps, _fields
from traffik.backends.store_locks import DEFAULT_LOCK_TTL
from traffik.backends.url_options import COMMON_URL_OPTIONS, flag, number, split_url_options, text
from traffik.exceptions import BackendConnectionError, ConfigurationError
from traffik.strategies.base import settled
from traffik.strategies.state import encode_state
from traffik.strategies.steps import IN_PLACE_COUNTER

if TYPE_CHECKING:
    from traffik.clock import Clock
    from traffik.decision import Decision
    from traffik.rates import Rate

__all__ = ["RedisBackend"]

T = TypeVar("T")

_SCAN_COUNT = 1000
_GLOB_SPECIALS = str.maketrans({c: "\\" + c for c in "\\*?[]"})
_COUNTER_ARGS_MAX = 256
"""`increment_with_ttl` arguments kept per backend, one entry per (amount, ttl)."""
_COUNTER = scripts.SCRIPTS["increment_with_ttl"]


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


# Redis deletes a key once its clock has passed the key's expiry (`now > expires_at`), so a
# key whose PTTL is `p` still exists `p` ms from now and is gone one millisecond later. The
# two helpers below account for it here, as `save_state` and `increment_with_ttl` do in the
# scripts; `test_ttl.py` checks all of them against the server's clock.


def _px(seconds: float) -> int:
    """PX for a key that must be gone `seconds` from now: whole ms (nearest) minus the
    millisecond of expiry, and at least 1 (the shortest life Redis gives: gone 2 ms later)."""
    return max(round(seconds * 1000) - 1, 1)


def _gone_in(pttl: int) -> int | None:
    """Milliseconds until a key is gone, from its PTTL; None when missing (-2) or immortal (-1)."""
    return None if pttl < 0 else pttl + 1


def _connection_kwargs(client: Any) -> dict[str, Any]:
    return getattr(getattr(client, "connection_pool", None), "connection_kwargs", {})


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


class RedisBackend(ScriptSteps, ThrottleBackend):
    """Rate-limit state in Redis (single node, Sentinel or Cluster) through redis-py's asyncio client.

    `connection` is a URL (`redis://`, `rediss://`, `unix://`, `redis+cluster://h1:7000,h2:7001`,
    `redis+sentinel://h1:26379/service`; default `redis://localhost:6379/0`), a
    `redis.asyncio.Redis` or `RedisCluster` (used as given, never closed; bytes replies are
    fine), a `redis.asyncio.Sentinel` with `sentinel_service_name=`, a list of `(host, port)`
    cluster nodes, or an async function of no arguments returning a `Redis` or `RedisCluster`
    (awaited on first use in each event loop, once, within `connect_timeout +
    command_timeout`; the backend closes what it returns). A URL's path must be a database
    number, and its query options (like `url_kwargs`, `cluster_kwargs` and
    `sentinel_kwargs`) keywords redis-py takes: anything else fails here. The backend is persistent by default (`persistent=True`): the state is
    shared by every instance of the app, so one instance shutting down (a deploy, a worker
    recycle) resets nothing; pass `persistent=False` to have `backend.lifespan` clear the
    namespace on shutdown. `url_kwargs`, `cluster_kwargs` and `sentinel_kwargs` (passed to
    `master_for`) add client options. traffik 1.2's `lock_type="redis"` is the only lock
    (`"redlock"` was dropped), and its `lock_contention_threshold` (checked, >= 1) changes
    nothing: no built-in strategy takes a lock. Every key the backend writes lies in its namespace (a
    key given without the `namespace:` prefix gets it), so `clear()` finds them all.

    Every built-in strategy decides in one `EVALSHA` whose Lua mirrors the strategy's
    `transition` and `refund`, and so do several items at once (`evaluate_all`: the rates of
    a throttle, throttles combined; `refund_all`), all or nothing. Time is the Redis server's
    `TIME`, so app hosts with skewed clocks agree; given a `clock=` (tests), the scripts use
    that clock instead, while key expiry always follows the server.

    On a cluster, one script's keys must share a hash slot, and one client's keys do (their
    `{client}` hash tag). Items that one script cannot decide (the keys of several clients on
    a cluster, or built-in strategies combined with strategies that have no Lua) are decided
    group by group in order, each group in one step: a slot's items in one script, the items
    with no Lua under locks. When a group refuses, what the groups before it took is given
    back (`refund`) and the groups after it are decided as refused; when one fails (its
    master lost, a timeout), the same is given back before the error. Until then, other
    requests see that partial state: the earlier groups' budgets look smaller than they are,
    so a request may be refused that one atomic step would have admitted. A refund restores
    the budget, not always the exact state (a log gives back its newest units; a fixed
    window that closed in between gives the unit to the next window), and a peek
    (`commit=False`) reads each group at its own instant.

    Clients are built lazily inside the running event loop, one per loop. Each command
    times out after `command_timeout` seconds (connecting: after `connect_timeout`), and no
    operation takes longer than the two together: through the socket timeouts of a
    single-node client built from a URL, through a deadline of the backend's own for other
    clients (clusters, Sentinel, clients given by the user). Failures are
    `BackendConnectionError` (unreachable, timed out) or `BackendError`, naming the server. A
    restarted server is reconnected to and gets its scripts again, with no restart of the
    app. When every connection of the client's pool is busy, further operations wait for one
    (at most `connect_timeout + command_timeout`) instead of failing.

    A store-health circuit (`circuit`, `traffik.backends.health`) is on by default: after a
    few timeouts or connection failures in a row it opens, and operations fail at once with
    `CircuitOpenError` (the throttles' `on_error` answers) while a background `PING` probes the
    server; the first answer closes it. `circuit=False` never refuses; a `CircuitPolicy` sets
    the thresholds. On a cluster, a timeout of one node does not count as the whole cluster's
    silence, so losing one master, whose peers keep answering, does not open it. A server
    unreachable when the backend is entered (`lifespan`) does not stop the app unless
    `fail_fast=True` (see `BackendContext`); one that answers but refuses what the backend
    needs (a database it does not have, an ACL forbidding scripts, no cluster mode behind
    `redis+cluster://`, not Redis at all), or an option redis-py refuses, is a bad setting:
    initialising fails with `ConfigurationError` (`errors.misconfigured`).

    Args:
        connection: The server: a URL, a `redis.asyncio.Redis` or `RedisCluster`, a
            `redis.asyncio.Sentinel`, a list of `(host, port)` cluster nodes, or an async
            function of no arguments returning a client; None for
            `redis://localhost:6379/0`.
        namespace: The prefix of every key this backend writes (a non-empty string).
        clock: A time source (seconds) for the scripts, for tests; None for the Redis
            server's `TIME`.
        connect_timeout: Seconds a connection attempt may take (> 0).
        command_timeout: Seconds a command may take (> 0).
        url_kwargs: Client options for a client built from a URL.
        cluster_kwargs: Client options for a cluster client.
        sentinel_service_name: The service whose master a `Sentinel` connection serves.
        sentinel_kwargs: Client options passed to the Sentinel's `master_for`.
        persistent: Whether the namespace survives the end of a backend context
            (`backend.lifespan`); False clears it on exit.
        lock_type: traffik 1.2's lock type; only `"redis"` is accepted.
        lock_contention_threshold: Accepted from traffik 1.2 and checked (a whole number
            >= 1); changes nothing.
        circuit: The store-health circuit: True for the default policy, False to never
            refuse, or a `CircuitPolicy`.
        **defaults: Defaults for the throttles on this backend that set none
            (`BackendDefaults`): `identifier`, `handle_throttled`, `on_error`, `lock_ttl`,
            `lock_blocking`, `lock_blocking_timeout`, `shadow`, `cache_refusals`; and
            `fail_fast` (`ThrottleBackend`: whether entering the backend raises when the
            server cannot be reached).

    Raises:
        ConfigurationError: When `lock_type` is not `"redis"`, or `connection`,
            `lock_contention_threshold`, a timeout, `circuit`, `namespace` or a default is
            invalid.
        TypeError: When a keyword in `defaults` is unknown.
    """

    default_namespace = "redis"
    caches_refusals = True
    url_options = MappingProxyType(
        {
            **COMMON_URL_OPTIONS,
            "connect_timeout": number,
            "command_timeout": number,
            "sentinel_service_name": text,
            "circuit": flag,
        }
    )
    """Traffik's settings a Redis URL's query may carry, for `from_url`
    (`redis://host:6379/0?namespace=app&command_timeout=0.25`); the query's other items are
    redis-py's (`socket_keepalive`, `health_check_interval`, ...), left in the URL."""

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RedisBackend:
        """Build from a URL: Traffik's settings in its query (`url_options`) become keywords,
        and redis-py reads the rest.

        Raises:
            ConfigurationError: When the query sets one of `url_options` to a value that does
                not convert, or what a keyword sets too (an option redis-py does not take
                fails when the backend is built, as without `from_url`).
        """
        url, options = split_url_options(
            url, cls.__name__, cls.url_options, options, keep_others=True
        )
        return cls(url, **options)

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
        persistent: bool = True,
        lock_type: str = "redis",
        lock_contention_threshold: int = 1,
        circuit: Any = True,
        **defaults: Any,
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
        if (
            isinstance(lock_contention_threshold, bool)
            or not isinstance(lock_contention_threshold, int)
            or lock_contention_threshold < 1
        ):
            raise ConfigurationError(
                f"RedisBackend: lock_contention_threshold={lock_contention_threshold!r} must be a "
                "whole number >= 1"
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
        super().__init__(None, namespace=namespace, persistent=persistent, clock=clock, **defaults)
        self.server = self._source.server
        self.cluster = self._source.cluster
        self._server_clock = clock is None
        self._deadline = self.connect_timeout + self.command_timeout
        self._clients = LoopClients(self._source, self.connect_timeout, self.command_timeout)
        self._holdings: dict[str, Holding] = {}
        self._counter_args: dict[tuple[int, float], tuple[bytes, bytes]] = {}
        self.circuit = StoreCircuit(
            f"Redis at {self.server}", self._ping, circuit_policy("RedisBackend", circuit)
        )
        self.circuits = (self.circuit,)
        # How long a timeout proves the store silent: a cluster's says so of one node only.
        self._silence = 0.0 if self.cluster else self.command_timeout

    def __repr__(self) -> str:
        return f"RedisBackend({self.server!r}, namespace={self.namespace!r})"

    # -- plumbing ---------------------------------------------------------------------------

    def _key(self, key: str) -> str:
        """The Redis key for `key`: inside this namespace, so `clear()` finds everything written."""
        return key if key.startswith(self._prefix) else self._prefix + key

    async def _run(self, operation: str, command: Callable[..., Awaitable[T]], *args: Any) -> T:
        """`await command(client, *args)`: past the store's circuit, through the gate, under the
        deadline when the client needs one, with the scripts loaded again when the server lost
        them, and failures turned into `BackendError`s (timeouts and lost connections counted
        by the circuit). Every operation takes this path."""
        circuit = self.circuit
        if circuit.tripped or not self.initialized:
            await self._ready(operation)
        link = self._clients.get()
        if link is None:
            try:
                link = await self._link()
            except Exception as exc:
                raise translate(exc, self.server, f"{operation} (building the client)") from exc
        gate = link.gate
        if gate.free:
            gate.free -= 1
        else:
            try:
                await bounded(gate.wait(), self._deadline)
            except Exception as exc:
                raise translate(
                    exc, self.server, f"{operation} (waiting for a free connection)"
                ) from exc
        client = link.client
        try:
            try:
                if link.deadline:
                    result = await bounded(command(client, *args), self._deadline)
                else:
                    result = await command(client, *args)
            except NoScriptError:  # a restarted server, or a new primary: our scripts are gone
                result = await bounded(self._reloaded(client, command, args), self._deadline)
        except Exception as exc:
            error = translate(exc, self.server, operation)
            if isinstance(error, BackendConnectionError):
                circuit.failed(error, self._silence if timed_out(exc) else 0.0)
            raise error from exc
        finally:
            gate.release()
        if circuit.failures:
            circuit.answered()
        return result

    async def _ready(self, operation: str) -> None:
        """What an operation needs first: past the store's circuit, and initialised (which
        builds the client: a connection factory tells only then whether it is a cluster's)."""
        if self.circuit.tripped:
            self.circuit.check(operation)
        if not self.initialized:
            await self.ensure()

    async def _reloaded(self, client: Any, command: Callable[..., Awaitable[T]], args: Any) -> T:
        """`command` again, after `SCRIPT LOAD` of every script."""
        await scripts.load_all(client, self.cluster)
        return await command(client, *args)

    # -- lifecycle --------------------------------------------------------------------------

    async def _link(self) -> Link:
        """Build the running loop's client (a connection factory tells only now whether it
        is a cluster's)."""
        link = await self._clients.build()
        self.cluster = self._source.cluster
        self._silence = 0.0 if self.cluster else self.command_timeout
        return link

    async def _open(self) -> None:
        operation = "building the client"
        client = None
        try:
            client = (self._clients.get() or await self._link()).client
            operation = "SCRIPT LOAD"
            await bounded(scripts.load_all(client, self.cluster), self._deadline)
        except Exception as exc:
            await self._clients.aclose()
            error = translate(exc, self.server, operation)
            if client is not None:  # (a connection factory failing is an outage: it may pass)
                database = _connection_kwargs(client).get("db", 0)
                wrong = misconfigured(exc, error, self.server, database)
                if wrong is not None:  # a bad setting, not an outage: nothing to probe
                    raise wrong from exc
            failure = BackendConnectionError(f"could not initialise {self!r}: {error}")
            self.circuit.failed(failure, self._silence if timed_out(exc) else 0.0)
            raise failure from exc
        self.connection = client

    async def _close(self) -> None:
        self.connection = None
        self._holdings.clear()
        await self._clients.aclose(drain=self._deadline)  # (operations in flight finish first)

    async def _ping(self) -> bool:
        return bool(await self._run("PING", lambda client: client.ping()))

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

    async def increment_with_ttl(self, key: str, amount: int = 1, ttl: float = 60) -> int:
        """INCRBY plus a TTL when the key has none, in one atomic script; never leaves an immortal counter.

        Args:
            key: The key (namespaced if it is not already).
            amount: What to add (a whole number).
            ttl: Seconds until a key without a TTL is gone.

        Returns:
            The counter's new value, a `WindowCount` that also carries the milliseconds
            until the key is gone (`ttl_ms`).

        Raises:
            ValueError: When `amount` is not a whole number.
        """
        args = self._counter_args.get((amount, ttl)) if type(amount) is int else None
        if args is None:
            whole = _whole(amount)
            args = (str(whole).encode(), str(_px(ttl)).encode())
            if len(self._counter_args) >= _COUNTER_ARGS_MAX:
                del self._counter_args[next(iter(self._counter_args))]
            self._counter_args[(whole, ttl)] = args
        key = self._key(key)
        reply = await self._run(_COUNTER.name, scripts.evalsha, _COUNTER.sha, (key,), args)
        count, gone_in = reply.split(b"|" if type(reply) is bytes else "|")
        return WindowCount(int(count), int(gone_in))

    def waited_decider(
        self, strategy: Any, rate: Rate, cost: int, kind: int
    ) -> Callable[[str], Awaitable[Decision]] | None:
        """`strategy.decide` made once for a throttle's hot path (`ScriptSteps.waited_decider`
        for a state). `FixedWindow`'s counter: `increment_with_ttl`'s `EVALSHA`, its
        arguments made once; concurrent hits on one key (in one event loop) that arrive while
        one is in flight add up in the next one, each hit's count the one it would have
        reached alone, in arrival order (`traffik.backends.lanes`).

        A decision goes through `strategy.decide` instead while a test replaced
        `increment_with_ttl` on this instance."""
        if kind != IN_PLACE_COUNTER:
            return super().waited_decider(strategy, rate, cost, kind)
        if settled(strategy, rate, cost) is not None:
            return None
        name, sha = _COUNTER.name, _COUNTER.sha
        px = str(_px(rate.expire / 1000)).encode()  # (as `FixedWindow.decide` asks)
        prefix, suffix, own = self._prefix, strategy.suffix, self.__dict__
        strategy_decide = strategy.decide

        async def count(counter: str, amount: int) -> tuple[int, float | None]:
            reply = await self._run(name, scripts.evalsha, sha, (counter,), (b"%d" % amount, px))
            total, gone_in = _fields(reply)
            return int(total), int(gone_in)

        counted = counter_decider(count, rate, cost)

        async def decide(key: str) -> Decision:
            if "increment_with_ttl" in own:
                return await strategy_decide(key, rate, self, cost)
            return await counted(prefix + key + suffix)

        return decide

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
