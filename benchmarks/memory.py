"""Bytes per tracked key in the in-memory backend: tracemalloc's count of live blocks over many keys."""

from __future__ import annotations

import gc
import tracemalloc

from benchmarks.asgi import clients
from benchmarks.results import KeyMemory
from traffik.backends.inmemory import InMemoryBackend
from traffik.rates import Rate
from traffik.strategies import BUILTIN_STRATEGIES

__all__ = ["bytes_per_key"]

_RATE = "100/h"
"""Every key stays live for the whole measurement at this rate (state lasts 36 s or more)."""


async def _one(strategy_class: type, keys: int) -> KeyMemory:
    strategy = strategy_class()
    backend = InMemoryBackend(namespace="traffik-bench")
    rate = Rate.parse(_RATE)
    names = [f"bench:{host}:GET:/" for host, _ in clients(keys)]
    await strategy.decide("warm-up", rate, backend, 1)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for name in names:
            await strategy.decide(name, rate, backend, 1)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    live = len(await backend.keys()) - 1
    if live != keys:
        raise RuntimeError(f"{strategy_class.__name__}: {live} of {keys} keys live after filling")
    return KeyMemory(strategy_class.__name__, keys, (after - before) / keys)


async def bytes_per_key(keys: int) -> list[KeyMemory]:
    """For each built-in strategy: one decision on each of `keys` keys like a throttle's
    (`namespace:uid:client:GET:/` plus the strategy's suffix), then live bytes / keys."""
    return [await _one(strategy, keys) for strategy in BUILTIN_STRATEGIES]
