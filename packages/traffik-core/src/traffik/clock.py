"""Clocks: the wall clock used by default, and a `ManualClock` that tests move by hand.

A clock is a callable returning seconds since the epoch. Strategies decide in whole
milliseconds: `millis(clock)` gives a clock's time in milliseconds, exactly for the wall
clock (`time.time_ns`) and for a `ManualClock` (which counts nanoseconds), and rounded down
for any other callable.
"""

from __future__ import annotations

import math
import numbers
import time
from typing import Any, Callable

__all__ = ["Clock", "ManualClock", "millis", "system_clock", "system_ms"]

Clock = Callable[[], float]
"""A clock is a callable returning the current time in seconds since the epoch."""

system_clock: Clock = time.time


def _seconds(value: Any, what: str) -> Any:
    """`value` if it is a finite real number (`what` names it in the error), else TypeError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise TypeError(f"ManualClock: {what}={value!r} must be a finite number, like 60 or 0.5")
    return value


def system_ms() -> int:
    """The wall clock in whole milliseconds (what `millis(system_clock)` returns; a hot path
    that finds it as a backend's `now_ms` may read `time.time_ns()` itself, saving a call)."""
    return time.time_ns() // 1_000_000


class ManualClock:
    """A clock that only moves when told to: `advance(seconds, ms=...)` or `set(timestamp)`.

    Pass it as `clock=` to a backend; strategies and key expiry then follow it, so a
    test can cross a window without sleeping. It counts whole nanoseconds, so advancing by
    `ms=w` moves its millisecond time by exactly `w`.
    """

    __slots__ = ("_ns",)

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._ns = round(_seconds(start, "start") * 1e9)

    def __call__(self) -> float:
        return self._ns / 1e9

    def ms(self) -> int:
        """The time in whole milliseconds."""
        return self._ns // 1_000_000

    def advance(self, seconds: float = 0.0, *, ms: float = 0.0) -> float:
        """Move forward by `seconds` plus `ms` milliseconds; returns the new time."""
        step = round(_seconds(seconds, "seconds") * 1e9) + round(_seconds(ms, "ms") * 1e6)
        if step < 0:
            raise ValueError(
                f"ManualClock.advance({seconds!r}, ms={ms!r}): time only moves forward"
            )
        self._ns += step
        return self()

    def set(self, timestamp: float) -> None:
        self._ns = round(_seconds(timestamp, "timestamp") * 1e9)

    def __repr__(self) -> str:
        return f"ManualClock({self()!r})"


def millis(clock: Clock) -> Callable[[], int]:
    """A callable giving `clock`'s time in whole milliseconds."""
    if clock is time.time:
        return system_ms
    exact = getattr(clock, "ms", None)
    if callable(exact):
        return exact

    def rounded() -> int:
        return int(clock() * 1000 // 1)

    return rounded
