"""Turning redis-py, socket and timeout failures into `BackendError`s that name the server."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Mapping
from typing import TypeVar

from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    ClusterDownError,
    InvalidResponse,
    OutOfMemoryError,
    ReadOnlyError,
    RedisClusterException,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from traffik.backends.redis._access import acl_advice, refusal_in, refused_by_acl, unknown_command
from traffik.exceptions import BackendConnectionError, BackendError, ConfigurationError

try:  # (recent redis-py; before, a ConnectionError with the server's words: `_AT_MAXCLIENTS`)
    from redis.exceptions import MaxClientsReachedError
except ImportError:  # pragma: no cover

    class MaxClientsReachedError(RedisConnectionError):  # type: ignore[no-redef]
        """Never raised by this redis-py."""


__all__ = ["CONNECTION_ERRORS", "bounded", "misconfigured", "timed_out", "translate"]

T = TypeVar("T")

CONNECTION_ERRORS = (
    RedisConnectionError,
    RedisTimeoutError,
    ClusterDownError,
    RedisClusterException,
    OSError,
    asyncio.TimeoutError,
)
"""Failures that mean the server is unreachable, unready or too slow (not a bad command)."""

_NO_CREDENTIALS_SENT = ("NOAUTH", "Authentication required", "HELLO must be called with the client")
"""What a server that requires a password answers a client that sent none (RESP2, RESP3)."""

_ADVICE = (
    (
        ReadOnlyError,
        "the URL names a read-only replica: point it at the primary (or use "
        "redis+sentinel://, which follows failovers)",
    ),
    (
        OutOfMemoryError,
        "the server is at its maxmemory and its maxmemory-policy evicts nothing: raise "
        "maxmemory, or use an evicting policy (volatile-ttl, allkeys-lru): every key "
        "Traffik writes expires",
    ),
    (
        InvalidResponse,
        "the server's answer is not Redis's protocol: check that the URL's host and port "
        "are a Redis server's (not memcached's, not a proxy's)",
    ),
)
"""What to do about an error the server answered (or a reply that is no Redis reply); an ACL
refusal and an unknown command are told apart by `translate` (their words, inside a script)."""

_AT_MAXCLIENTS = "max number of clients reached"
"""What Redis answers a connection past its `maxclients` (`MaxClientsReachedError` in recent
redis-py)."""


if sys.version_info >= (3, 11):

    async def bounded(awaitable: Awaitable[T], seconds: float) -> T:
        """Await `awaitable`, cancelling it after `seconds` (raises `TimeoutError`)."""
        async with asyncio.timeout(seconds):
            return await awaitable

else:

    async def bounded(awaitable: Awaitable[T], seconds: float) -> T:
        """Await `awaitable`, cancelling it after `seconds` (raises `asyncio.TimeoutError`)."""
        return await asyncio.wait_for(awaitable, seconds)


def timed_out(exc: BaseException) -> bool:
    """Whether `exc` is a timeout (the server was silent), not a refused or lost connection."""
    return isinstance(exc, (asyncio.TimeoutError, RedisTimeoutError))


def translate(
    exc: Exception,
    server: str,
    operation: str,
    *,
    namespace: str | None = None,
    socket_timeouts: Mapping[str, str] | None = None,
    deadline: bool = True,
) -> BackendError:
    """The `BackendError` to raise `from exc` for a failed `operation` on `server`.

    `namespace` fills in the keys an ACL must grant; `socket_timeouts` names the client's
    socket timeouts that the connection's own options set (`ClientSource.socket_timeouts`:
    `socket_timeout` and `socket_connect_timeout`, each with where it was set), which a
    timeout of the socket is then told to raise instead of `command_timeout` or
    `connect_timeout`: redis-py's `TimeoutError`, or any when the backend's own deadline
    does not bound the operation (`deadline` False: the socket timeouts do, `needs_deadline`;
    the lane's `asyncio.timeout` is the socket timeout's)."""
    detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if timed_out(exc):
        tls = (
            ", or use redis:// if the server's port does not speak TLS (rediss:// asks for it)"
            if server.startswith("rediss://")
            else ""
        )
        socket = isinstance(exc, RedisTimeoutError) or not deadline
        own = (socket_timeouts or {}) if socket else {}
        command = own.get("socket_timeout", "command_timeout")
        connect = own.get("socket_connect_timeout", "connect_timeout")
        return BackendConnectionError(
            f"Redis at {server}: {operation} timed out ({detail}); raise {command} "
            f"or {connect} if the server is only slow{tls}",
            cause=exc,
        )
    if isinstance(exc, MaxClientsReachedError) or (
        isinstance(exc, (RedisConnectionError, ResponseError)) and _AT_MAXCLIENTS in str(exc)
    ):
        return BackendConnectionError(
            f"Redis at {server}: {operation} failed, the server refused a new connection: it "
            f"has reached its maxclients ({detail}); raise the server's maxclients (10000 by "
            "default: CONFIG SET maxclients, or redis.conf), or open fewer connections: each "
            "process opens up to max_connections (the URL's ?max_connections=) per event loop",
            cause=exc,
        )
    if isinstance(exc, ResponseError) and str(exc).startswith("BUSY"):
        # (redis-py has no class for it: the server answers nothing else until the script ends)
        return BackendConnectionError(
            f"Redis at {server}: {operation} failed, the server is busy running a script "
            f"({detail}); it answers again once the script ends or SCRIPT KILL stops it",
            cause=exc,
        )
    if isinstance(exc, AuthenticationError) and any(
        sign in str(exc) for sign in _NO_CREDENTIALS_SENT
    ):
        return BackendConnectionError(
            f"Redis at {server}: {operation} failed, the server requires a password and none "
            f"was sent ({detail}); put it in the URL (redis://:<password>@host:6379/0, or "
            "redis://<user>:<password>@… with ACL users) or in the client",
            cause=exc,
        )
    if isinstance(exc, (AuthenticationError, AuthorizationError)):
        return BackendConnectionError(
            f"Redis at {server}: {operation} failed, the server refused the credentials "
            f"({detail}); check the username and password in the URL or client",
            cause=exc,
        )
    if isinstance(exc, RedisClusterException) and "same key slot" in str(exc):
        # (the client refused a command before sending it: the server is fine)
        return BackendError(
            f"Redis at {server}: {operation} was refused by the cluster client, its keys are "
            f"on several hash slots ({detail}); one command's keys must share a hash tag, "
            "like {client}",
            cause=exc,
        )
    if isinstance(exc, RedisClusterException) and refusal_in(exc) is not None:
        # (redis-py's cluster client: "Cluster mode is not enabled", CLUSTER SLOTS refused)
        refusal = refusal_in(exc)
        return BackendError(
            f"Redis at {server}: {operation} failed, the cluster client could not read the "
            f"slot map ({type(refusal).__name__}: {refusal}); {acl_advice(namespace)}",
            cause=exc,
        )
    if isinstance(exc, RedisClusterException) and "Cluster mode is not enabled" in str(exc):
        return BackendError(
            f"Redis at {server}: {operation} failed, the server is not a cluster node "
            f"({detail}); use redis://host:6379/0 for one server (redis+sentinel:// for "
            "Sentinel), or enable cluster mode on it",
            cause=exc,
        )
    if isinstance(exc, CONNECTION_ERRORS):
        return BackendConnectionError(
            f"Redis at {server}: {operation} failed, server unreachable ({detail})", cause=exc
        )
    if refused_by_acl(exc):
        advice = f"; {acl_advice(namespace)}"
    elif unknown_command(exc):
        advice = (
            "; the server does not know the command: it was renamed or disabled "
            "(rename-command in the server's configuration), and Traffik sends it under its "
            "own name"
        )
    else:
        advice = next((f"; {text}" for kind, text in _ADVICE if isinstance(exc, kind)), "")
    return BackendError(f"Redis at {server}: {operation} failed ({detail}){advice}", cause=exc)


def misconfigured(
    exc: Exception, error: BackendError, server: str, database: object
) -> ConfigurationError | None:
    """The `ConfigurationError` to raise `from exc` when opening the backend on `server`
    failed (`error`: `exc` translated) with the server's answer or the client's refusal of a
    setting, not with an outage (a connection refused, lost or timed out): a database the
    server does not have, a user its ACL forbids scripts, a setting redis-py refuses, a
    server that does not speak Redis. None for an outage."""
    if isinstance(error, BackendConnectionError):
        return None
    if isinstance(exc, ResponseError) and "DB index" in str(exc):
        return ConfigurationError(
            f"Redis at {server}: database {database} does not exist on the server ({exc}); "
            "use a number below the server's `databases` setting (16 by default), "
            "like redis://host:6379/0"
        )
    return ConfigurationError(f"{error}; this is a setting to fix, not an outage")
