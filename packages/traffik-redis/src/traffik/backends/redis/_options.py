"""The client options redis-py takes, so a misspelt one, or a value it would refuse, fails when
the backend is built.

redis-py passes options it does not know (from a URL's query or `url_kwargs`) on to the
connection it builds on first use, which then raises `TypeError` inside a request. The
names it takes are read from the signatures of the classes that receive them, so they
follow the installed redis-py. Values it checks only when it connects (a pool of -5
connections, RESP 9) or never (a negative timeout, which times out every command) are
checked here (`check_values`): otherwise they would look like an outage.
"""

from __future__ import annotations

import difflib
import inspect
import math
import os
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any, NamedTuple

from redis.asyncio import Redis, RedisCluster, Sentinel
from redis.asyncio.connection import URL_QUERY_ARGUMENT_PARSERS, ConnectionPool
from redis.asyncio.sentinel import SentinelManagedSSLConnection
from traffik.exceptions import ConfigurationError

__all__ = [
    "CLUSTER",
    "SENTINEL",
    "SENTINEL_MASTER",
    "Options",
    "check_files",
    "check_options",
    "check_values",
    "single_node",
]

_KEYWORDS = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
_COMMON = frozenset(URL_QUERY_ARGUMENT_PARSERS) | {"client_name", "username", "password"}
"""The options named as examples in an error (the full list has redis-py's internals too)."""


class Options(NamedTuple):
    """The option names a redis-py class takes, and the class, to name in errors."""

    names: frozenset[str]
    owner: str


def _parameters(*functions: Any) -> frozenset[str]:
    return frozenset(
        name
        for function in functions
        for name, parameter in inspect.signature(function).parameters.items()
        if parameter.kind in _KEYWORDS and name != "self"
    )


def _connection(cls: type) -> frozenset[str]:
    """What a connection class and the classes it extends take, plus its pool's own options."""
    initialisers = [vars(k)["__init__"] for k in cls.__mro__[:-1] if "__init__" in vars(k)]
    return _parameters(*initialisers, ConnectionPool.__init__) - {"connection_class"}


def single_node(connection_class: type, *, client: bool) -> Options:
    """Options of a `Redis.from_url` client whose pool builds `connection_class`; with
    `client`, also those `Redis.from_url` takes itself (which a URL's query cannot carry)."""
    names = _connection(connection_class)
    if client:
        names |= _parameters(Redis.from_url) - {"url"}
    return Options(names, f"redis.asyncio.{connection_class.__name__}")


CLUSTER = Options(
    _parameters(RedisCluster.__init__) - {"host", "port", "startup_nodes"},
    "redis.asyncio.RedisCluster",
)
SENTINEL = Options(
    _connection(SentinelManagedSSLConnection)
    | _parameters(Sentinel.__init__) - {"sentinels"}
    | {"ssl", "check_connection"},
    "redis.asyncio.Sentinel",
)
"""What `Sentinel(nodes, **options)` takes: its own options and the master connections'."""
SENTINEL_MASTER = Options(
    SENTINEL.names | _parameters(Sentinel.master_for) - {"service_name"},
    "redis.asyncio.Sentinel.master_for",
)


def check_options(
    options: Iterable[str], valid: Options, where: str, settings: Collection[str] = ()
) -> None:
    """Raise `ConfigurationError` for the first name in `options` that `valid` does not hold.

    `settings` are Traffik's own settings a URL may carry (`RedisBackend.url_options`): a
    misspelt name is matched against them as well as redis-py's (Traffik's first, when as
    close), and the error lists them."""
    for name in options:
        if name in valid.names:
            continue
        close = _closest(name, settings, valid.names)
        hint = f" (did you mean {close!r}?)" if close else ""
        examples = ", ".join(sorted(valid.names & _COMMON))
        if settings:
            where_else = (
                f"Traffik's settings in a URL are {', '.join(sorted(settings))}; the query's "
                f"other items are keyword arguments of {valid.owner}, such as {examples}"
            )
        else:
            where_else = f"use a keyword argument of {valid.owner}, such as {examples}"
        raise ConfigurationError(f"{where}: unknown option {name!r}{hint}; {where_else}")


def _closest(name: str, settings: Collection[str], names: Collection[str]) -> str | None:
    """The name closest to `name` (at least 0.6 alike, as `difflib.get_close_matches`), one of
    `settings` when as close as one of `names`; None when none is."""
    scored = [
        (difflib.SequenceMatcher(None, name, candidate).ratio(), ours, candidate)
        for ours, candidates in ((1, settings), (0, names))
        for candidate in candidates
    ]
    best = max(scored, default=None)
    return best[2] if best is not None and best[0] >= 0.6 else None


def _whole(least: int) -> Callable[[Any], bool]:
    def check(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= least

    return check


def _seconds(*, zero: bool) -> Callable[[Any], bool]:
    def check(value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        return math.isfinite(value) and (value >= 0 if zero else value > 0)

    return check


_VALUES: Mapping[str, tuple[Callable[[Any], bool], str]] = {
    "max_connections": (_whole(1), "a whole number >= 1 (connections in the client's pool)"),
    "protocol": (lambda value: value in (2, 3, "2", "3"), "2 or 3 (RESP2 or RESP3)"),
    "socket_timeout": (_seconds(zero=False), "a number of seconds > 0"),
    "socket_connect_timeout": (_seconds(zero=False), "a number of seconds > 0"),
    "health_check_interval": (_seconds(zero=True), "a number of seconds >= 0"),
    "socket_read_size": (_whole(1), "a whole number >= 1 (bytes)"),
    "db": (_whole(0), "a whole number >= 0, such as 0"),
}
"""The options whose values redis-py would refuse on first use, or take to mean an outage:
each with its check and what is valid. None means redis-py's default, always valid."""


def check_values(options: Mapping[str, Any], where: str) -> None:
    """Raise `ConfigurationError` for the first value in `options` that redis-py would refuse
    when it connects, or that makes every command fail (a negative timeout)."""
    for name, value in options.items():
        rule = _VALUES.get(name)
        if rule is None or value is None or rule[0](value):
            continue
        raise ConfigurationError(f"{where}: {name}={value!r} is not valid; it must be {rule[1]}")


_FILES: Mapping[str, tuple[Callable[[str], bool], str, str]] = {
    "ssl_certfile": (os.path.isfile, "file", "the client's certificate (PEM)"),
    "ssl_keyfile": (os.path.isfile, "file", "the client certificate's private key (PEM)"),
    "ssl_ca_certs": (os.path.isfile, "file", "the certificates of the CAs to trust (PEM)"),
    "ssl_ca_path": (os.path.isdir, "directory", "a directory of CA certificates"),
}
"""The TLS options that name a path, each with the check of its kind and what it holds: a
missing one fails only when the client connects, and looked like the server unreachable."""


def check_files(options: Mapping[str, Any], where: str) -> None:
    """Raise `ConfigurationError` for the first TLS option in `options` (`_FILES`) naming a
    path that is missing, of the wrong kind or unreadable, naming the option and the path."""
    for name, value in options.items():
        rule = _FILES.get(name)
        if rule is None or value is None or not isinstance(value, (str, os.PathLike)):
            continue
        is_kind, kind, holds = rule
        path = os.fspath(value)
        if not os.path.exists(path):
            problem = "does not exist"
        elif not is_kind(path):
            problem = f"is not a {kind}"
        elif not os.access(path, os.R_OK):
            problem = "cannot be read by this process"
        else:
            continue
        raise ConfigurationError(
            f"{where}: {name}={path!r} {problem}; it must be the path of {holds}, a {kind} "
            "this process can read (a relative path is from the working directory, "
            f"{os.getcwd()!r})"
        )
