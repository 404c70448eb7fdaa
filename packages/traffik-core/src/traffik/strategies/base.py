"""The strategy base classes: the `(key, rate, backend, cost) -> wait_ms` contract and one-step decisions."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar, Optional

from traffik.decision import ALLOWED_UNLIMITED, Decision
from traffik.typing import StrategyStat

if TYPE_CHECKING:
    from traffik.backends.base import ThrottleBackend
    from traffik.rates import Rate

__all__ = [
    "EPSILON",
    "StateStrategy",
    "Strategy",
    "Transition",
    "never_admitted",
    "settled",
    "whole_ms",
]

EPSILON = 1e-6
"""Tolerance (ms or units) for float rounding in the transitions."""

Transition = tuple[Decision, Optional[list[float]], float]
"""What a transition returns: the decision, the new state (None: unchanged) and its TTL in ms."""


def whole_ms(wait: float) -> float:
    """A wait rounded up to whole milliseconds, never below 1."""
    return float(max(1, math.ceil(wait - EPSILON)))


def never_admitted(rate: Rate) -> Decision:
    """The answer for a cost above what the strategy can ever admit: rejected, one period."""
    return Decision(False, float(rate.expire), 0, float(rate.expire), rate.limit)


def settled(strategy: Strategy, rate: Rate, cost: float) -> Decision | None:
    """The decision when it needs no state (an unlimited rate, a cost never admitted), else None."""
    if rate.unlimited:
        return ALLOWED_UNLIMITED
    if cost > strategy.capacity(rate):
        return never_admitted(rate)
    return None


class Strategy:
    """Base of the built-in strategies.

    `await strategy(key, rate, backend, cost)` returns the wait in ms (0 means allowed),
    as in traffik 1.2; `decide` returns the full `Decision` that headers are built from.
    Strategies hold configuration only, so one instance serves any number of throttles,
    backends and event loops.
    """

    name: ClassVar[str] = "strategy"

    async def __call__(
        self, key: Any, rate: Rate, backend: ThrottleBackend, cost: float = 1
    ) -> float:
        return (await self.decide(key, rate, backend, cost)).wait_ms

    async def decide(
        self, key: Any, rate: Rate, backend: ThrottleBackend, cost: float = 1
    ) -> Decision:
        raise NotImplementedError

    def decide_now(
        self, key: Any, rate: Rate, backend: ThrottleBackend, cost: float = 1
    ) -> Decision | None:
        """`decide` without awaiting, when the backend can step synchronously; else None."""
        return None

    async def get_stat(self, key: Any, rate: Rate, backend: ThrottleBackend) -> StrategyStat:
        raise NotImplementedError

    def capacity(self, rate: Rate) -> float:
        """The largest cost one request can ever be admitted with."""
        return float(rate.limit)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and vars(self) == vars(other)

    def __hash__(self) -> int:
        return hash((type(self), tuple(sorted(vars(self).items()))))


class StateStrategy(Strategy):
    """A strategy whose decision is a pure transition of a small state, run by the backend.

    `transition(state, now_ms, rate, cost)` is the whole algorithm; the backend runs it
    atomically (`backend.evaluate`): in memory without an `await` inside, on Redis as the
    Lua script named `script`, on Memcached under compare-and-swap.
    """

    suffix: ClassVar[str] = ""
    script: ClassVar[str] = ""

    def transition(
        self, state: list[float] | None, now: float, rate: Rate, cost: float
    ) -> Transition:
        raise NotImplementedError

    def script_args(self, rate: Rate, cost: float) -> tuple[float, ...]:
        """Numbers the Redis script receives after the key: limit, period ms, cost, then parameters."""
        return (rate.limit, rate.expire, cost)

    async def decide(
        self, key: Any, rate: Rate, backend: ThrottleBackend, cost: float = 1
    ) -> Decision:
        early = settled(self, rate, cost)
        if early is not None:
            return early
        return await backend.evaluate(backend.get_key(key) + self.suffix, self, rate, cost)

    def decide_now(
        self, key: Any, rate: Rate, backend: ThrottleBackend, cost: float = 1
    ) -> Decision | None:
        ops = backend.immediate()
        if ops is None:
            return None
        early = settled(self, rate, cost)
        if early is not None:
            return early
        return ops.evaluate_now(backend.get_key(key) + self.suffix, self, rate, cost)

    async def get_stat(self, key: Any, rate: Rate, backend: ThrottleBackend) -> StrategyStat:
        if rate.unlimited:
            return StrategyStat.unlimited(key, rate)
        decision = await backend.evaluate(
            backend.get_key(key) + self.suffix, self, rate, 1, commit=False
        )
        remaining = decision.remaining + 1 if decision.allowed else decision.remaining
        return StrategyStat(
            key=key,
            rate=rate,
            hits_remaining=remaining,
            wait_ms=decision.wait_ms,
            metadata={"strategy": self.name, "reset_ms": decision.reset_ms},
        )
