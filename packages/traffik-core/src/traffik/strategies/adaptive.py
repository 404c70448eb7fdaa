"""`AdaptiveThrottle`: a clock-aligned window whose limit shrinks under load and recovers window by window."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Optional

from traffik.decision import Decision
from traffik.rates import Rate
from traffik.strategies.base import (
    EXACT_LIMIT,
    Refund,
    StateStrategy,
    Transition,
    ahead,
    ceil_div,
    later,
    later_refund,
    never_admitted,
)
from traffik.strategies.periods import PARTS, aligned, still_open, to_parts

__all__ = ["AdaptiveThrottle", "AdaptiveThrottleStrategy"]

_Window = tuple[int, int, int, int, int]
"""`(window_id, ms left, count, effective limit, cut_from)` at some `now`: `cut_from` is the
limit in force before this window's cut, 0 while it has not been cut."""


class AdaptiveThrottle(StateStrategy):
    """A window limit that drops when a client's load passes a threshold, then recovers.

    Windows are clock-aligned periods; each has a count and an effective limit, which starts
    at `limit`. The hit that takes the load (`count / effective limit`) past
    `load_threshold` is admitted and cuts the effective limit to `reduction_factor` of
    itself, never below `min_limit_ratio x limit`, for the rest of the window: **once per
    window** (traffik 1.2 cut it again on every later request, compounding). A refund that
    takes the count back to the threshold or under undoes the cut, as if the hits it gives
    back had not happened. Each new window then recovers `recovery_rate x limit` (at least
    one unit), idle windows included, up to `limit`. A decision's `remaining` counts the cut
    to come: the hits of cost 1 the window still admits (`_left`). A rejected hit counts
    nothing; it waits for the first window whose recovered limit fits its cost. Fractions
    are kept to 1/100000. State: `[window_id, count, effective_limit, cut_from, limit,
    period_ms]`, `cut_from` the limit in force before this window's cut (0: not cut), kept
    until the limit has recovered, then the rate it was written under. Read under another
    limit, the count is kept and the effective limit and `cut_from` keep their share of the
    limit (a client cut to 60% of `100/min` is at 60% of `10/min`: never above the new
    limit); under another period, a window still open carries into this period's (count and
    share), and a closed one is the window before (one recovery step); a rejected hit writes
    the state read under another rate as this rate's (`base.Transition`). A `[window_id, count,
    effective_limit, cut_from]` state (written before the rate was kept) is read as written
    under the current rate.
    `lock_config` is accepted for traffik 1.2 code and unused.
    """

    name: ClassVar[str] = "adaptive_throttle"
    suffix: ClassVar[str] = ":adapt"
    script: ClassVar[str] = "adaptive_throttle"

    def __init__(
        self,
        load_threshold: float = 0.8,
        reduction_factor: float = 0.6,
        recovery_rate: float = 0.1,
        min_limit_ratio: float = 0.3,
        lock_config: Optional[Mapping[str, Any]] = None,
    ) -> None:
        super().__init__(lock_config)
        owner = type(self).__name__
        self._threshold = to_parts(owner, "load_threshold", load_threshold, zero=False, one=False)
        self._reduction = to_parts(
            owner, "reduction_factor", reduction_factor, zero=False, one=False
        )
        self._recovery = to_parts(owner, "recovery_rate", recovery_rate, zero=False, one=False)
        self._floor = to_parts(owner, "min_limit_ratio", min_limit_ratio, zero=False, one=False)
        self.load_threshold = load_threshold
        self.reduction_factor = reduction_factor
        self.recovery_rate = recovery_rate
        self.min_limit_ratio = min_limit_ratio

    def __repr__(self) -> str:
        return (
            f"AdaptiveThrottle(load_threshold={self.load_threshold!r}, "
            f"reduction_factor={self.reduction_factor!r}, recovery_rate={self.recovery_rate!r}, "
            f"min_limit_ratio={self.min_limit_ratio!r})"
        )

    def scale(self, rate: Rate) -> int:
        return 2 * rate.limit * max(rate.expire, PARTS)

    def script_args(self, rate: Rate, cost: int) -> tuple[int, ...]:
        return (
            rate.limit,
            rate.expire,
            cost,
            self._threshold * PARTS + self._reduction,
            self._recovery * PARTS + self._floor,
        )

    def _step(self, rate: Rate) -> int:
        """Units the effective limit recovers per window (at least one)."""
        return max(rate.limit * self._recovery // PARTS, 1)

    @staticmethod
    def _start(state: Optional[list[int]], now: int, rate: Rate) -> int:
        """When to decide on `state`: `now`, or the start of its window when later (a state
        of another period: `now`, see `_window`)."""
        if (
            state is not None
            and (len(state) == 4 or (len(state) == 6 and state[5] == rate.expire))
            and ahead(state[0] * rate.expire, now)
        ):
            return state[0] * rate.expire
        return now

    def _window(self, state: Optional[list[int]], now: int, rate: Rate) -> _Window:
        limit = rate.limit
        wid, left = aligned(now, rate.expire)
        if state is None or len(state) not in (4, 6):
            return wid, left, 0, limit, 0
        if len(state) == 6 and state[5] != rate.expire:
            # Another period: its window, while it holds `now` (or is later and believed),
            # is `now`'s window here, with its count; once closed, the window before (its
            # effective limit recovers one step).
            other = state[5]
            if other < 1:
                return wid, left, 0, limit, 0
            state = [wid if still_open(state[0], other, now) else wid - 1, *state[1:]]
        if state[0] > wid:
            return wid, left, 0, limit, 0
        effective, cut_from = state[2], state[3]
        if len(state) == 6 and (state[4] != limit or state[5] != rate.expire):
            was = state[4]
            if was < 1 or 2 * was * PARTS >= EXACT_LIMIT:
                return wid, left, 0, limit, 0  # no rate: a fresh key
            # Their share of the old limit, in parts (as the Lua port computes it exactly).
            share = min(effective, was) * PARTS // was
            effective = max(limit * self._floor // PARTS, limit * share // PARTS)
            cut_from = ceil_div(limit * ceil_div(min(cut_from, was) * PARTS, was), PARTS)
        effective = min(effective, limit)
        if state[0] == wid:
            return wid, left, state[1], effective, cut_from
        if effective < limit:  # recovers one step per window gone by, up to the limit
            step = self._step(rate)
            windows = min(wid - state[0], ceil_div(limit - effective, step))
            effective = min(effective + windows * step, limit)
        return wid, left, 0, effective, 0

    def _left(self, count: int, effective: int, cut_from: int, rate: Rate) -> int:
        """The hits of cost 1 admitted from now in this window: up to `effective`, or, when
        not cut yet, up to the hit that cuts it (admitted) and then the cut limit."""
        reach = effective
        if not cut_from:
            cutting = max(effective * self._threshold // PARTS + 1, count + 1)
            if cutting <= effective:
                cut = max(rate.limit * self._floor // PARTS, effective * self._reduction // PARTS)
                reach = max(cutting, cut)
        return max(reach - count, 0)

    def _kept(self, left: int, effective: int, rate: Rate) -> int:
        """Ms until the state says nothing a missing key would not: this window's end, then
        the windows the effective limit still needs to recover."""
        if effective >= rate.limit:
            return left
        windows = ceil_div(rate.limit - effective, self._step(rate))
        return left + (windows - 1) * rate.expire

    def transition(self, state: Optional[list[int]], now: int, rate: Rate, cost: int) -> Transition:
        at = self._start(state, now, rate)
        if at > now:
            return later(self.transition(state, at, rate, cost), at - now)
        limit = rate.limit
        if cost > limit:
            return never_admitted(rate), None, 0
        wid, left, count, effective, cut_from = self._window(state, now, rate)
        after = count + cost
        if after <= effective:
            if not cut_from and after * PARTS > effective * self._threshold:
                floor = limit * self._floor // PARTS
                cut_from = effective  # (>= after >= 1: a refund can undo the cut)
                effective = max(floor, effective * self._reduction // PARTS)
            kept = self._kept(left, effective, rate)
            decision = Decision(True, 0, self._left(after, effective, cut_from, rate), kept, limit)
            return decision, [wid, after, effective, cut_from, limit, rate.expire], kept
        # The next windows: `effective` recovers one step each, until it fits `cost`.
        windows = 1
        if cost > effective:
            windows = max(ceil_div(cost - effective, self._step(rate)), 1)
        wait = left + (windows - 1) * rate.expire
        kept = self._kept(left, effective, rate)
        reset = kept if count > 0 or effective < limit else 0
        remaining = self._left(count, effective, cut_from, rate)
        decision = Decision(False, wait, remaining, reset, limit)
        if state is not None and len(state) == 6 and (state[4] != limit or state[5] != rate.expire):
            # (written as this rate's, nothing counted: `base.Transition`)
            return decision, [wid, count, effective, cut_from, limit, rate.expire], kept
        return decision, None, 0

    def held(self, rate: Rate, cost: int, decision: Decision, age_ms: int) -> int:
        """All of a charge while its window is open, then nothing (a new window counts
        afresh). An admitted decision's reset is `_kept`: the window's ms left plus whole
        periods of recovery, so the window's part is what it leaves modulo the period."""
        left = (int(decision.reset_ms) - 1) % rate.expire + 1
        return cost if age_ms < left else 0

    def refund(self, state: Optional[list[int]], now: int, rate: Rate, cost: int) -> Refund:
        at = self._start(state, now, rate)
        if at > now:
            return later_refund(self.refund(state, at, rate, cost), at - now)
        wid, left, count, effective, cut_from = self._window(state, now, rate)
        count = max(count - cost, 0)
        if cut_from and count * PARTS <= cut_from * self._threshold:  # no hit passed it
            effective, cut_from = max(effective, cut_from), 0
        state = [wid, count, effective, cut_from, rate.limit, rate.expire]
        return state, self._kept(left, effective, rate)


AdaptiveThrottleStrategy = AdaptiveThrottle
