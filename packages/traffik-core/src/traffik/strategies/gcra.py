"""`GCRA`: the generic cell rate algorithm, one theoretical arrival time per key."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Optional

from traffik.decision import Decision
from traffik.exceptions import ConfigurationError
from traffik.rates import MAX_PERIOD_MS
from traffik.strategies._another_rate import (
    converted,
    held_at_its_rate,
    of_another_rate,
    rated_amount,
    rescaled,
)
from traffik.strategies.base import (
    AHEAD_MS,
    Refund,
    StateStrategy,
    Transition,
    ceil_div,
    draining_held,
    never_admitted,
)

if TYPE_CHECKING:
    from traffik.backends.base import ThrottleBackend
    from traffik.rates import Rate
    from traffik.typing import StrategyStat

__all__ = ["GCRA", "GCRAStrategy"]


class GCRA(StateStrategy):
    """Hits are spaced one emission interval (`period / limit`) apart, with a burst allowance.

    `burst_tolerance_ms=None` (the default) allows a burst of `limit`, the classic GCRA
    tolerance of `(limit - 1)` intervals; `0` makes the flow perfectly smooth (one hit per
    interval). Time is counted in `1/limit` ms, where an interval is exactly `period` units
    (a tolerance is taken to that precision). State: `[tat_ms, tat_rest, limit, period_ms]`,
    the theoretical arrival time `tat_ms + tat_rest / limit`, then the rate it was written
    under; it expires at that time. Read under another rate, the backlog at that moment,
    rounded up to whole units (intervals of the old rate), becomes as many intervals of the
    new one (at most its capacity). A rejected hit writes the backlog exactly, as intervals
    of the new rate, unless a state of the old rate can hold more than the new capacity
    (its span, `_span`: `_another_rate.converted`, `base.Transition`); decided on that
    backlog, the hit is admitted when the part of an interval it holds fits the part of the
    tolerance short of a whole interval. A `[tat_ms, tat_rest]` state (written before the
    rate was kept) is read as written under the current rate.

    A decision's reset is when the budget is whole again: a hit of the whole capacity is
    admitted once the backlog is down to the part of the tolerance short of a whole interval
    (no unit fits in it), which is before the arrival time when the tolerance is not a whole
    number of intervals. At `3/90s` (an interval of 30 s) with `burst_tolerance_ms=1500`, a
    hit's reset is 28.5 s; the state lives until the arrival time.

    A host whose clock is behind finds the arrival time further away. An arrival time
    further ahead than any hit could have put it (the period it was written under plus the
    tolerance) by more than `AHEAD_MS` (a clock stepped back, a host set far ahead) is no
    state (`base.dated`).
    """

    name: ClassVar[str] = "gcra"
    suffix: ClassVar[str] = ":gcra"
    script: ClassVar[str] = "gcra"
    sizing: ClassVar[tuple[str, ...]] = ("burst_tolerance_ms",)

    def __init__(
        self,
        burst_tolerance_ms: Optional[float] = None,
        lock_config: Optional[Mapping[str, Any]] = None,
    ) -> None:
        super().__init__(lock_config)
        if burst_tolerance_ms is not None and (
            isinstance(burst_tolerance_ms, bool)
            or not isinstance(burst_tolerance_ms, (int, float))
            or not 0 <= burst_tolerance_ms <= MAX_PERIOD_MS  # (NaN and infinity fail)
        ):
            raise ConfigurationError(
                f"GCRA(burst_tolerance_ms={burst_tolerance_ms!r}): must be a finite number of "
                f"milliseconds from 0 to {MAX_PERIOD_MS} (MAX_PERIOD_MS, the longest period of "
                "a rate), or None"
            )
        self.burst_tolerance_ms = burst_tolerance_ms

    def __repr__(self) -> str:
        return f"GCRA(burst_tolerance_ms={self.burst_tolerance_ms!r})"

    def tolerance(self, rate: Rate) -> int:
        """The burst tolerance in `1/limit` ms."""
        return self._tolerance(rate.limit, rate.expire)

    def _tolerance(self, limit: int, period: int) -> int:
        """The burst tolerance at `limit` per `period` ms, in `1/limit` ms."""
        if self.burst_tolerance_ms is None:
            return (limit - 1) * period
        return round(self.burst_tolerance_ms * limit)

    def capacity(self, rate: Rate) -> int:
        return (self.tolerance(rate) + rate.expire) // rate.expire

    def scale(self, rate: Rate) -> int:
        return 2 * (self.tolerance(rate) + rate.expire)

    def script_args(self, rate: Rate, cost: int) -> tuple[float, ...]:
        # (then the tolerance in ms, -1 for None: the span of a state of another rate)
        ms = -1 if self.burst_tolerance_ms is None else self.burst_tolerance_ms
        return (rate.limit, rate.expire, cost, self.tolerance(rate), ms)

    async def get_stat(self, key: Any, rate: Rate, backend: ThrottleBackend) -> StrategyStat:
        """As every strategy's, with traffik 1.2's metadata: `tat_ms` (the theoretical arrival
        time, to the millisecond), `emission_interval_ms`, `burst_tolerance_ms`, `conformant`."""
        stat = await super().get_stat(key, rate, backend)
        if rate.unlimited or stat.metadata is None:
            return stat
        interval = rate.expire / rate.limit
        conformant = stat.wait_ms == 0
        # (The reset is when the backlog is down to `_slack`: the arrival time is that later;
        # a conformant peek counts the interval of the hit it would admit.)
        arrival = stat.metadata["reset_ms"] + self._slack(rate) / rate.limit
        arrival = max(arrival - interval, 0) if conformant else arrival
        return dataclasses.replace(
            stat,
            metadata={
                **stat.metadata,
                "tat_ms": backend.now_ms() + arrival,
                "emission_interval_ms": interval,
                "burst_tolerance_ms": self.tolerance(rate) / rate.limit,
                "conformant": conformant,
            },
        )

    def _slack(self, rate: Rate) -> int:
        """The part of the tolerance short of a whole interval, in 1/limit ms: no unit fits in
        it, so the budget is whole once the backlog is down to it."""
        return (self.tolerance(rate) + rate.expire) % rate.expire

    def _reset(self, backlog: int, rate: Rate) -> int:
        """The ms until the budget is whole again, from a backlog in 1/limit ms."""
        return ceil_div(max(backlog - self._slack(rate), 0), rate.limit)

    def _backlog(self, state: Optional[list[int]], now: int, rate: Rate) -> int:
        """The theoretical arrival time minus `now`, in 1/limit ms (0 when it has passed, or
        is further ahead than believed: `_reach`)."""
        if state is not None and len(state) in (2, 4):
            period = state[3] if len(state) == 4 else rate.expire
            if state[0] - now > self._reach(period, rate):
                return 0
        return rated_amount(state, now, rate, _behind, self.capacity(rate))

    def _reach(self, period: int, rate: Rate) -> int:
        """How far (ms) past `now` an arrival time written under a rate of `period` is
        believed: the period, the tolerance (at `rate`, rounded up) and `AHEAD_MS`."""
        return period + ceil_div(self.tolerance(rate), rate.limit) + AHEAD_MS

    def transition(self, state: Optional[list[int]], now: int, rate: Rate, cost: int) -> Transition:
        limit, interval = rate.limit, rate.expire
        span = self.tolerance(rate) + interval
        backlog = self._backlog(state, now, rate)
        after = backlog + cost * interval
        if after <= span:
            tat_ms, tat_rest = divmod(after, limit)
            return (
                Decision(True, 0, (span - after) // interval, self._reset(after, rate), limit),
                [now + tat_ms, tat_rest, limit, interval],
                max(ceil_div(after, limit), 1),  # (the state lives until the arrival time)
            )
        if cost * interval > span:  # (more than `capacity`: never admitted, as `settled` says)
            return never_admitted(rate), None, 0
        wait = ceil_div(after - span, limit)
        remaining = max((span - backlog) // interval, 0)
        decision = Decision(False, wait, remaining, self._reset(backlog, rate), limit)
        if state is not None and of_another_rate(state, rate):

            def carry(behind: int, scale: int) -> Transition:
                # (Admitted there when the part of a unit it holds fits the part of the
                # tolerance short of a whole interval, which whole units never fit.)
                backlog = rescaled(behind, scale, interval)
                tat_ms, tat_rest = divmod(backlog, limit)
                kept = [now + tat_ms, tat_rest, limit, interval]
                made = self.transition(kept, now, rate, cost)
                return made if made[0].allowed else (made[0], kept, ceil_div(backlog, limit))

            held = held_at_its_rate(state, now, _behind, self._span)
            return converted(decision, held, self.capacity(rate), cost, carry)
        return decision, None, 0

    def _span(self, limit: int, period: int) -> int:
        """The most backlog a state written at `limit` per `period` holds (in its 1/limit
        ms): its tolerance and an interval."""
        return self._tolerance(limit, period) + period

    held = draining_held

    def refund(self, state: Optional[list[int]], now: int, rate: Rate, cost: int) -> Refund:
        backlog = max(self._backlog(state, now, rate) - cost * rate.expire, 0)
        tat_ms, tat_rest = divmod(backlog, rate.limit)
        state = [now + tat_ms, tat_rest, rate.limit, rate.expire]
        return state, max(ceil_div(backlog, rate.limit), 1)


def _behind(state: list[int], now: int, limit: int) -> int:
    """How far the arrival time `state[0] + state[1] / limit` is past `now`, in 1/limit ms
    (0 when it has passed)."""
    if (state[0], state[1]) > (now, 0):
        return (state[0] - now) * limit + state[1]
    return 0


GCRAStrategy = GCRA
