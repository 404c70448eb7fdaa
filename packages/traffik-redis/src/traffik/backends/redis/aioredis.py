"""`traffik.backends.redis.aioredis.RedisBackend`: the import path of traffik 1.2, kept working."""

from __future__ import annotations

from traffik.backends.redis.backend import RedisBackend

__all__ = ["RedisBackend"]
