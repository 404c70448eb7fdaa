"""traffik 1.2's emcache-based `MemcachedBackend` is not part of Traffik; importing it says what to use."""

from __future__ import annotations

__all__: list[str] = []

raise ModuleNotFoundError(
    "traffik.backends.memcached.emcache (traffik 1.2's Memcached backend on the emcache client) "
    "is not part of Traffik: its Memcached backend runs on aiomcache and takes the same "
    "addresses. Use `from traffik.backends.memcached import MemcachedBackend; backend = "
    "MemcachedBackend('memcached://localhost:11211', namespace='app')`",
    name="traffik.backends.memcached.emcache",
)
