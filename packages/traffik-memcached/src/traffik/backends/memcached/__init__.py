"""The Memcached backend for Traffik: `MemcachedBackend("memcached://localhost:11211")`."""

from __future__ import annotations

from traffik.backends.memcached._backend import MemcachedBackend
from traffik.backends.memcached._lock import DEFAULT_LOCK_TTL, MemcachedLock

__all__ = ["DEFAULT_LOCK_TTL", "MemcachedBackend", "MemcachedLock"]
