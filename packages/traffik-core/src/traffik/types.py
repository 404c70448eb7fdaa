"""traffik 1.2's docs import from `traffik.types`: the same names as `traffik.typing`."""

from __future__ import annotations

from traffik.typing import (
    EXEMPTED,
    AsyncLock,
    FullThrottleStrategy,
    LockConfig,
    SimpleThrottleStrategy,
    StrategyStat,
    Stringable,
    ThrottleStrategy,
    WaitPeriod,
)

__all__ = [
    "EXEMPTED",
    "AsyncLock",
    "FullThrottleStrategy",
    "LockConfig",
    "SimpleThrottleStrategy",
    "StrategyStat",
    "Stringable",
    "ThrottleStrategy",
    "WaitPeriod",
]
