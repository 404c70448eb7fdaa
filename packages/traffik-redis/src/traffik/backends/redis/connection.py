"""What `RedisBackend(connection=...)` accepts, checked up front and turned into a client recipe."""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Collection, Mapping
from typing import Any, Callable, Optional
from urllib.parse import parse_qs, unquote, urlsplit

from redis.asyncio import Redis, RedisCluster, Sentinel
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.connection import Connection, parse_url
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from traffik.backends.redis._addresses import not_redis, not_sentinels
from traffik.backends.redis._options import (
    CLUSTER,
    SENTINEL,
    SENTINEL_MASTER,
    Options,
    check_files,
    check_options,
    check_values,
    single_node,
)
from traffik.backends.redis._pool import ConnectionPool, SentinelConnectionPool
from traffik.backends.redis.errors import bounded
from traffik.backends.url_options import redact_text, redact_url
from traffik.exceptions import ConfigurationError

__all__ = ["SCHEMES", "Built", "ClientSource", "client_source", "needs_deadline"]

SCHEMES = ("redis", "rediss", "unix", "redis+cluster", "redis+sentinel")

Built = tuple[Any, list[Any]]
"""A client, and the clients to close along with it."""
Check = Callable[[float], Awaitable[Optional[str]]]
"""What is wrong with the source's addresses (`_addresses`), asked within a timeout once opening
failed: a message, or None."""

_HOST = re.compile(r"\[([^\]]+)\](?::(\d+))?|([^:\[\]/]+)(?::(\d+))?")
_USAGE = (
    "pass a URL ('redis://host:6379/0', 'rediss://…', 'unix:///path/redis.sock', "
    "'redis+cluster://h1:7000,h2:7001', 'redis+sentinel://h1:26379/service'), "
    "a redis.asyncio.Redis or RedisCluster client, a redis.asyncio.Sentinel with "
    "sentinel_service_name=, a list of (host, port) cluster nodes, or an async function "
    "of no arguments that returns a client"
)


class ClientSource:
    """How the backend gets its client: `await build()` one inside the running loop.

    `server` names the server in error messages (never with a password). An `owned`
    source builds a new client per event loop, and the backend closes what it built; a
    client given by the user is returned as it is and never closed. `cluster` says the
    client is a `RedisCluster` (for a connection factory: known once it has built one). `socket_bounded` is set when the source builds single-node
    clients with our retry policy (one immediate retry on a broken connection, none on a
    timeout): their socket timeouts then bound each command, see `needs_deadline`. `check`,
    for a source built from a URL, says what answers at its addresses when it is not what the
    URL names (`_addresses`). `socket_timeouts` names the socket timeouts the connection's own
    options set (`socket_timeout`, `socket_connect_timeout`: each with its value and where it
    was set), which a socket timeout's error then tells to raise (`errors.translate`).
    """

    __slots__ = (
        "_build",
        "check",
        "cluster",
        "owned",
        "server",
        "socket_bounded",
        "socket_timeouts",
    )

    def __init__(
        self,
        build: Callable[[], Awaitable[Built]],
        server: str,
        *,
        owned: bool,
        cluster: bool,
        socket_bounded: bool = False,
        check: Optional[Check] = None,
        socket_timeouts: Optional[Mapping[str, str]] = None,
    ) -> None:
        self._build = build
        self.server = server
        self.owned = owned
        self.cluster = cluster
        self.socket_bounded = socket_bounded
        self.check = check
        self.socket_timeouts: Mapping[str, str] = socket_timeouts or {}

    async def build(self) -> Built:
        return await self._build()


def needs_deadline(
    source: ClientSource, client: Any, connect_timeout: float, command_timeout: float
) -> bool:
    """Whether the backend must bound each operation on `client` with a deadline of its own.

    Not for a single-node client built here whose socket timeouts are set and no longer than
    ours (options in the URL may change them): redis-py then bounds every connection attempt
    and every read and write, and our retry policy never retries a timeout. A deadline
    (`asyncio.timeout`) costs about 10 us per call. Clusters, Sentinel and users' clients
    (whose retries and timeouts we do not control) keep the deadline.
    """
    if not source.socket_bounded:
        return True
    kwargs = getattr(getattr(client, "connection_pool", None), "connection_kwargs", {})
    if kwargs.get("retry_on_timeout") or kwargs.get("retry_on_error"):
        return True
    connect, command = kwargs.get("socket_connect_timeout"), kwargs.get("socket_timeout")
    return not (connect and command and connect <= connect_timeout and command <= command_timeout)


def client_defaults(connect_timeout: float, command_timeout: float) -> dict[str, Any]:
    """Options of every client the backend builds (user options override them)."""
    return {
        "socket_connect_timeout": connect_timeout,
        "socket_timeout": command_timeout,
        # One immediate retry on a broken connection (a restarted server leaves stale
        # sockets in the pool); none on timeouts, so a hung server costs one timeout.
        "retry": Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
    }


_SOCKET_TIMEOUTS = ("socket_timeout", "socket_connect_timeout")


def _socket_timeouts(*layers: tuple[str, Mapping[str, Any]]) -> dict[str, str]:
    """The socket timeouts `layers` set (each `(where, options)`, the one that wins last), each
    named with its value and where it was set: `socket_timeout (0.05 s, in the URL's query)`."""
    found: dict[str, str] = {}
    for where, options in layers:
        for name in _SOCKET_TIMEOUTS:
            if options.get(name) is not None:
                found[name] = f"{name} ({options[name]} s, in {where})"
    return found


def redact(url: str) -> str:
    """`url` without its secrets (`traffik.backends.url_options.redact_url`)."""
    return redact_url(url)


def _nodes_from_netloc(netloc: str, default_port: int, url: str) -> list[tuple[str, int]]:
    nodes = []
    for item in netloc.split(","):
        match = _HOST.fullmatch(item.strip())
        if not match:
            raise ConfigurationError(
                f"Redis URL {redact(url)!r}: cannot read host {item!r}; write host:port"
            )
        port = match.group(2) or match.group(4)
        nodes.append((match.group(1) or match.group(3), int(port) if port else default_port))
    return nodes


def _multi_host(
    url: str, default_port: int
) -> tuple[list[tuple[str, int]], list[str], dict[str, Any]]:
    """Hosts, path segments and client options of a `redis+cluster://` or `redis+sentinel://` URL."""
    parts = urlsplit(url)
    userinfo, _, netloc = parts.netloc.rpartition("@")
    if not netloc:
        raise ConfigurationError(
            f"Redis URL {redact(url)!r} names no host; write it like {parts.scheme}://host:port"
        )
    nodes = _nodes_from_netloc(netloc, default_port, url)
    auth = f"{userinfo}@" if userinfo else ""
    query = f"/?{parts.query}" if parts.query else ""
    try:
        options: dict[str, Any] = dict(parse_url(f"redis://{auth}localhost{query}"))
    except ValueError as exc:
        raise ConfigurationError(
            f"Redis URL {redact(url)!r}: {redact_text(str(exc), url)}"
        ) from None
    options.pop("host", None)
    return nodes, [p for p in parts.path.split("/") if p], options


def _checked(
    options: Mapping[str, Any], valid: Options, where: str, settings: Collection[str] = ()
) -> None:
    """Refuse an option `valid` does not name, a value redis-py would refuse, or a TLS file
    that is not there (`_options`)."""
    check_options(options, valid, where, settings)
    check_values(options, where)
    check_files(options, where)


def _database_twice(url: str, path: str) -> None:
    """Refuse a URL that names its database both in its path (`path`, non-empty) and in its
    query (`?db=`): redis-py would take one silently (the query's), as a setting given twice."""
    query = parse_qs(urlsplit(url).query, keep_blank_values=True).get("db")
    if path and query:
        raise ConfigurationError(
            f"Redis URL {redact(url)!r} sets the database twice, /{path} in its path and "
            f"db={query[0]} in its query; set it once (the path: redis://host:6379/<db>)"
        )


def _refused(exc: Exception, server: str, url: str) -> ConfigurationError:
    """The error for a client redis-py refused to build from the options (`ValueError`,
    `TypeError`): a bad setting, not an outage."""
    return ConfigurationError(
        f"Redis at {server}: redis-py refused to build the client from its options "
        f"({type(exc).__name__}: {redact_text(str(exc), url)}); fix the option it names, in "
        "the URL's query or the backend's *_kwargs"
    )


def _no_sentinel(connection: str, name: str) -> ConfigurationError:
    """The error for a Sentinel setting (`name`) given with a connection that is no Sentinel's."""
    return ConfigurationError(
        f"RedisBackend: {name} is set, but the connection {connection} is not a Sentinel's; it "
        "is for a master that Sentinel serves: use a redis+sentinel://host:26379/<service> URL "
        "or a redis.asyncio.Sentinel, or drop it"
    )


def _cluster(
    nodes: list[Any],
    options: dict[str, Any],
    server: str,
    *layers: tuple[str, Mapping[str, Any]],
) -> ClientSource:
    async def build() -> Built:
        try:
            client = RedisCluster(
                startup_nodes=[ClusterNode(host, port) for host, port in nodes], **options
            )
        except (ValueError, TypeError) as exc:
            raise _refused(exc, server, server) from None
        return client, [client]

    return ClientSource(
        build, server, owned=True, cluster=True, socket_timeouts=_socket_timeouts(*layers)
    )


def _sentinel_master(
    sentinel: Sentinel, service: str, options: dict[str, Any], closers: list[Any]
) -> Built:
    master = sentinel.master_for(
        service, **{"connection_pool_class": SentinelConnectionPool, **options}
    )
    return master, [master, *closers]


def _single_node(url: str, options: Mapping[str, Any]) -> Redis:
    """What `Redis.from_url(url, **options)` builds, on a pool that opens connections side by
    side (`_pool.py`)."""
    pool_options = dict(options)
    single_connection = pool_options.pop("single_connection_client", False)
    auto_close = pool_options.pop("auto_close_connection_pool", None)
    client = Redis(
        connection_pool=ConnectionPool.from_url(url, **pool_options),
        single_connection_client=single_connection,
    )
    client.auto_close_connection_pool = True if auto_close is None else auto_close
    return client


def _from_url(
    url: str,
    defaults: dict[str, Any],
    url_kwargs: Mapping[str, Any],
    cluster_kwargs: Mapping[str, Any],
    sentinel_service_name: str | None,
    sentinel_kwargs: Mapping[str, Any],
    settings: Collection[str],
) -> ClientSource:
    scheme = url.split("://", 1)[0].lower()
    server = redact(url)
    if scheme != "redis+sentinel" and (sentinel_service_name or sentinel_kwargs):
        name = (
            f"sentinel_service_name={sentinel_service_name!r}"
            if sentinel_service_name
            else "sentinel_kwargs"
        )
        raise _no_sentinel(repr(server), name)
    if scheme == "redis+cluster":
        nodes, path, options = _multi_host(url, 6379)
        _checked(options, CLUSTER, f"Redis URL {server!r}", settings)
        _checked(url_kwargs, CLUSTER, "RedisBackend: url_kwargs")
        _checked(cluster_kwargs, CLUSTER, "RedisBackend: cluster_kwargs")
        if options.pop("db", 0) or any(p != "0" for p in path):
            raise ConfigurationError(
                f"Redis URL {server!r}: a cluster has only database 0; drop the path"
            )
        return _cluster(
            nodes,
            {**defaults, **options, **url_kwargs, **cluster_kwargs},
            server,
            ("the URL's query", options),
            ("url_kwargs", url_kwargs),
            ("cluster_kwargs", cluster_kwargs),
        )
    if scheme == "redis+sentinel":
        nodes, path, options = _multi_host(url, 26379)
        _checked(options, SENTINEL, f"Redis URL {server!r}", settings)
        _checked(url_kwargs, SENTINEL, "RedisBackend: url_kwargs")
        _checked(sentinel_kwargs, SENTINEL_MASTER, "RedisBackend: sentinel_kwargs")
        service = path[0] if path else sentinel_service_name
        if not service:
            raise ConfigurationError(
                f"Redis URL {server!r} names no service; write redis+sentinel://host:26379/<service>[/<db>]"
            )
        if len(path) > 1:
            _database_twice(url, path[1])
            try:
                options["db"] = int(path[1])
            except ValueError:
                raise ConfigurationError(
                    f"Redis URL {server!r}: database {path[1]!r} is not a number"
                ) from None
        connection_options = {**defaults, **options, **url_kwargs}
        shown = f"{server} (sentinel service {service!r})"

        async def build() -> Built:
            try:
                sentinel = Sentinel(nodes, **connection_options)
                return _sentinel_master(
                    sentinel, service, dict(sentinel_kwargs), list(sentinel.sentinels)
                )
            except (ValueError, TypeError) as exc:
                raise _refused(exc, shown, url) from None

        async def check_sentinels(timeout: float) -> Optional[str]:
            return await not_sentinels(nodes, service, timeout)

        return ClientSource(
            build,
            shown,
            owned=True,
            cluster=False,
            check=check_sentinels,
            socket_timeouts=_socket_timeouts(
                ("the URL's query", options),
                ("url_kwargs", url_kwargs),
                ("sentinel_kwargs", sentinel_kwargs),
            ),
        )
    if scheme not in ("redis", "rediss", "unix"):
        raise ConfigurationError(
            f"Redis URL {server!r}: unknown scheme {scheme!r}; use one of {', '.join(s + '://' for s in SCHEMES)}"
        )
    try:
        parsed = parse_url(url)
    except ValueError as exc:
        raise ConfigurationError(f"Redis URL {server!r}: {redact_text(str(exc), url)}") from None
    connection_class = parsed.pop("connection_class", Connection)
    _checked(parsed, single_node(connection_class, client=False), f"Redis URL {server!r}", settings)
    _checked(url_kwargs, single_node(connection_class, client=True), "RedisBackend: url_kwargs")
    database = unquote(urlsplit(url).path).strip("/")
    if scheme != "unix":
        _database_twice(url, database)
    if scheme != "unix" and database and not (database.isascii() and database.isdigit()):
        raise ConfigurationError(
            f"Redis URL {server!r}: database {database!r} is not a number; "
            f"write {scheme}://host:port/<db>, db a whole number such as 0"
        )
    options = {**defaults, **url_kwargs}

    async def build_single() -> Built:
        try:
            client = _single_node(url, options)
        except (ValueError, TypeError) as exc:
            raise _refused(exc, server, url) from None
        return client, [client]

    host, port, socket = parsed.get("host", "localhost"), parsed.get("port", 6379), ""
    if scheme == "unix":
        socket = parsed.get("path", "")

    async def check_address(timeout: float) -> Optional[str]:
        return await not_redis(host, port, socket, timeout)

    return ClientSource(
        build_single,
        server,
        owned=True,
        cluster=False,
        socket_bounded=options["retry"] is defaults["retry"],
        check=None if scheme == "rediss" else check_address,
        # (redis-py's from_url: the URL's query wins over keywords)
        socket_timeouts=_socket_timeouts(("url_kwargs", url_kwargs), ("the URL's query", parsed)),
    )


def _factory(factory: Callable[[], Any], deadline: float) -> ClientSource:
    """A source whose clients `await factory()` makes, one per event loop, bounded by
    `deadline`; the backend owns and closes them."""
    name = f"{getattr(factory, '__qualname__', type(factory).__name__)}()"
    try:
        inspect.signature(factory).bind()
    except TypeError:
        raise ConfigurationError(
            f"RedisBackend: connection factory {name} must take no arguments; {_USAGE}"
        ) from None
    except ValueError:  # no signature to read (a builtin): calling it will tell
        pass

    async def build() -> Built:
        client = factory()
        if inspect.isawaitable(client):
            client = await bounded(client, deadline)
        if not isinstance(client, (Redis, RedisCluster)):
            raise ConfigurationError(
                f"RedisBackend: connection factory {name} returned {client!r} "
                f"({type(client).__name__}); it must return a redis.asyncio.Redis or RedisCluster"
            )
        source.cluster = isinstance(client, RedisCluster)
        return client, [client]

    source = ClientSource(build, name, owned=True, cluster=False)
    return source


def _node(item: Any) -> tuple[str, int]:
    if isinstance(item, ClusterNode):
        return item.host, int(item.port)
    if isinstance(item, Mapping) and "host" in item:
        host, port = item["host"], item.get("port", 6379)
    elif isinstance(item, (tuple, list)) and len(item) == 2:
        host, port = item
    else:
        raise TypeError(
            f"RedisBackend: cluster node {item!r} must be a (host, port) pair or a {{'host': …, 'port': …}} dict"
        )
    if not isinstance(host, str) or isinstance(port, bool) or not isinstance(port, int):
        raise TypeError(f"RedisBackend: cluster node {item!r} must have a str host and an int port")
    return host, port


def _describe(client: Any) -> str:
    if isinstance(client, RedisCluster):
        nodes = client.get_nodes() or list(client.nodes_manager.startup_nodes.values())
        return "Redis Cluster " + ",".join(f"{n.host}:{n.port}" for n in nodes)
    kwargs = getattr(getattr(client, "connection_pool", None), "connection_kwargs", {})
    if kwargs.get("path"):
        return f"unix://{kwargs['path']}"
    return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"


def client_source(
    connection: Any,
    *,
    connect_timeout: float,
    command_timeout: float,
    url_kwargs: Mapping[str, Any] | None = None,
    cluster_kwargs: Mapping[str, Any] | None = None,
    sentinel_service_name: str | None = None,
    sentinel_kwargs: Mapping[str, Any] | None = None,
    settings: Collection[str] = (),
) -> ClientSource:
    """Check `connection` and return where clients come from; bad values fail here, naming them.

    `settings` are Traffik's own settings a URL may carry: a misspelt option in a URL is
    matched against them first."""
    defaults = client_defaults(connect_timeout, command_timeout)
    if not isinstance(connection, (str, Sentinel)) and (sentinel_service_name or sentinel_kwargs):
        name = (
            f"sentinel_service_name={sentinel_service_name!r}"
            if sentinel_service_name
            else "sentinel_kwargs"
        )
        raise _no_sentinel(f"({type(connection).__name__})", name)
    if isinstance(connection, str):
        if "://" not in connection:
            raise ConfigurationError(
                f"RedisBackend: connection {connection!r} is not a URL; {_USAGE}"
            )
        return _from_url(
            connection,
            defaults,
            url_kwargs or {},
            cluster_kwargs or {},
            sentinel_service_name,
            sentinel_kwargs or {},
            settings,
        )
    if isinstance(connection, (Redis, RedisCluster)):
        given = connection

        async def build_given() -> Built:
            return given, []

        return ClientSource(
            build_given, _describe(given), owned=False, cluster=isinstance(given, RedisCluster)
        )
    if isinstance(connection, Sentinel):
        _checked(sentinel_kwargs or {}, SENTINEL_MASTER, "RedisBackend: sentinel_kwargs")
        if not sentinel_service_name:
            raise ConfigurationError(
                "RedisBackend: a redis.asyncio.Sentinel needs sentinel_service_name= (the monitored master's name)"
            )
        sentinel, service = connection, sentinel_service_name
        options = {**defaults, **(sentinel_kwargs or {})}

        async def build_master() -> Built:
            return _sentinel_master(sentinel, service, options, [])

        return ClientSource(
            build_master,
            f"sentinel service {service!r}",
            owned=True,
            cluster=False,
            socket_timeouts=_socket_timeouts(("sentinel_kwargs", sentinel_kwargs or {})),
        )
    if isinstance(connection, (list, tuple)):
        if not connection:
            raise ConfigurationError(f"RedisBackend: the list of cluster nodes is empty; {_USAGE}")
        nodes = [_node(item) for item in connection]
        _checked(cluster_kwargs or {}, CLUSTER, "RedisBackend: cluster_kwargs")
        server = "redis+cluster://" + ",".join(f"{h}:{p}" for h, p in nodes)
        return _cluster(
            nodes,
            {**defaults, **(cluster_kwargs or {})},
            server,
            ("cluster_kwargs", cluster_kwargs or {}),
        )
    if callable(connection):
        return _factory(connection, connect_timeout + command_timeout)
    raise TypeError(
        f"RedisBackend: connection={connection!r} ({type(connection).__name__}) is not supported; {_USAGE}"
    )
