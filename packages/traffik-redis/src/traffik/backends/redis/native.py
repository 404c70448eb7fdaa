"""Which strategies the Lua programs run: FixedWindow's counter, and the built-in transitions and refunds.

Every built-in state strategy has its body (`lua/<script>.lua`); one whose numbers do not fit
an item's five gives the rest as a table of its own (`script_table`: `TimeOfDay`'s day of
limits, see `lua/decide.lua`).
"""

from __future__ import annotations

from typing import Any, Optional

from traffik.backends.redis.scripts import COUNTER, STRATEGY_SCRIPTS
from traffik.strategies import (
    GCRA,
    AdaptiveThrottle,
    CostBasedTokenBucket,
    LeakyBucket,
    LeakyBucketWithQueue,
    PriorityQueue,
    QuotaWithRollover,
    SlidingWindowCounter,
    SlidingWindowLog,
    TieredRate,
    TimeOfDay,
    TokenBucket,
)
from traffik.strategies.base import StateStrategy
from traffik.strategies.steps import is_counter

__all__ = ["Native", "native"]

_BUILT_IN: dict[str, type[StateStrategy]] = {
    "sliding_window_counter": SlidingWindowCounter,
    "sliding_window_log": SlidingWindowLog,
    "token_bucket": TokenBucket,
    "leaky_bucket": LeakyBucket,
    "leaky_bucket_with_queue": LeakyBucketWithQueue,
    "gcra": GCRA,
    "tiered_rate": TieredRate,
    "adaptive_throttle": AdaptiveThrottle,
    "priority_queue": PriorityQueue,
    "quota_with_rollover": QuotaWithRollover,
    "cost_based_token_bucket": CostBasedTokenBucket,
    "time_of_day": TimeOfDay,
}
assert set(_BUILT_IN) == set(STRATEGY_SCRIPTS)

Native = tuple[int, str]
"""An item's code in the programs (0: the counter) and its script (`COUNTER` for the counter)."""


def native(strategy: Any) -> Optional[Native]:
    """The code and script that reproduce `strategy`, or None (a user's strategy or override).

    A subclass that keeps a built-in `transition` and `refund` (as `TokenBucketWithDebt` does,
    through its `script_args`) runs natively; one that overrides either takes the generic path.
    """
    if is_counter(strategy):
        return 0, COUNTER
    name = getattr(strategy, "script", "")
    built_in = _BUILT_IN.get(name)
    cls = type(strategy)
    if (
        built_in is None
        or getattr(cls, "transition", None) is not built_in.transition
        or getattr(cls, "refund", None) is not built_in.refund
    ):
        return None
    return STRATEGY_SCRIPTS.index(name) + 1, name
