"""Window counters: a fixed window's count and its end packed into one memcached number.

`increment_with_ttl` stores `end * COUNT_SPAN + count`, where `end` is when the window
closes on the backend's clock, in 10 ms units, and marks the item with `WINDOW_FLAG`.
Memcached's `incr` adds to the count and answers the whole number, so one command returns
both the new count and the exact time left in the window, and the window follows the
backend's clock (to within 10 ms) even though memcached keeps time in whole seconds. A count that
reaches `FOLD_AT` is lowered by `FOLD_BY` (by the one caller that crossed it), so it can
never overflow into the window end; limits up to `FOLD_AT - FOLD_BY` per window stay exact.
"""

from __future__ import annotations

import math

__all__ = [
    "COUNT_SPAN",
    "FOLD_AT",
    "FOLD_BY",
    "WINDOW_FLAG",
    "ms_left",
    "pack",
    "unpack",
    "window_end",
]

WINDOW_FLAG = 1
COUNT_SPAN = 10**7
FOLD_AT = 8_000_000
FOLD_BY = 4_000_000
_UNITS_PER_SECOND = 100


def window_end(now: float, ttl: float) -> int:
    """The end of a window opened at `now` lasting `ttl` seconds, in 10 ms units.

    Rounded down, so the time left never exceeds `ttl`, but always after `now`.
    """
    return max(
        math.floor((now + ttl) * _UNITS_PER_SECOND + 1e-6),
        math.floor(now * _UNITS_PER_SECOND) + 1,
        1,
    )


def ms_left(end: int, now: float) -> float:
    return (end / _UNITS_PER_SECOND - now) * 1000.0


def pack(end: int, count: int) -> int:
    return end * COUNT_SPAN + count


def unpack(value: int) -> tuple[int, int]:
    """`(end, count)`."""
    end, count = divmod(value, COUNT_SPAN)
    return end, count
