"""What the advanced strategies share: clock-aligned periods, and fractions as whole parts.

Their windows are aligned to multiples of the period on the clock (as in traffik 1.2), so a
window is `now // period` and ends `period - now % period` ms from now. A fraction setting
(a load threshold, a rollover percentage) is kept as whole parts of `PARTS`, so transitions
stay in integers and the Lua ports compute the same; settings finer than 1/100000 round.
A state of a later window than `now`'s is decided in that window, as at its start
(`window_start`).
"""

from __future__ import annotations

import math
from typing import Optional

from traffik.exceptions import ConfigurationError
from traffik.strategies.base import ahead

__all__ = [
    "PARTS",
    "aligned",
    "check_number",
    "of_another_period",
    "of_period",
    "still_open",
    "to_parts",
    "window_count",
    "window_start",
]

PARTS = 100_000
"""A fraction is `parts / PARTS`."""


def aligned(now: int, period: int) -> tuple[int, int]:
    """The id of the clock-aligned period holding `now`, and the ms until it ends (>= 1)."""
    wid = now // period
    return wid, period - (now - wid * period)


def of_period(state: Optional[list[int]], size: int, period: int, now: int) -> Optional[list[int]]:
    """`state` when it holds `size` numbers counted in windows of `period` ms, else None: its
    last number is the period it was written under; one number fewer is a state written
    before the period was kept, read as of this one. A state counted in windows of another
    period carries what its window still holds: while that window (of its own period) holds
    `now` (or is later and believed, `ahead`), it is read as `now`'s window of `period` with
    the same counts; once it has closed, as no state. So two periods deciding one key in turn
    (a rolling deploy) never forget each other's hits."""
    if state is None:
        return None
    if len(state) == size - 1 or (len(state) == size and state[-1] == period):
        return state
    if len(state) != size or state[-1] < 1:
        return None
    if still_open(state[0], state[-1], now):
        return [now // period, *state[1:-1], period]
    return None


def of_another_period(state: Optional[list[int]], size: int, period: int, now: int) -> bool:
    """Whether `state` holds `size` numbers counted in windows of another period than
    `period` that still carries into `now`'s window (`of_period`); a refused hit writes what
    it carries (`traffik.strategies.base.Transition`)."""
    return (
        state is not None
        and len(state) == size
        and state[-1] != period
        and of_period(state, size, period, now) is not None
    )


def still_open(wid: int, period: int, now: int) -> bool:
    """Whether window `wid` of `period` ms holds `now`, or is later and believed (`ahead`):
    what a state of another period still counts in (`of_period`)."""
    return wid == now // period or ahead(wid * period, now)


def window_start(state: Optional[list[int]], now: int, size: int, period: int) -> int:
    """When to decide on a `[window_id, ..., period_ms]` state of `size` numbers: `now`, or
    the start of its window when later (a host whose clock is behind decides in the window
    the state counts, as at its start: the whole window left). A start past `EXACT_LIMIT`
    is no time (the state is another window's)."""
    state = of_period(state, size, period, now)
    if state is not None and ahead(state[0] * period, now):
        return state[0] * period
    return now


def window_count(state: Optional[list[int]], now: int, period: int) -> int:
    """The count a `[window_id, count, period_ms]` state holds in `now`'s window of `period`
    ms (0 for another window; a state of another period as `of_period` reads it)."""
    wid = now // period
    state = of_period(state, 3, period, now)
    return state[1] if state is not None and state[0] == wid else 0


def check_number(owner: str, name: str, value: object) -> float:
    """`value` as a finite number (an int or a float, not a bool), else `ConfigurationError`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigurationError(f"{owner}({name}={value!r}): must be a finite number")
    return value


def to_parts(owner: str, name: str, value: object, *, zero: bool, one: bool) -> int:
    """A fraction setting in whole parts of `PARTS`: between 0 and 1, each end allowed only
    when `zero` / `one` say so (after rounding to parts)."""
    number = check_number(owner, name, value)
    parts = round(number * PARTS)
    low, high = (0 if zero else 1), (PARTS if one else PARTS - 1)
    if not low <= parts <= high:
        bounds = f"{'[' if zero else '('}0, 1{']' if one else ')'}"
        raise ConfigurationError(f"{owner}({name}={value!r}): must be within {bounds}")
    return parts
