"""Sliding windows: `SlidingWindowCounter` (two weighted counters) and `SlidingWindowLog` (exact log)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, ClassVar

from traffik.decision import Decision
from traffik.strategies.base import EPSILON, StateStrategy, Transition, whole_ms

if TYPE_CHECKING:
    from traffik.rates import Rate

__all__ = [
    "SlidingWindowCounter",
    "SlidingWindowCounterStrategy",
    "SlidingWindowLog",
    "SlidingWindowLogStrategy",
]


class SlidingWindowCounter(StateStrategy):
    """The current window's count plus the previous one's, weighted by how much of it still overlaps.

    State: `[window_id, current, previous]`. A rejected hit counts nothing; its wait is the
    time until the weighted count has decayed enough, possibly into the next window.
    """

    name: ClassVar[str] = "sliding_window_counter"
    suffix: ClassVar[str] = ":swc"
    script: ClassVar[str] = "sliding_window_counter"

    def transition(
        self, state: list[float] | None, now: float, rate: Rate, cost: float
    ) -> Transition:
        limit, window = rate.limit, rate.expire
        wid = now // window
        into = now - wid * window
        current = previous = 0.0
        if state is not None and len(state) == 3:
            if state[0] == wid:
                current, previous = state[1], state[2]
            elif state[0] == wid - 1:
                previous = state[1]
        left = window - into
        weighted = previous * left / window + current
        if weighted + cost <= limit + EPSILON:
            current += cost
            used = weighted + cost
            reset = left + window
            return (
                Decision(True, 0.0, math.floor(limit - used + EPSILON), reset, limit),
                [wid, current, previous],
                left + window,
            )
        wait = -1.0
        if current + cost <= limit + EPSILON and previous > 0:
            decay = (weighted + cost - limit) * window / previous
            if decay <= left + EPSILON:
                wait = decay
        if wait < 0:
            # In the next window this window's count becomes the weighted "previous".
            start = window * (1 - (limit - cost) / current) if current > 0 else 0.0
            wait = left + max(start, 0.0)
        reset = left + window if current > 0 else (left if previous > 0 else 0.0)
        return (
            Decision(
                False, whole_ms(wait), math.floor(max(limit - weighted, 0) + EPSILON), reset, limit
            ),
            None,
            0.0,
        )


class SlidingWindowLog(StateStrategy):
    """Every admitted hit is logged with its time and cost; exact, and O(limit) memory per key.

    State: `[t1, cost1, t2, cost2, ...]`, oldest first. A rejected hit waits until enough
    of the oldest cost has left the window to make room for its own cost.
    """

    name: ClassVar[str] = "sliding_window_log"
    suffix: ClassVar[str] = ":swl"
    script: ClassVar[str] = "sliding_window_log"

    def transition(
        self, state: list[float] | None, now: float, rate: Rate, cost: float
    ) -> Transition:
        limit, window = rate.limit, rate.expire
        start = now - window
        log: list[float] = []
        total = 0.0
        if state:
            for i in range(0, len(state) - 1, 2):
                if state[i] > start:
                    log.append(state[i])
                    log.append(state[i + 1])
                    total += state[i + 1]
        if total + cost <= limit + EPSILON:
            if log and log[-2] == now:
                log[-1] += cost
            else:
                log.append(now)
                log.append(cost)
            used = total + cost
            return (
                Decision(True, 0.0, math.floor(limit - used + EPSILON), float(window), limit),
                log,
                float(window),
            )
        excess = total + cost - limit
        freed = 0.0
        wait = float(window)
        for i in range(0, len(log), 2):
            freed += log[i + 1]
            if freed >= excess - EPSILON:
                wait = log[i] + window - now
                break
        reset = log[-2] + window - now if log else 0.0
        return (
            Decision(
                False, whole_ms(wait), math.floor(max(limit - total, 0) + EPSILON), reset, limit
            ),
            None,
            0.0,
        )


SlidingWindowCounterStrategy = SlidingWindowCounter
SlidingWindowLogStrategy = SlidingWindowLog
