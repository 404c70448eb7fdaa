"""Token buckets: `TokenBucket` (burst up to a capacity) and `TokenBucketWithDebt` (may borrow)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Optional

from traffik.decision import Decision
from traffik.exceptions import ConfigurationError
from traffik.rates import MAX_LIMIT
from traffik.strategies._another_rate import Held, converted, of_another_rate, rescaled
from traffik.strategies.base import (
    EXACT_LIMIT,
    Refund,
    StateStrategy,
    Transition,
    ceil_div,
    dated,
    draining_held,
    later,
    later_refund,
    never_admitted,
)
from traffik.strategies.stat_metadata import (  # (traffik 1.2 exported them here)
    TokenBucketStatMetadata,
    TokenBucketWithDebtStatMetadata,
)

if TYPE_CHECKING:
    from traffik.rates import Rate

__all__ = [
    "TokenBucket",
    "TokenBucketStatMetadata",
    "TokenBucketStrategy",
    "TokenBucketWithDebt",
    "TokenBucketWithDebtStatMetadata",
    "TokenBucketWithDebtStrategy",
]


def _check_count(owner: str, name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= MAX_LIMIT:
        raise ConfigurationError(
            f"{owner}({name}={value!r}): must be a whole number from {minimum} to {MAX_LIMIT} "
            "(MAX_LIMIT, the largest limit of a rate)"
        )


def _time(state: Optional[list[int]]) -> Optional[int]:
    """The last update of a `[tokens, last_ms, ...]` state (None: not such a state)."""
    return state[1] if state is not None and len(state) in (2, 4) else None


class TokenBucket(StateStrategy):
    """Tokens refill at `limit` per period up to `burst_size` (default: `limit`); a hit spends `cost`.

    State: `[tokens, last_ms, limit, period_ms]`, tokens scaled by the period (a token is
    `period` units and `limit` units refill per millisecond), then the rate it was written
    under; a missing key is a full bucket, and a key expires exactly when its bucket would be
    full again. A rejected hit spends nothing. Read under another rate (`update_rate`, a rate
    callable, a deploy), the tokens the bucket missed at that moment, rounded up to whole
    units, are missing from the new rate's bucket (at most its capacity): the client keeps
    what it spent; a rejected hit writes the bucket missing exactly what the old one misses,
    unless the old rate's bucket is larger (`_another_rate.converted`, `base.Transition`).
    A `[tokens, last_ms]` state (written before the rate was kept) is read as
    written under the current rate. A host whose clock is behind `last_ms` decides at it
    (`base.dated`: from more than `AHEAD_MS` ahead, it is no state).
    """

    name: ClassVar[str] = "token_bucket"
    suffix: ClassVar[str] = ":tb"
    script: ClassVar[str] = "token_bucket"
    sizing: ClassVar[tuple[str, ...]] = ("burst_size", "max_debt")

    def __init__(
        self, burst_size: Optional[int] = None, lock_config: Optional[Mapping[str, Any]] = None
    ) -> None:
        super().__init__(lock_config)
        if burst_size is not None:
            _check_count(type(self).__name__, "burst_size", burst_size, 1)
        self.burst_size = burst_size

    def __repr__(self) -> str:
        return f"{type(self).__name__}(burst_size={self.burst_size!r})"

    def _bucket(self, rate: Rate) -> int:
        return self.burst_size if self.burst_size is not None else rate.limit

    def _debt(self) -> int:
        return 0

    def capacity(self, rate: Rate) -> int:
        return self._bucket(rate) + self._debt()

    def script_args(self, rate: Rate, cost: int) -> tuple[int, ...]:
        size = self.burst_size if self.burst_size is not None else 0  # 0: the limit
        return (rate.limit, rate.expire, cost, size, self._debt())

    def _tokens(self, state: Optional[list[int]], now: int, rate: Rate) -> int:
        """The tokens (scaled) in the bucket at `now`."""
        limit, period = rate.limit, rate.expire
        full = self._bucket(rate) * period
        if state is None or len(state) not in (2, 4):
            return full
        if of_another_rate(state, rate):
            held = self._missing(state, now)
            if held is None:
                return full
            return full - min(ceil_div(held[0], held[1]), self.capacity(rate)) * period
        tokens, elapsed = state[0], max(now - state[1], 0)
        if elapsed >= ceil_div(full - tokens, limit):
            return full
        return tokens + elapsed * limit

    def _missing(self, state: list[int], now: int) -> Optional[Held]:
        """What a `[tokens, last_ms, limit, period_ms]` state still misses at `now` under the
        rate it was written under (the tokens, scaled by its period, which refill `limit`
        per ms, and the most it can miss: its capacity); None when its last two numbers are
        no rate this bucket decides exactly (a fresh key)."""
        tokens, last, limit, period = state
        bucket = self.burst_size if self.burst_size is not None else limit
        most = (bucket + self._debt()) * period
        if limit < 1 or period < 1 or 2 * most >= EXACT_LIMIT:
            return None
        missing, elapsed = bucket * period - tokens, max(now - last, 0)
        if elapsed >= ceil_div(missing, limit):
            return 0, period, limit, most
        return missing - elapsed * limit, period, limit, most

    def transition(self, state: Optional[list[int]], now: int, rate: Rate, cost: int) -> Transition:
        state, at = dated(state, _time(state), now)
        if at > now:
            return later(self.transition(state, at, rate, cost), at - now)
        period, refill = rate.expire, rate.limit
        full, floor = self._bucket(rate) * period, -self._debt() * period
        tokens = self._tokens(state, now, rate)
        need = cost * period
        if tokens - need >= floor:
            tokens -= need
            full_in = -(-(full - tokens) // refill)
            remaining = (tokens - floor) // period
            state = [tokens, now, refill, period]
            return Decision(True, 0, remaining, full_in, rate.limit), state, max(full_in, 1)
        if need > full - floor:  # (more than `capacity`: never admitted, as `settled` says)
            return never_admitted(rate), None, 0
        wait = -(-(need - tokens + floor) // refill)
        remaining = max((tokens - floor) // period, 0)
        reset = -(-(full - tokens) // refill)
        decision = Decision(False, wait, remaining, reset, rate.limit)
        if state is not None and of_another_rate(state, rate):

            def carry(missing: int, scale: int) -> Transition:
                kept = [full - rescaled(missing, scale, period), now, refill, period]
                decision, _, _ = self.transition(kept, now, rate, cost)
                return decision, kept, int(decision.reset_ms)

            return converted(decision, self._missing(state, now), self.capacity(rate), cost, carry)
        return decision, None, 0

    held = draining_held

    def refund(self, state: Optional[list[int]], now: int, rate: Rate, cost: int) -> Refund:
        state, at = dated(state, _time(state), now)
        if at > now:
            return later_refund(self.refund(state, at, rate, cost), at - now)
        full = self._bucket(rate) * rate.expire
        tokens = min(full, self._tokens(state, now, rate) + cost * rate.expire)
        state = [tokens, now, rate.limit, rate.expire]
        return state, max(ceil_div(full - tokens, rate.limit), 1)


class TokenBucketWithDebt(TokenBucket):
    """A token bucket whose balance may go down to `-max_debt`: bursts now, repaid by waiting later."""

    name: ClassVar[str] = "token_bucket_with_debt"
    suffix: ClassVar[str] = ":tbd"

    def __init__(
        self,
        burst_size: Optional[int] = None,
        max_debt: int = 0,
        lock_config: Optional[Mapping[str, Any]] = None,
    ) -> None:
        super().__init__(burst_size, lock_config)
        _check_count(type(self).__name__, "max_debt", max_debt, 0)
        self.max_debt = max_debt

    def __repr__(self) -> str:
        return f"{type(self).__name__}(burst_size={self.burst_size!r}, max_debt={self.max_debt!r})"

    def _debt(self) -> int:
        return self.max_debt


TokenBucketStrategy = TokenBucket
TokenBucketWithDebtStrategy = TokenBucketWithDebt
