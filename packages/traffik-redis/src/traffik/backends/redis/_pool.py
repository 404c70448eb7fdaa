"""The connection pools of the clients the backend builds: connections open side by side.

redis-py 5.3 to 7.x hold a pool's `asyncio.Lock` while a new connection connects and
answers its handshake (`CLIENT SETINFO`, `AUTH`, `SELECT`). A frozen server accepts the
connection but never answers, so each handshake waits a whole `socket_timeout` with the lock
held: N concurrent operations fail one after another, the last after N timeouts. redis-py 8
takes a connection under the lock and connects outside it; so do these pools, on the
versions that need it. redis-py 8 (and 5.0 to 5.2, which never locked) keep their own.
"""

from __future__ import annotations

from typing import Any

import redis
from redis.asyncio import ConnectionPool as RedisConnectionPool
from redis.asyncio.sentinel import SentinelConnectionPool as RedisSentinelConnectionPool

__all__ = ["CONNECTS_UNDER_LOCK", "ConnectionPool", "SentinelConnectionPool"]


def _release(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".")[:2] if part.isdigit())


CONNECTS_UNDER_LOCK = (5, 3) <= _release(redis.__version__) < (8,)
"""Whether the installed redis-py connects under its pool's lock (checked from 5.0.1 to 8.1)."""


class _ConnectsOutsideTheLock(RedisConnectionPool):
    """redis-py's `ConnectionPool`, whose `get_connection` is redis-py 8's: take a connection
    (no `await`, so no other task runs meanwhile: the lock guards nothing more), then connect
    it without the lock."""

    async def get_connection(self, command_name: Any = None, *keys: Any, **options: Any) -> Any:
        connection = self.get_available_connection()
        try:
            await self.ensure_connection(connection)
        except BaseException:
            await self.release(connection)
            raise
        return connection


class _SentinelConnectsOutsideTheLock(_ConnectsOutsideTheLock, RedisSentinelConnectionPool):
    """redis-py's `SentinelConnectionPool`, connecting outside its lock."""


ConnectionPool: type[RedisConnectionPool] = (
    _ConnectsOutsideTheLock if CONNECTS_UNDER_LOCK else RedisConnectionPool
)
"""The pool of the single-node clients the backend builds from a URL."""
SentinelConnectionPool: type[RedisSentinelConnectionPool] = (
    _SentinelConnectsOutsideTheLock if CONNECTS_UNDER_LOCK else RedisSentinelConnectionPool
)
"""The pool of the Sentinel master clients the backend builds."""
