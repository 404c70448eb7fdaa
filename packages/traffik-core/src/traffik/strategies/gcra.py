"""`GCRA`: the generic cell rate algorithm, one theoretical arrival time per key."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, ClassVar

from traffik.decision import Decision
from traffik.exceptions import ConfigurationError
from traffik.strategies.base import EPSILON, StateStrategy, Transition, whole_ms

if TYPE_CHECKING:
    from traffik.rates import Rate

__all__ = ["GCRA", "GCRAStrategy"]


class GCRA(StateStrategy):
    """Hits are spaced one emission interval (`period / limit`) apart, with a burst allowance.

    `burst_tolerance_ms=None` (the default) allows a burst of `limit`, the classic GCRA
    tolerance of `(limit - 1)` intervals; `0` makes the flow perfectly smooth (one hit per
    interval). State: `[tat_ms]`, the theoretical arrival time; it expires at that time.
    """

    name: ClassVar[str] = "gcra"
    suffix: ClassVar[str] = ":gcra"
    script: ClassVar[str] = "gcra"

    def __init__(self, burst_tolerance_ms: float | None = None) -> None:
        if burst_tolerance_ms is not None and (
            isinstance(burst_tolerance_ms, bool)
            or not isinstance(burst_tolerance_ms, (int, float))
            or not burst_tolerance_ms >= 0
            or not math.isfinite(burst_tolerance_ms)
        ):
            raise ConfigurationError(
                f"GCRA(burst_tolerance_ms={burst_tolerance_ms!r}): must be a finite number >= 0, or None"
            )
        self.burst_tolerance_ms = burst_tolerance_ms

    def __repr__(self) -> str:
        return f"GCRA(burst_tolerance_ms={self.burst_tolerance_ms!r})"

    def _tolerance(self, rate: Rate) -> float:
        if self.burst_tolerance_ms is None:
            return (rate.limit - 1) * rate.expire / rate.limit
        return float(self.burst_tolerance_ms)

    def capacity(self, rate: Rate) -> float:
        return self._tolerance(rate) * rate.limit / rate.expire + 1

    def script_args(self, rate: Rate, cost: float) -> tuple[float, ...]:
        return (rate.limit, rate.expire, cost, self._tolerance(rate))

    def transition(
        self, state: list[float] | None, now: float, rate: Rate, cost: float
    ) -> Transition:
        interval = rate.expire / rate.limit
        span = self._tolerance(rate) + interval
        tat = now
        if state is not None and len(state) == 1 and state[0] > now:
            tat = state[0]
        new_tat = tat + cost * interval
        if new_tat - now <= span + EPSILON:
            backlog = new_tat - now
            remaining = math.floor((span - backlog) / interval + EPSILON)
            return Decision(True, 0.0, remaining, backlog, rate.limit), [new_tat], max(backlog, 1.0)
        backlog = tat - now
        remaining = max(math.floor((span - backlog) / interval + EPSILON), 0)
        return (
            Decision(False, whole_ms(new_tat - span - now), remaining, backlog, rate.limit),
            None,
            0.0,
        )


GCRAStrategy = GCRA
