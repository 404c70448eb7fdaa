"""The Redis backend: `RedisBackend`, one Lua script per rate-limit decision."""

from __future__ import annotations

from traffik.backends.redis.backend import RedisBackend

__all__ = ["RedisBackend"]
