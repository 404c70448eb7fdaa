"""`CostBasedTokenBucket`: a token bucket that refills more slowly while recent requests are expensive."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Optional

from traffik.decision import Decision
from traffik.exceptions import ConfigurationError
from traffik.rates import MAX_LIMIT, Rate
from traffik.strategies._another_rate import Held, converted, rescaled
from traffik.strategies.base import (
    EXACT_LIMIT,
    Refund,
    StateStrategy,
    Transition,
    ceil_div,
    dated,
    later,
    later_refund,
    never_admitted,
)
from traffik.strategies.periods import check_number

__all__ = ["CostBasedTokenBucket", "CostBasedTokenBucketStrategy"]

THOUSANDTHS = 1000
"""The refill multiplier is kept in thousandths."""
_PACK = 1024
"""`cost_window` and the least multiplier travel to Lua as one number: `window * 1024 + least`."""


class CostBasedTokenBucket(StateStrategy):
    """A token bucket (capacity `burst_size`, default `limit`) whose refill slows with the average cost.

    Tokens refill at `limit` per period times `max(min_refill_rate, 1 / average_cost)`, the
    average over the costs of the last `cost_window` admitted hits: cheap traffic refills at
    the full rate, expensive traffic more slowly. The multiplier is kept in thousandths, and
    the history is forgotten once the bucket is full again (a full bucket is a fresh one). A
    rejected hit spends nothing; its wait is exact at the current refill rate, which only an
    admitted hit changes. State: `[tokens, last_ms, cost1, cost2, ..., limit, -period_ms]`,
    tokens scaled by the period and the thousandths, then the rate it was written under, its
    period negative (a cost never is, so a state written before the rate was kept is read as
    written under the current rate). Read under another rate, the units the bucket missed,
    rounded up, are missing from the new rate's bucket, and the history is kept; a rejected
    hit writes the bucket missing exactly what the old one misses, unless the old rate's
    bucket is larger (`_another_rate.converted`, `base.Transition`).
    `lock_config` is accepted for traffik 1.2 code and unused.
    """

    name: ClassVar[str] = "cost_based_token_bucket"
    suffix: ClassVar[str] = ":cbtb"
    script: ClassVar[str] = "cost_based_token_bucket"
    sizing: ClassVar[tuple[str, ...]] = ("burst_size",)

    def __init__(
        self,
        burst_size: Optional[int] = None,
        cost_window: int = 100,
        min_refill_rate: float = 0.5,
        lock_config: Optional[Mapping[str, Any]] = None,
    ) -> None:
        super().__init__(lock_config)
        owner = type(self).__name__
        for name, value, allowed in (
            ("burst_size", burst_size, burst_size is None),
            ("cost_window", cost_window, False),
        ):
            if not allowed and (
                isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_LIMIT
            ):
                raise ConfigurationError(
                    f"{owner}({name}={value!r}): must be a whole number from 1 to {MAX_LIMIT} "
                    "(MAX_LIMIT, the largest limit of a rate)"
                )
        least = round(check_number(owner, "min_refill_rate", min_refill_rate) * THOUSANDTHS)
        if not 1 <= least <= THOUSANDTHS:
            raise ConfigurationError(
                f"{owner}(min_refill_rate={min_refill_rate!r}): must be within 0.001 and 1"
            )
        self.burst_size = burst_size
        self.cost_window = cost_window
        self.min_refill_rate = min_refill_rate
        self._least = least

    def __repr__(self) -> str:
        return (
            f"CostBasedTokenBucket(burst_size={self.burst_size!r}, "
            f"cost_window={self.cost_window!r}, min_refill_rate={self.min_refill_rate!r})"
        )

    def capacity(self, rate: Rate) -> int:
        return self.burst_size if self.burst_size is not None else rate.limit

    def scale(self, rate: Rate) -> int:
        return 2 * self.capacity(rate) * rate.expire * THOUSANDTHS

    def script_args(self, rate: Rate, cost: int) -> tuple[int, ...]:
        packed = self.cost_window * _PACK + self._least
        size = self.burst_size if self.burst_size is not None else 0  # 0: the limit
        return (rate.limit, rate.expire, cost, size, packed)

    def _refill(self, history: list[int], limit: int) -> int:
        """Scaled tokens refilled per ms: `limit x multiplier`, the multiplier in thousandths."""
        total = sum(history)
        if not history or total <= 0:
            return limit * THOUSANDTHS
        return limit * min(max(self._least, THOUSANDTHS * len(history) // total), THOUSANDTHS)

    def _current(self, state: Optional[list[int]], now: int, rate: Rate) -> tuple[int, list[int]]:
        """The tokens (scaled) at `now` and the cost history; a full bucket has none."""
        full = self.capacity(rate) * rate.expire * THOUSANDTHS
        if state is None or len(state) < 2:
            return full, []
        limit, period = rate.limit, rate.expire
        written = self._rate_of(state)
        if written is not None:  # `[..., limit, -period_ms]`: its rate
            (limit, period), state = written, state[:-2]
            if limit != rate.limit or period != rate.expire:
                return self._carried(state, now, limit, period, rate)
        return self._refilled(state, now, limit, full)

    def _refilled(self, state: list[int], now: int, limit: int, full: int) -> tuple[int, list[int]]:
        """`[tokens, last_ms, cost1, ...]` at `now`, refilling a bucket of `full` at `limit`."""
        tokens, elapsed = state[0], max(now - state[1], 0)
        history = state[2:][-self.cost_window :]
        refill = self._refill(history, limit)
        if elapsed >= ceil_div(full - tokens, refill):
            return full, []
        return tokens + elapsed * refill, history

    def _carried(
        self, state: list[int], now: int, limit: int, period: int, rate: Rate
    ) -> tuple[int, list[int]]:
        """A state written under `limit` per `period` read at `rate`: the units the bucket
        missed at `now`, rounded up (at most its capacity), missing from the new bucket; the
        history (costs, in units) kept."""
        missing = self._missing(state, now, limit, period)
        if missing is None:
            return self.capacity(rate) * rate.expire * THOUSANDTHS, []  # no rate: a fresh key
        bucket = self.burst_size if self.burst_size is not None else limit
        _, history = self._refilled(state, now, limit, bucket * missing[1])
        held = min(ceil_div(missing[0], missing[1]), self.capacity(rate))
        new_unit = rate.expire * THOUSANDTHS
        return (self.capacity(rate) - held) * new_unit, history if held else []

    def _missing(self, state: list[int], now: int, limit: int, period: int) -> Optional[Held]:
        """What `[tokens, last_ms, cost1, ...]`, written under `limit` per `period`, misses at
        `now` (its tokens, a unit being `period` thousandths, refilling at the rate its
        history gives); None when that is no rate it decides exactly (a fresh key)."""
        unit = period * THOUSANDTHS
        bucket = self.burst_size if self.burst_size is not None else limit
        if limit < 1 or period < 1 or 2 * bucket * unit >= EXACT_LIMIT:
            return None
        tokens, history = self._refilled(state, now, limit, bucket * unit)
        return bucket * unit - tokens, unit, self._refill(history, limit), bucket * unit

    @staticmethod
    def _rate_of(state: Optional[list[int]]) -> Optional[tuple[int, int]]:
        """The rate `(limit, period_ms)` a state ends with (`[..., limit, -period_ms]`), or
        None when it has none."""
        if state is not None and len(state) >= 4 and state[-1] < 0:
            return state[-2], -state[-1]
        return None

    @staticmethod
    def _time(state: Optional[list[int]]) -> Optional[int]:
        """The `last_ms` of `state` (None: not such a state)."""
        return state[1] if state is not None and len(state) >= 2 else None

    def transition(self, state: Optional[list[int]], now: int, rate: Rate, cost: int) -> Transition:
        state, at = dated(state, self._time(state), now)
        if at > now:
            return later(self.transition(state, at, rate, cost), at - now)
        limit, unit = rate.limit, rate.expire * THOUSANDTHS
        if cost > self.capacity(rate):
            return never_admitted(rate), None, 0
        full = self.capacity(rate) * unit
        tokens, history = self._current(state, now, rate)
        need = cost * unit
        if tokens >= need:
            tokens -= need
            history = [*history, cost][-self.cost_window :]
            full_in = ceil_div(full - tokens, self._refill(history, rate.limit))
            decision = Decision(True, 0, tokens // unit, full_in, limit)
            state = [tokens, now, *history, limit, -rate.expire]
            return decision, state, max(full_in, 1)
        refill = self._refill(history, rate.limit)
        wait = ceil_div(need - tokens, refill)
        reset = ceil_div(full - tokens, refill)
        decision = Decision(False, wait, max(tokens // unit, 0), reset, limit)
        written = self._rate_of(state)
        if state is not None and written is not None and written != (limit, rate.expire):

            def carry(missing: int, scale: int) -> Transition:
                kept = [full - rescaled(missing, scale, unit), now, *history, limit, -rate.expire]
                decision, _, _ = self.transition(kept, now, rate, cost)
                return decision, kept, int(decision.reset_ms)

            held = self._missing(state[:-2], now, *written)
            return converted(decision, held, self.capacity(rate), cost, carry)
        return decision, None, 0

    def held(self, rate: Rate, cost: int, decision: Decision, age_ms: int) -> int:
        """The units of a charge the bucket still misses (as `draining_held` for a token
        bucket): had the request not happened, the bucket would be whole `cost` units
        sooner. The bucket refills its deficit (`capacity - remaining` units, at the
        decision) linearly until the decision's reset, at the rate then in force, so what
        is still missing is that deficit's share of the time left, rounded up."""
        reset = int(decision.reset_ms)
        left = reset - int(age_ms)
        if left <= 0:
            return 0
        deficit = self.capacity(rate) - int(decision.remaining or 0)
        return min(cost, ceil_div(deficit * left, reset))

    def refund(self, state: Optional[list[int]], now: int, rate: Rate, cost: int) -> Refund:
        state, at = dated(state, self._time(state), now)
        if at > now:
            return later_refund(self.refund(state, at, rate, cost), at - now)
        unit = rate.expire * THOUSANDTHS
        full = self.capacity(rate) * unit
        tokens, history = self._current(state, now, rate)
        tokens = min(full, tokens + cost * unit)
        back = cost
        while history and back:  # the newest costs leave the history first
            taken = min(history[-1], back)
            history[-1] -= taken
            back -= taken
            if not history[-1]:
                history.pop()
        state = [tokens, now, *history, rate.limit, -rate.expire]
        return state, max(ceil_div(full - tokens, self._refill(history, rate.limit)), 1)


CostBasedTokenBucketStrategy = CostBasedTokenBucket
