"""The client options redis-py takes, so a misspelt one fails when the backend is built.

redis-py passes options it does not know (from a URL's query or `url_kwargs`) on to the
connection it builds on first use, which then raises `TypeError` inside a request. The
names it takes are read from the signatures of the classes that receive them, so they
follow the installed redis-py.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Iterable
from typing import Any, NamedTuple

from redis.asyncio import Redis, RedisCluster, Sentinel
from redis.asyncio.connection import URL_QUERY_ARGUMENT_PARSERS, ConnectionPool
from redis.asyncio.sentinel import SentinelManagedSSLConnection
from traffik.exceptions import ConfigurationError

__all__ = ["CLUSTER", "SENTINEL", "SENTINEL_MASTER", "Options", "check_options", "single_node"]

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


def check_options(options: Iterable[str], valid: Options, where: str) -> None:
    """Raise `ConfigurationError` for the first name in `options` that `valid` does not hold."""
    for name in options:
        if name in valid.names:
            continue
        close = difflib.get_close_matches(name, valid.names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        examples = ", ".join(sorted(valid.names & _COMMON))
        raise ConfigurationError(
            f"{where}: unknown option {name!r}{hint}; use a keyword argument of "
            f"{valid.owner}, such as {examples}"
        )
