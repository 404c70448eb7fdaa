"""Turning redis-py, socket and timeout failures into `BackendError`s that name the server."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable
from typing import TypeVar

from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    ClusterDownError,
    InvalidResponse,
    NoPermissionError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisClusterException,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from traffik.exceptions import BackendConnectionError, BackendError, ConfigurationError

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
        NoPermissionError,
        "the server's ACL refuses the URL's user a command or key Traffik needs: grant it "
        "+@scripting (or at least +ping +evalsha +script|load) and the backend's keys "
        "(~<namespace>:*)",
    ),
    (
        InvalidResponse,
        "the server's answer is not Redis's protocol: check that the URL's host and port "
        "are a Redis server's (not memcached's, not a proxy's)",
    ),
)
"""What to do about an error the server answered (or a reply that is no Redis reply)."""


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


def translate(exc: Exception, server: str, operation: str) -> BackendError:
    """The `BackendError` to raise `from exc` for a failed `operation` on `server`."""
    detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if timed_out(exc):
        tls = (
            ", or use redis:// if the server's port does not speak TLS (rediss:// asks for it)"
            if server.startswith("rediss://")
            else ""
        )
        return BackendConnectionError(
            f"Redis at {server}: {operation} timed out ({detail}); raise command_timeout "
            f"or connect_timeout if the server is only slow{tls}",
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
