"""The shared backend conformance suite, against one memcached and against two as one backend."""

from __future__ import annotations

from typing import Any, Callable

import pytest

from traffik.backends.memcached import MemcachedBackend
from traffik.testing.conformance import BackendConformance, SharedStoreConformance

pytestmark = pytest.mark.memcached

SLIDING_WINDOW_RATE_CHANGE = {"SlidingWindowCounter": [10, 10, 10, 40, 10, 10, 8, 14]}
"""Memcached counts a SlidingWindowCounter in counters named by their window and period
(`_sliding.py`): under a new period, a new window starts afresh."""


class TestMemcachedConformance(BackendConformance, SharedStoreConformance):
    exact_walks = 25  # every step is a round trip: enough walks to cover each strategy's cases
    rate_change_differs = SLIDING_WINDOW_RATE_CHANGE

    @pytest.fixture
    def make_backend(self, memcached_url: str) -> Callable[..., MemcachedBackend]:
        return lambda **options: MemcachedBackend(memcached_url, **options)


class TestMemcachedClusterConformance(BackendConformance, SharedStoreConformance):
    exact_walks = 25
    rate_change_differs = SLIDING_WINDOW_RATE_CHANGE

    @pytest.fixture
    def make_backend(self, memcached_cluster_url: str) -> Callable[..., MemcachedBackend]:
        def make(**options: Any) -> MemcachedBackend:
            backend = MemcachedBackend(memcached_cluster_url, **options)
            assert len(backend.servers) == 2
            return backend

        return make
