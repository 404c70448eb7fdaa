"""Clocks: the wall clock used by default, and a `ManualClock` that tests move by hand.

A clock is a callable returning seconds since the epoch. Strategies decide in whole
milliseconds: `millis(clock)` gives a clock's time in milliseconds, exactly for the wall
clock (`time.time_ns`) and for a `ManualClock` (which counts nanoseconds), and for any other
callable its seconds taken to the microsecond, then rounded down to the millisecond (a
float near today's time holds a microsecond exactly, but not a millisecond: `1700000000.001`
is a little less than 1 ms past the second, and read as its float it would be 0 ms past).
"""

from __future__ import annotations

import math
import numbers
import time
from decimal import Decimal
from fractions import Fraction
from typing import Any, Callable

__all__ = ["Clock", "ManualClock", "millis", "system_clock", "system_ms"]

Clock = Callable[[], float]
"""A clock is a callable returning the current time in seconds since the epoch."""

system_clock: Clock = time.time


def _whole(value: Any, what: str, per_unit: int) -> int:
    """`value` units (a finite real number; `what` names it in the error, else TypeError) in
    whole parts of `per_unit`, nearest: a float as written, at its shortest decimal form (the
    binary `1700000000.001` falls short of 1 ms past the second by 48 ns)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise TypeError(f"ManualClock: {what}={value!r} must be a finite number, like 60 or 0.5")
    if isinstance(value, numbers.Rational):  # (an int, a Fraction: exact)
        return round(Fraction(int(value.numerator), int(value.denominator)) * per_unit)
    return round(Decimal(float.__repr__(float(value))) * per_unit)


def system_ms() -> int:
    """The wall clock in whole milliseconds (what `millis(system_clock)` returns; a hot path
    that finds it as a backend's `now_ms` may read `time.time_ns()` itself, saving a call)."""
    return time.time_ns() // 1_000_000


class ManualClock:
    """A clock that only moves when told to: `advance(seconds, ms=...)` or `set(timestamp)`.

    Pass it as `clock=` to a backend; strategies and key expiry then follow it, so a
    test can cross a window without sleeping. It counts whole nanoseconds, so advancing by
    `ms=w` moves its millisecond time by exactly `w`, and takes seconds as written:
    `ManualClock(1700000000.001).ms()` is `1700000000001`.
    """

    __slots__ = ("_ns",)

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._ns = _whole(start, "start", 1_000_000_000)

    def __call__(self) -> float:
        return self._ns / 1e9

    def ms(self) -> int:
        """The time in whole milliseconds."""
        return self._ns // 1_000_000

    def advance(self, seconds: float = 0.0, *, ms: float = 0.0) -> float:
        """Move forward by `seconds` plus `ms` milliseconds; returns the new time."""
        step = _whole(seconds, "seconds", 1_000_000_000) + _whole(ms, "ms", 1_000_000)
        if step < 0:
            raise ValueError(
                f"ManualClock.advance({seconds!r}, ms={ms!r}): time only moves forward"
            )
        self._ns += step
        return self()

    def set(self, timestamp: float) -> None:
        self._ns = _whole(timestamp, "timestamp", 1_000_000_000)

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
        return round(clock() * 1_000_000) // 1000

    return rounded
