"""The shared backend conformance suite, run against a Redis server and a Redis Cluster."""

from __future__ import annotations

from typing import Any, Callable

import pytest

from traffik.backends.redis import RedisBackend
from traffik.clock import ManualClock
from traffik.strategies import BUILTIN_STRATEGIES, FixedWindow, Strategy
from traffik.testing.conformance import BackendConformance

pytestmark = pytest.mark.redis

_STRATEGIES = [cls() for cls in BUILTIN_STRATEGIES]
_IDS = [cls.__name__ for cls in BUILTIN_STRATEGIES]


class _RedisTimelines(BackendConformance):
    # Scripts follow an injected clock, but key TTLs follow the server: FixedWindow's window
    # *is* its counter's TTL, so a test clock cannot move it forward.
    @pytest.mark.parametrize("strategy", _STRATEGIES, ids=_IDS)
    async def test_timeline(
        self, clocked: tuple[RedisBackend, ManualClock], strategy: Strategy
    ) -> None:
        if isinstance(strategy, FixedWindow):
            pytest.skip("FixedWindow's window is a Redis TTL, which follows the server's clock")
        await super().test_timeline(clocked, strategy)


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
