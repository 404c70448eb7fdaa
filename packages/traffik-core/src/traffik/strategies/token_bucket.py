"""Token buckets: `TokenBucket` (burst up to a capacity) and `TokenBucketWithDebt` (may borrow)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, ClassVar

from traffik.decision import Decision
from traffik.exceptions import ConfigurationError
from traffik.strategies.base import EPSILON, StateStrategy, Transition, whole_ms

if TYPE_CHECKING:
    from traffik.rates import Rate

__all__ = [
    "TokenBucket",
    "TokenBucketStrategy",
    "TokenBucketWithDebt",
    "TokenBucketWithDebtStrategy",
]


def _check_count(owner: str, name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigurationError(f"{owner}({name}={value!r}): must be a whole number >= {minimum}")


class TokenBucket(StateStrategy):
    """Tokens refill at `limit` per period up to `burst_size` (default: `limit`); a hit spends `cost`.

    State: `[tokens, last_ms]`; a missing key is a full bucket, and a key expires exactly
    when its bucket would be full again. A rejected hit spends nothing.
    """

    name: ClassVar[str] = "token_bucket"
    suffix: ClassVar[str] = ":tb"
    script: ClassVar[str] = "token_bucket"

    def __init__(self, burst_size: int | None = None) -> None:
        if burst_size is not None:
            _check_count(type(self).__name__, "burst_size", burst_size, 1)
        self.burst_size = burst_size

    def __repr__(self) -> str:
        return f"{type(self).__name__}(burst_size={self.burst_size!r})"

    def _bucket(self, rate: Rate) -> float:
        return float(self.burst_size if self.burst_size is not None else rate.limit)

    def _floor(self) -> float:
        return 0.0

    def capacity(self, rate: Rate) -> float:
        return self._bucket(rate) + self._floor()

    def script_args(self, rate: Rate, cost: float) -> tuple[float, ...]:
        return (rate.limit, rate.expire, cost, self._bucket(rate), self._floor())

    def transition(
        self, state: list[float] | None, now: float, rate: Rate, cost: float
    ) -> Transition:
        bucket, debt = self._bucket(rate), self._floor()
        refill = rate.limit / rate.expire
        tokens = bucket
        if state is not None and len(state) == 2:
            tokens = min(bucket, state[0] + max(now - state[1], 0.0) * refill)
        if tokens - cost >= -debt - EPSILON:
            tokens -= cost
            full_in = (bucket - tokens) / refill
            remaining = math.floor(tokens + debt + EPSILON)
            return (
                Decision(True, 0.0, remaining, full_in, rate.limit),
                [tokens, now],
                max(full_in, 1.0),
            )
        wait = (cost - debt - tokens) / refill
        remaining = max(math.floor(tokens + debt + EPSILON), 0)
        return (
            Decision(False, whole_ms(wait), remaining, (bucket - tokens) / refill, rate.limit),
            None,
            0.0,
        )


class TokenBucketWithDebt(TokenBucket):
    """A token bucket whose balance may go down to `-max_debt`: bursts now, repaid by waiting later."""

    name: ClassVar[str] = "token_bucket_with_debt"
    suffix: ClassVar[str] = ":tbd"

    def __init__(self, burst_size: int | None = None, max_debt: int = 0) -> None:
        super().__init__(burst_size)
        _check_count(type(self).__name__, "max_debt", max_debt, 0)
        self.max_debt = max_debt

    def __repr__(self) -> str:
        return f"{type(self).__name__}(burst_size={self.burst_size!r}, max_debt={self.max_debt!r})"

    def _floor(self) -> float:
        return float(self.max_debt)


TokenBucketStrategy = TokenBucket
TokenBucketWithDebtStrategy = TokenBucketWithDebt
