"""The rate-limiting strategies; `FixedWindow` is the default.

`BUILTIN_STRATEGIES` are the core eight, `ADVANCED_STRATEGIES` the six more of
`traffik.strategies.custom` (traffik 1.2's advanced strategies). Each `XxxStatMetadata`
describes the `metadata` of the `StrategyStat` that `Xxx.get_stat` returns.
"""

from __future__ import annotations

from traffik.strategies.base import StateStrategy, Strategy
from traffik.strategies.custom import (
    AdaptiveThrottle,
    AdaptiveThrottleStrategy,
    CostBasedTokenBucket,
    CostBasedTokenBucketStrategy,
    Priority,
    PriorityQueue,
    PriorityQueueStrategy,
    QuotaWithRollover,
    QuotaWithRolloverStrategy,
    TieredRate,
    TieredRateStrategy,
    TimeOfDay,
    TimeOfDayStrategy,
)
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
from traffik.strategies.stat_metadata import (
    AdaptiveThrottleStatMetadata,
    CostBasedTokenBucketStatMetadata,
    FixedWindowStatMetadata,
    GCRAStatMetadata,
    LeakyBucketStatMetadata,
    LeakyBucketWithQueueStatMetadata,
    PriorityQueueStatMetadata,
    QuotaWithRolloverStatMetadata,
    SlidingWindowCounterStatMetadata,
    SlidingWindowLogStatMetadata,
    TieredRateStatMetadata,
    TimeOfDayStatMetadata,
    TokenBucketStatMetadata,
    TokenBucketWithDebtStatMetadata,
)
from traffik.strategies.token_bucket import (
    TokenBucket,
    TokenBucketStrategy,
    TokenBucketWithDebt,
    TokenBucketWithDebtStrategy,
)

__all__ = [
    "ADVANCED_STRATEGIES",
    "BUILTIN_STRATEGIES",
    "DEFAULT_STRATEGY",
    "GCRA",
    "AdaptiveThrottle",
    "AdaptiveThrottleStatMetadata",
    "AdaptiveThrottleStrategy",
    "CostBasedTokenBucket",
    "CostBasedTokenBucketStatMetadata",
    "CostBasedTokenBucketStrategy",
    "FixedWindow",
    "FixedWindowStatMetadata",
    "FixedWindowStrategy",
    "GCRAStatMetadata",
    "GCRAStrategy",
    "LeakyBucket",
    "LeakyBucketStatMetadata",
    "LeakyBucketStrategy",
    "LeakyBucketWithQueue",
    "LeakyBucketWithQueueStatMetadata",
    "LeakyBucketWithQueueStrategy",
    "Priority",
    "PriorityQueue",
    "PriorityQueueStatMetadata",
    "PriorityQueueStrategy",
    "QuotaWithRollover",
    "QuotaWithRolloverStatMetadata",
    "QuotaWithRolloverStrategy",
    "SlidingWindowCounter",
    "SlidingWindowCounterStatMetadata",
    "SlidingWindowCounterStrategy",
    "SlidingWindowLog",
    "SlidingWindowLogStatMetadata",
    "SlidingWindowLogStrategy",
    "StateStrategy",
    "Strategy",
    "TieredRate",
    "TieredRateStatMetadata",
    "TieredRateStrategy",
    "TimeOfDay",
    "TimeOfDayStatMetadata",
    "TimeOfDayStrategy",
    "TokenBucket",
    "TokenBucketStatMetadata",
    "TokenBucketStrategy",
    "TokenBucketWithDebt",
    "TokenBucketWithDebtStatMetadata",
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

ADVANCED_STRATEGIES: tuple[type[Strategy], ...] = (
    TieredRate,
    AdaptiveThrottle,
    PriorityQueue,
    QuotaWithRollover,
    TimeOfDay,
    CostBasedTokenBucket,
)
