"""`QuotaWithRollover`: a quota per clock-aligned period, plus part of what the last period left unused."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Optional

from traffik.decision import Decision
from traffik.exceptions import ConfigurationError
from traffik.rates import MAX_LIMIT, Rate
from traffik.strategies.base import (
    Refund,
    StateStrategy,
    Transition,
    later,
    later_refund,
    never_admitted,
)
from traffik.strategies.periods import (
    PARTS,
    aligned,
    of_another_period,
    of_period,
    to_parts,
    window_start,
)

__all__ = ["QuotaWithRollover", "QuotaWithRolloverStrategy"]


class QuotaWithRollover(StateStrategy):
    """`limit` units per clock-aligned period, plus a rollover from the period before.

    A period's rollover is `min(max_rollover, int(unused * rollover_percentage))`, where
    `unused` is what the client left of the previous period's base `limit`; a client not
    seen in the previous period rolls nothing over (as in traffik 1.2), nor one whose hits
    there were all given back (`refund`: as if they had not happened). A rejected hit
    counts nothing and waits for the next period. One request may cost at most `limit`: a
    larger cost could only pass on a rollover that is never certain, so it is refused
    outright (`wait_ms` one period). The percentage is kept to 1/100000. State:
    `[period_id, usage, rollover, period_ms]`, kept through the next period. Read under
    another limit, the usage is kept and the rollover is at most what the new limit could
    roll over; under another period, the usage and rollover of a period still open carry into
    this period's (`periods.of_period`; a rejected hit writes them there: `base.Transition`),
    and a closed one starts afresh. A `[period_id, usage,
    rollover]` state (written before the period was kept) is read as counted in the current
    period. `lock_config` is accepted for traffik 1.2 code and unused.
    """

    name: ClassVar[str] = "quota_with_rollover"
    suffix: ClassVar[str] = ":roll"
    script: ClassVar[str] = "quota_with_rollover"
    sizing: ClassVar[tuple[str, ...]] = ("max_rollover",)

    def __init__(
        self,
        rollover_percentage: float = 0.5,
        max_rollover: int = 500,
        lock_config: Optional[Mapping[str, Any]] = None,
    ) -> None:
        super().__init__(lock_config)
        owner = type(self).__name__
        self._percent = to_parts(
            owner, "rollover_percentage", rollover_percentage, zero=True, one=True
        )
        if (
            isinstance(max_rollover, bool)
            or not isinstance(max_rollover, int)
            or not 0 <= max_rollover <= MAX_LIMIT
        ):
            raise ConfigurationError(
                f"{owner}(max_rollover={max_rollover!r}): must be a whole number from 0 to "
                f"{MAX_LIMIT} (MAX_LIMIT, the largest limit of a rate)"
            )
        self.rollover_percentage = rollover_percentage
        self.max_rollover = max_rollover

    def __repr__(self) -> str:
        return (
            f"QuotaWithRollover(rollover_percentage={self.rollover_percentage!r}, "
            f"max_rollover={self.max_rollover!r})"
        )

    def scale(self, rate: Rate) -> int:
        return 2 * max(rate.limit * PARTS, (rate.limit + self.max_rollover) * rate.expire)

    def script_args(self, rate: Rate, cost: int) -> tuple[int, ...]:
        return (rate.limit, rate.expire, cost, self._percent, self.max_rollover)

    def _period(
        self, state: Optional[list[int]], now: int, rate: Rate
    ) -> tuple[int, int, int, int]:
        """`(period_id, ms left, usage, rollover)` at `now`."""
        limit, period = rate.limit, rate.expire
        pid, left = aligned(now, period)
        state = of_period(state, 4, period, now)
        if state is not None:
            if state[0] == pid:  # at most what this limit rolls over
                most = min(self.max_rollover, limit * self._percent // PARTS)
                return pid, left, state[1], min(state[2], most)
            if state[0] == pid - 1 and state[1] > 0:  # (seen: it used some of that period)
                unused = min(max(limit - state[1], 0), limit)
                return pid, left, 0, min(self.max_rollover, unused * self._percent // PARTS)
        return pid, left, 0, 0

    def transition(self, state: Optional[list[int]], now: int, rate: Rate, cost: int) -> Transition:
        at = window_start(state, now, 4, rate.expire)
        if at > now:
            return later(self.transition(state, at, rate, cost), at - now)
        limit = rate.limit
        if cost > limit:
            return never_admitted(rate), None, 0
        pid, left, usage, rollover = self._period(state, now, rate)
        quota = limit + rollover
        if usage + cost <= quota:
            usage += cost
            decision = Decision(True, 0, max(quota - usage, 0), left, limit)
            return decision, [pid, usage, rollover, rate.expire], left + rate.expire
        reset = left if usage > 0 else 0
        decision = Decision(False, left, max(quota - usage, 0), reset, limit)
        if of_another_period(state, 4, rate.expire, now):  # (carried, written: `base.Transition`)
            return decision, [pid, usage, rollover, rate.expire], left + rate.expire
        return decision, None, 0

    def refund(self, state: Optional[list[int]], now: int, rate: Rate, cost: int) -> Refund:
        at = window_start(state, now, 4, rate.expire)
        if at > now:
            return later_refund(self.refund(state, at, rate, cost), at - now)
        pid, left, usage, rollover = self._period(state, now, rate)
        return [pid, max(usage - cost, 0), rollover, rate.expire], left + rate.expire


QuotaWithRolloverStrategy = QuotaWithRollover
