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
    RedisClusterException,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from traffik.exceptions import BackendConnectionError, BackendError

__all__ = ["CONNECTION_ERRORS", "bounded", "timed_out", "translate"]

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
        return BackendConnectionError(
            f"Redis at {server}: {operation} timed out ({detail}); raise command_timeout "
            "or connect_timeout if the server is only slow",
            cause=exc,
        )
    if isinstance(exc, (AuthenticationError, AuthorizationError)):
        return BackendConnectionError(
            f"Redis at {server}: {operation} failed, the server refused the credentials "
            f"({detail}); check the username and password in the URL or client",
            cause=exc,
        )
    if isinstance(exc, CONNECTION_ERRORS):
        return BackendConnectionError(
            f"Redis at {server}: {operation} failed, server unreachable ({detail})", cause=exc
        )
    return BackendError(f"Redis at {server}: {operation} failed ({detail})", cause=exc)
