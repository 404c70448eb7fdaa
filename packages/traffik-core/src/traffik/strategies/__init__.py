"""The rate-limiting strategies; `FixedWindow` is the default."""

from __future__ import annotations

from traffik.strategies.base import StateStrategy, Strategy
from traffik.strategies.fixed_window import FixedWindow, FixedWindowStrategy
from traffik.strategies.gcra import GCRA, GCRAStrategy
from traffik.strategies.leaky_bucket import (
    LeakyBucket,
    LeakyBucketStrategy,
    LeakyBucketWithQueue,
    LeakyBucketWithQueueStrategy,
)
from traffik.strategies.sliding_window import (
    SlidingWindowCounter,
    SlidingWindowCounterStrategy,
    SlidingWindowLog,
    SlidingWindowLogStrategy,
)
from traffik.strategies.token_bucket import (
    TokenBucket,
    TokenBucketStrategy,
    TokenBucketWithDebt,
    TokenBucketWithDebtStrategy,
)

__all__ = [
    "BUILTIN_STRATEGIES",
    "DEFAULT_STRATEGY",
    "GCRA",
    "FixedWindow",
    "FixedWindowStrategy",
    "GCRAStrategy",
    "LeakyBucket",
    "LeakyBucketStrategy",
    "LeakyBucketWithQueue",
    "LeakyBucketWithQueueStrategy",
    "SlidingWindowCounter",
    "SlidingWindowCounterStrategy",
    "SlidingWindowLog",
    "SlidingWindowLogStrategy",
    "StateStrategy",
    "Strategy",
    "TokenBucket",
    "TokenBucketStrategy",
    "TokenBucketWithDebt",
    "TokenBucketWithDebtStrategy",
]

DEFAULT_STRATEGY = FixedWindow()

BUILTIN_STRATEGIES: tuple[type[Strategy], ...] = (
    FixedWindow,
    SlidingWindowCounter,
    SlidingWindowLog,
    TokenBucket,
    TokenBucketWithDebt,
    LeakyBucket,
    LeakyBucketWithQueue,
    GCRA,
)
