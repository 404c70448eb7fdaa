"""Which strategies run as a Lua script: a built-in `script` name with the built-in `transition`."""

from __future__ import annotations

from typing import Any

from traffik.backends.redis.scripts import SCRIPTS, STRATEGY_SCRIPTS, Script
from traffik.strategies import (
    GCRA,
    LeakyBucket,
    LeakyBucketWithQueue,
    SlidingWindowCounter,
    SlidingWindowLog,
    TokenBucket,
)

__all__ = ["native_script"]

_TRANSITIONS = {
    "sliding_window_counter": SlidingWindowCounter.transition,
    "sliding_window_log": SlidingWindowLog.transition,
    "token_bucket": TokenBucket.transition,
    "leaky_bucket": LeakyBucket.transition,
    "leaky_bucket_with_queue": LeakyBucketWithQueue.transition,
    "gcra": GCRA.transition,
}
assert set(_TRANSITIONS) == set(STRATEGY_SCRIPTS)


def native_script(strategy: Any) -> Script | None:
    """The script that reproduces `strategy.transition`, or None (a user's strategy or override).

    A subclass that keeps a built-in `transition` (as `TokenBucketWithDebt` does, through
    its `script_args`) runs natively; one that overrides `transition` takes the generic path.
    """
    name = getattr(strategy, "script", "")
    transition = _TRANSITIONS.get(name)
    if transition is None or getattr(type(strategy), "transition", None) is not transition:
        return None
    return SCRIPTS[name]
