"""traffik 1.2's coredis-based `RedisBackend` is not part of Traffik; importing it says what to use."""

from __future__ import annotations

__all__: list[str] = []

raise ModuleNotFoundError(
    "traffik.backends.redis.coredis (traffik 1.2's Redis backend on the coredis client) is not "
    "part of Traffik: its Redis backend runs on redis-py and takes the same URLs. Use "
    "`from traffik.backends.redis import RedisBackend; backend = "
    "RedisBackend('redis://localhost:6379/0', namespace='app')` (a coredis client object is "
    "not accepted: give the URL, or a redis.asyncio client)",
    name="traffik.backends.redis.coredis",
)
