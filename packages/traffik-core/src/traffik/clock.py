"""Clocks: the wall clock used by default, and a `ManualClock` that tests move by hand."""

from __future__ import annotations

import time
from typing import Callable

__all__ = ["Clock", "ManualClock", "system_clock"]

Clock = Callable[[], float]
"""A clock is a callable returning the current time in seconds since the epoch."""

system_clock: Clock = time.time


class ManualClock:
    """A clock that only moves when told to: `advance(seconds)` or `set(timestamp)`.

    Pass it as `clock=` to a backend; strategies and key expiry then follow it, so a
    test can cross a window without sleeping.
    """

    __slots__ = ("_now",)

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = float(start)

    def __call__(self) -> float:
        return self._now

    def advance(self, seconds: float = 0.0, *, ms: float = 0.0) -> float:
        """Move forward by `seconds` plus `ms` milliseconds; returns the new time."""
        step = seconds + ms / 1000.0
        if step < 0:
            raise ValueError(
                f"ManualClock.advance({seconds!r}, ms={ms!r}): time only moves forward"
            )
        self._now += step
        return self._now

    def set(self, timestamp: float) -> None:
        self._now = float(timestamp)

    def __repr__(self) -> str:
        return f"ManualClock({self._now!r})"
