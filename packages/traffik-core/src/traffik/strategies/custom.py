"""traffik 1.2's `traffik.strategies.custom`: `GCRA` and the six advanced strategies.

Each lives in a module of its own; see docs/advanced-strategies.md for what each decides and
where its per-request input (a tier, a priority) comes from. Their `XxxStatMetadata` are
those of `traffik.strategies.stat_metadata`.
"""

from __future__ import annotations

from traffik.strategies.adaptive import AdaptiveThrottle, AdaptiveThrottleStrategy
from traffik.strategies.cost_bucket import CostBasedTokenBucket, CostBasedTokenBucketStrategy
from traffik.strategies.gcra import GCRA, GCRAStrategy
from traffik.strategies.priority import Priority, PriorityQueue, PriorityQueueStrategy
from traffik.strategies.rollover import QuotaWithRollover, QuotaWithRolloverStrategy
from traffik.strategies.stat_metadata import (
    AdaptiveThrottleStatMetadata,
    CostBasedTokenBucketStatMetadata,
    GCRAStatMetadata,
    PriorityQueueStatMetadata,
    QuotaWithRolloverStatMetadata,
    TieredRateStatMetadata,
    TimeOfDayStatMetadata,
)
from traffik.strategies.tiered import TieredRate, TieredRateStrategy
from traffik.strategies.time_of_day import TimeOfDay, TimeOfDayStrategy

__all__ = [
    "GCRA",
    "AdaptiveThrottle",
    "AdaptiveThrottleStatMetadata",
    "AdaptiveThrottleStrategy",
    "CostBasedTokenBucket",
    "CostBasedTokenBucketStatMetadata",
    "CostBasedTokenBucketStrategy",
    "GCRAStatMetadata",
    "GCRAStrategy",
    "Priority",
    "PriorityQueue",
    "PriorityQueueStatMetadata",
    "PriorityQueueStrategy",
    "QuotaWithRollover",
    "QuotaWithRolloverStatMetadata",
    "QuotaWithRolloverStrategy",
    "TieredRate",
    "TieredRateStatMetadata",
    "TieredRateStrategy",
    "TimeOfDay",
    "TimeOfDayStatMetadata",
    "TimeOfDayStrategy",
]
