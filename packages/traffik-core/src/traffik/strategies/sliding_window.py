"""Sliding windows: `SlidingWindowCounter` (two weighted counters) and `SlidingWindowLog` (exact log)."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Optional

from traffik.decision import Decision
from traffik.strategies.base import (
    Refund,
    StateStrategy,
    Transition,
    ahead,
    ceil_div,
    dated,
    later,
    later_refund,
    log_time,
    never_admitted,
)
from traffik.strategies.periods import of_period
from traffik.strategies.stat_metadata import (  # (traffik 1.2 exported them here)
    SlidingWindowCounterStatMetadata,
    SlidingWindowLogStatMetadata,
)

if TYPE_CHECKING:
    from traffik.rates import Rate

__all__ = [
    "SlidingWindowCounter",
    "SlidingWindowCounterStatMetadata",
    "SlidingWindowCounterStrategy",
    "SlidingWindowLog",
    "SlidingWindowLogStatMetadata",
    "SlidingWindowLogStrategy",
]


class SlidingWindowCounter(StateStrategy):
    """The current window's count plus the previous one's, weighted by how much of it still overlaps.

    Windows are aligned to multiples of the period. State: `[window_id, current, previous,
    period_ms]`. With `left` ms of the current window to go, the weighted count (scaled by the
    period) is `previous * left + current * period`. A rejected hit counts nothing; its wait
    is the first millisecond at which the weighted count has decayed enough, possibly in the
    next window. The counts are kept when the limit changes; a state counted in windows of
    another period carries its weighted count, rounded up, into this period's window
    (`_carried`; nothing once it has stopped weighing), which a rejected hit writes
    (`base.Transition`); a
    `[window_id, current, previous]` state (written before the period was kept) is read as
    counted in the current period. A state of a later window than `now`'s (written by a host
    whose clock is ahead) is decided in that window, as at its start.
    """

    name: ClassVar[str] = "sliding_window_counter"
    suffix: ClassVar[str] = ":swc"
    script: ClassVar[str] = "sliding_window_counter"

    @staticmethod
    def _counts(state: Optional[list[int]], now: int, rate: Rate) -> tuple[int, int, int, int]:
        """`(window_id, ms left in it, current count, previous count)` at `now`."""
        period = rate.expire
        wid = now // period
        left = period - (now - wid * period)
        if state is not None and len(state) == 4 and state[3] != period:
            state = _carried(state, now, period)
        state = of_period(state, 4, period, now)
        if state is not None:
            if state[0] == wid:
                return wid, left, state[1], state[2]
            if state[0] == wid - 1:
                return wid, left, 0, state[1]
        return wid, left, 0, 0

    @staticmethod
    def _start(state: Optional[list[int]], now: int, rate: Rate) -> int:
        """When to decide on `state`: `now`, or the start of its window when later."""
        if state is not None and len(state) == 4 and state[3] != rate.expire:
            state = _carried(state, now, rate.expire)
        state = of_period(state, 4, rate.expire, now)
        if state is not None and ahead(state[0] * rate.expire, now):
            return state[0] * rate.expire
        return now

    def transition(self, state: Optional[list[int]], now: int, rate: Rate, cost: int) -> Transition:
        at = self._start(state, now, rate)
        if at > now:
            return later(self.transition(state, at, rate, cost), at - now)
        limit, period = rate.limit, rate.expire
        wid, left, current, previous = self._counts(state, now, rate)
        weighted = previous * left + current * period
        top = limit * period
        if weighted + cost * period <= top:
            current += cost
            remaining = (top - weighted - cost * period) // period
            return (
                Decision(True, 0, remaining, left + period, limit),
                [wid, current, previous, period],
                left + period,
            )
        if cost > limit:  # (more than `capacity`: never admitted, as `settled` says)
            return never_admitted(rate), None, 0
        # In this window, `t` ms from now: previous * (left - t) + (current + cost) * period <= top.
        excess = weighted + cost * period - top
        if current + cost <= limit and previous > 0 and -(-excess // previous) < left:
            wait = -(-excess // previous)
        else:
            # From the next window on, `s` ms into it: current * (period - s) + cost * period <= top.
            over = (current + cost - limit) * period
            wait = left + (max(-(-over // current), 0) if current > 0 else 0)
        reset = left + period if current > 0 else (left if previous > 0 else 0)
        remaining = max(top - weighted, 0) // period
        decision = Decision(False, wait, remaining, reset, limit)
        if state is not None and len(state) == 4 and state[3] != period:  # (`Transition`)
            return decision, [wid, current, previous, period], left + period
        return decision, None, 0

    def held(self, rate: Rate, cost: int, decision: Decision, age_ms: int) -> int:
        """All of the charge while its window is the current one; none once it closed (its
        units then weigh as the previous window's, but a refund gives back from the current
        window first: so nothing is given back rather than units it does not hold)."""
        return cost if age_ms < decision.reset_ms - rate.expire else 0

    def refund(self, state: Optional[list[int]], now: int, rate: Rate, cost: int) -> Refund:
        at = self._start(state, now, rate)
        if at > now:
            return later_refund(self.refund(state, at, rate, cost), at - now)
        wid, left, current, previous = self._counts(state, now, rate)
        back = min(cost, current)  # the current window first, then what still weighs of the last
        current -= back
        previous = max(previous - (cost - back), 0)
        return [wid, current, previous, rate.expire], left + rate.expire


class SlidingWindowLog(StateStrategy):
    """Every admitted hit is logged with its time and cost; exact, and O(limit) memory per key.

    State: `[t1, cost1, t2, cost2, ...]`, oldest first; an entry leaves the window one period
    after its time. A rejected hit waits until enough of the oldest cost has left to make room
    for its own cost. A host whose clock is behind the newest (last) entry decides at its
    time.
    """

    name: ClassVar[str] = "sliding_window_log"
    suffix: ClassVar[str] = ":swl"
    script: ClassVar[str] = "sliding_window_log"

    def scale(self, rate: Rate) -> int:
        return rate.limit + rate.expire

    @staticmethod
    def _log(state: Optional[list[int]], now: int, rate: Rate) -> list[int]:
        """The entries still inside the window at `now`, oldest first."""
        start = now - rate.expire
        log: list[int] = []
        if state:
            for i in range(0, len(state) - 1, 2):
                if state[i] > start:
                    log.append(state[i])
                    log.append(state[i + 1])
        return log

    def transition(self, state: Optional[list[int]], now: int, rate: Rate, cost: int) -> Transition:
        state, at = dated(state, log_time(state, 2), now)
        if at > now:
            return later(self.transition(state, at, rate, cost), at - now)
        limit, period = rate.limit, rate.expire
        log = self._log(state, now, rate)
        total = sum(log[1::2])
        if total + cost <= limit:
            if log and log[-2] == now:
                log[-1] += cost
            else:
                log.append(now)
                log.append(cost)
            return Decision(True, 0, limit - total - cost, period, limit), log, period
        if cost > limit:  # (more than `capacity`: never admitted, as `settled` says)
            return never_admitted(rate), None, 0
        excess = total + cost - limit
        freed = 0
        wait = period
        for i in range(0, len(log), 2):
            freed += log[i + 1]
            if freed >= excess:
                wait = log[i] + period - now
                break
        reset = log[-2] + period - now if log else 0
        return Decision(False, wait, max(limit - total, 0), reset, limit), None, 0

    def refund(self, state: Optional[list[int]], now: int, rate: Rate, cost: int) -> Refund:
        state, at = dated(state, log_time(state, 2), now)
        if at > now:
            return later_refund(self.refund(state, at, rate, cost), at - now)
        log = self._log(state, now, rate)
        back = cost
        while log and back:  # the newest entries leave first
            taken = min(log[-1], back)
            log[-1] -= taken
            back -= taken
            if not log[-1]:
                del log[-2:]
        return log, rate.expire


def _carried(state: list[int], now: int, period: int) -> Optional[list[int]]:
    """A `[window_id, current, previous, was]` state counted in windows of another period
    (`was`), read in `now`'s window of `period`: its weighted count at `now`, rounded up to
    whole units, is that window's count (nothing weighs as its previous window); None when
    nothing of it weighs any more, or `was` is no period."""
    wid, current, previous, was = state
    if was < 1:
        return None
    at = wid * was if ahead(wid * was, now) else now
    into = at // was
    left = was - (at - into * was)
    if wid == into:
        weighted = previous * left + current * was
    elif wid == into - 1:
        weighted = current * left
    else:
        return None
    return [now // period, ceil_div(weighted, was), 0, period]


SlidingWindowCounterStrategy = SlidingWindowCounter
SlidingWindowLogStrategy = SlidingWindowLog
