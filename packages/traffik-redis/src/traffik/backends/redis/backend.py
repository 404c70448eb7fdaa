"""`RedisBackend`: rate-limit state in Redis, one `EVALSHA` per decision, on the server's clock."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from redis.exceptions import NoScriptError
from traffik.backends.base import ThrottleBackend
from traffik.backends.health import StoreCircuit, circuit_policy
from traffik.backends.redis import _access, scripts
from traffik.backends.redis._commands import RedisCommands
from traffik.backends.redis._counter import RedisCounter
from traffik.backends.redis.clients import Link, LoopClients
from traffik.backends.redis.connection import client_source
from traffik.backends.redis.errors import bounded, misconfigured, timed_out, translate
from traffik.backends.redis.lock import Holding
from traffik.backends.url_options import COMMON_URL_OPTIONS, flag, number, split_url_options, text
from traffik.exceptions import BackendConnectionError, BackendError, ConfigurationError

if TYPE_CHECKING:
    from traffik.clock import Clock

__all__ = ["RedisBackend"]

T = TypeVar("T")
_EVALSHA = scripts.evalsha


def _connection_kwargs(client: Any) -> dict[str, Any]:
    return getattr(getattr(client, "connection_pool", None), "connection_kwargs", {})


def _positive(owner: str, name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ConfigurationError(f"{owner}: {name}={value!r} must be a number of seconds > 0")
    return float(value)


class RedisBackend(RedisCounter, RedisCommands, ThrottleBackend):
    """Rate-limit state in Redis (single node, Sentinel or Cluster) through redis-py's asyncio client.

    `connection` is a URL (`redis://`, `rediss://`, `unix://`, `redis+cluster://h1:7000,h2:7001`,
    `redis+sentinel://h1:26379/service`; default `redis://localhost:6379/0`), a
    `redis.asyncio.Redis` or `RedisCluster` (used as given, never closed; bytes replies are
    fine), a `redis.asyncio.Sentinel` with `sentinel_service_name=`, a list of `(host, port)`
    cluster nodes, or an async function of no arguments returning a `Redis` or `RedisCluster`
    (awaited on first use in each event loop, once, within `connect_timeout +
    command_timeout`; the backend closes what it returns). A URL's path must be a database
    number, and its query options (like `url_kwargs`, `cluster_kwargs` and
    `sentinel_kwargs`) keywords redis-py takes, with values it accepts (`max_connections`
    >= 1, `protocol` 2 or 3, timeouts > 0: `_options.check_values`): anything else fails
    here, as do `sentinel_service_name` and `sentinel_kwargs` with a connection that is no
    Sentinel's. The backend is persistent by default (`persistent=True`): the state is
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
    needs (a database it does not have, an ACL refusing a command or key the backend needs or
    a command renamed away: the start proves each, `_access`; no cluster mode behind
    `redis+cluster://`, a cluster node behind a single-server URL, a plain Redis or an
    unknown service behind `redis+sentinel://`, not Redis at all: memcached or a web server,
    named), or an option redis-py refuses, is a bad setting: initialising fails with
    `ConfigurationError` (`_access`, `errors.misconfigured`, `_addresses`). `initialize()`
    itself raises `BackendConnectionError` for an unreachable server, whatever `fail_fast`.
    A TLS file option naming a path that is not there, or a database in both a URL's path
    and its query, fails here, when the backend is built.

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
                not convert, or what a keyword sets too (an option redis-py does not take, or
                a value it would refuse, fails when the backend is built, as without
                `from_url`; a misspelt name is matched against `url_options` first).
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
            settings=self.url_options,
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
                raise self._translate(exc, f"{operation} (building the client)") from exc
        gate = link.gate
        if gate.free:
            gate.free -= 1
        else:
            try:
                await bounded(gate.wait(), self._deadline)
            except Exception as exc:
                raise self._translate(exc, f"{operation} (waiting for a free connection)") from exc
        client = link.client
        if command is _EVALSHA and link.lane is not None:
            command = link.lane.evalsha  # (the same command, on the lane's connection)
        try:
            try:
                if link.deadline:
                    result = await bounded(command(client, *args), self._deadline)
                else:
                    result = await command(client, *args)
            except NoScriptError:  # a restarted server, or a new primary: our scripts are gone
                result = await bounded(self._reloaded(client, command, args), self._deadline)
        except Exception as exc:
            error = self._translate(exc, operation)
            if isinstance(error, BackendConnectionError):
                circuit.failed(error, self._silence if timed_out(exc) else 0.0)
            raise error from exc
        finally:
            gate.release()
        if circuit.failures:
            circuit.answered()
        return result

    def _translate(self, exc: Exception, operation: str) -> BackendError:
        """`errors.translate` for this backend: its server, its keys (what an ACL must grant)
        and the socket timeouts its connection's options set (which bound its operations
        unless the loop's client needs the backend's deadline)."""
        link = self._clients.get()
        return translate(
            exc,
            self.server,
            operation,
            namespace=self._prefix[:-1],
            socket_timeouts=self._source.socket_timeouts,
            deadline=link is None or link.deadline,
        )

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
            # (the scripts loaded, and the commands they and the backend run proved: _access)
            check = _access.check(
                client,
                cluster=self.cluster,
                prefix=self._prefix,
                server=self.server,
                namespace=self._prefix[:-1],
                database=_connection_kwargs(client).get("db", 0),
            )
            await bounded(check, self._deadline)
        except ConfigurationError:  # (options redis-py refused, a factory returning no client,
            await self._clients.aclose()  # a command refused, a cluster node: _access.check)
            raise
        except Exception as exc:
            await self._clients.aclose()
            error = self._translate(exc, operation)
            wrong = await self._wrong_address(exc, operation)
            if wrong is not None:
                raise wrong from exc
            if client is not None:  # (a connection factory failing is an outage: it may pass)
                database = _connection_kwargs(client).get("db", 0)
                wrong = misconfigured(exc, error, self.server, database)
                if wrong is not None:  # a bad setting, not an outage: nothing to probe
                    raise wrong from exc
            failure = BackendConnectionError(f"could not initialise {self!r}: {error}")
            self.circuit.failed(failure, self._silence if timed_out(exc) else 0.0)
            raise failure from exc
        self.connection = client

    async def _wrong_address(self, exc: Exception, operation: str) -> ConfigurationError | None:
        """The `ConfigurationError` to raise when opening failed (`exc`, in `operation`)
        because the URL's address is not what it names (another service answers there, a
        plain Redis behind `redis+sentinel://`: `_addresses`); None for an outage or another
        error. A timeout is not asked about: a silent server tells nothing."""
        check = self._source.check
        if check is None or timed_out(exc):
            return None
        try:
            found = await bounded(check(self.connect_timeout), self._deadline)
        except Exception:
            return None
        if found is None:
            return None
        return ConfigurationError(
            f"Redis at {self.server}: {found} ({operation} failed: {type(exc).__name__})"
        )

    async def _close(self) -> None:
        self.connection = None
        self._holdings.clear()
        await self._clients.aclose(drain=self._deadline)  # (operations in flight finish first)

    async def _ping(self) -> bool:
        return bool(await self._run("PING", lambda client: client.ping()))
