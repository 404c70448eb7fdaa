"""`XxxStatMetadata`: the `metadata` mapping of `StrategyStat` that each strategy's `get_stat` returns.

Every built-in gives `strategy` (its `name`) and `reset_ms` (`_Reset`: the reset a hit of
cost 1 would be told now); some add their own keys. For an unlimited rate `metadata` is
None. traffik 1.2 exported a `TypedDict` of the same name per strategy, with
other keys (`window_start_ms`, `tokens`, ...): these describe what Traffik returns.
"""

from __future__ import annotations

from typing import Literal, TypedDict

__all__ = [
    "AdaptiveThrottleStatMetadata",
    "CostBasedTokenBucketStatMetadata",
    "FixedWindowStatMetadata",
    "GCRAStatMetadata",
    "LeakyBucketStatMetadata",
    "LeakyBucketWithQueueStatMetadata",
    "PriorityQueueStatMetadata",
    "QuotaWithRolloverStatMetadata",
    "SlidingWindowCounterStatMetadata",
    "SlidingWindowLogStatMetadata",
    "TieredRateStatMetadata",
    "TimeOfDayStatMetadata",
    "TokenBucketStatMetadata",
    "TokenBucketWithDebtStatMetadata",
]


class _Reset(TypedDict):
    reset_ms: float
    """The `reset_ms` of the decision a hit of cost 1 would get now (`get_stat` decides it
    without charging anything; what `X-RateLimit-Reset` would tell it, in ms): admitted, the
    whole milliseconds until the budget would be whole again with that hit taken (so a
    fresh key's is not 0: a token bucket's is one unit's refill); refused, until the budget
    is whole again. It is not when the key's state is gone. `FixedWindow`'s is the time its
    window has left, 0 when none is open."""


class FixedWindowStatMetadata(_Reset):
    strategy: Literal["fixed_window"]
    current_count: int
    """Units counted in the current window (it may pass the limit: rejected hits count)."""


class SlidingWindowCounterStatMetadata(_Reset):
    strategy: Literal["sliding_window_counter"]


class SlidingWindowLogStatMetadata(_Reset):
    strategy: Literal["sliding_window_log"]


class TokenBucketStatMetadata(_Reset):
    strategy: Literal["token_bucket"]


class TokenBucketWithDebtStatMetadata(_Reset):
    strategy: Literal["token_bucket_with_debt"]


class LeakyBucketStatMetadata(_Reset):
    strategy: Literal["leaky_bucket"]


class LeakyBucketWithQueueStatMetadata(_Reset):
    strategy: Literal["leaky_bucket_with_queue"]


class GCRAStatMetadata(_Reset):
    strategy: Literal["gcra"]
    tat_ms: float
    """The theoretical arrival time, epoch milliseconds on the backend's clock."""
    emission_interval_ms: float
    """`period / limit`: the spacing of a smooth flow."""
    burst_tolerance_ms: float
    """How far ahead of the flow a client may be."""
    conformant: bool
    """Whether a hit of cost 1 would be admitted now."""


class _Window(_Reset):
    effective_limit: int
    """The limit that applies to this key now."""
    current_count: float
    """Units counted in the current window."""
    window_id: int
    """The clock-aligned window's number: epoch milliseconds // period."""
    window_start_ms: int
    """When the window opened, epoch milliseconds."""


class TieredRateStatMetadata(_Window):
    strategy: Literal["tiered_rate"]
    tier: str
    """The key's tier (`default_tier` when the key names none)."""
    tier_multiplier: float
    """The tier's multiplier (1 for an unknown tier)."""


class TimeOfDayStatMetadata(_Window):
    strategy: Literal["time_of_day"]
    hour_of_day: int
    """The hour (0-23) in the strategy's time zone."""
    time_multiplier: float
    """The multiplier of that hour."""


class AdaptiveThrottleStatMetadata(_Reset):
    strategy: Literal["adaptive_throttle"]


class PriorityQueueStatMetadata(_Reset):
    strategy: Literal["priority_queue"]
    priority: int
    """The priority level the key names (`Priority`, 1 to 4)."""


class QuotaWithRolloverStatMetadata(_Reset):
    strategy: Literal["quota_with_rollover"]


class CostBasedTokenBucketStatMetadata(_Reset):
    strategy: Literal["cost_based_token_bucket"]
