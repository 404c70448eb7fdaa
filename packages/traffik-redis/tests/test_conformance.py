"""The shared backend conformance suite, run against a Redis server and a Redis Cluster."""

from __future__ import annotations

from typing import Any, Callable

import pytest

from traffik.backends.redis import RedisBackend
from traffik.testing.conformance import BackendConformance, SharedStoreConformance

pytestmark = pytest.mark.redis


class _RedisTimelines(BackendConformance, SharedStoreConformance):
    # Scripts follow an injected clock, but key TTLs follow the server: FixedWindow's window
    # *is* its counter's TTL, so a test clock cannot move it forward.
    clock_moves_expiry = False
    # Each walk builds a backend (a connection and SCRIPT LOAD): fewer walks than in memory.
    exact_walks = 25


class TestRedisConformance(_RedisTimelines):
    @pytest.fixture
    def make_backend(self, redis_url: str) -> Callable[..., RedisBackend]:
        return lambda **options: RedisBackend(redis_url, **options)


class TestRedisClusterConformance(_RedisTimelines):
    @pytest.fixture
    def make_backend(self, redis_cluster_url: str) -> Callable[..., RedisBackend]:
        def make(**options: Any) -> RedisBackend:
            return RedisBackend(redis_cluster_url, **options)

        return make
