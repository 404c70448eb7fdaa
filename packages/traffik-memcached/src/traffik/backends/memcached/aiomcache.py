"""The traffik 1.2 import path: `from traffik.backends.memcached.aiomcache import MemcachedBackend`."""

from __future__ import annotations

from traffik.backends.memcached._backend import MemcachedBackend

__all__ = ["MemcachedBackend"]
