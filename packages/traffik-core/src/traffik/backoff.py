"""Backoff strategies: how long to wait before attempt number `attempt`, given a base delay.

As in traffik 1.2, `retry` and `failover` make their first retry at once (attempt 0) and ask
the backoff for the wait before each later one: attempt 1 waits `backoff(1, base_delay)`.
"""

from __future__ import annotations

import enum
import math
import random
from typing import Callable, Union

from traffik.exceptions import ConfigurationError

__all__ = [
    "DEFAULT_BACKOFF",
    "BackoffStrategy",
    "ConstantBackoff",
    "ExponentialBackoff",
    "JitterType",
    "LinearBackoff",
    "LogarithmicBackoff",
]

BackoffStrategy = Callable[[int, float], float]
"""A backoff: `(attempt, base_delay) -> seconds`, the wait before attempt `attempt` (from 1;
attempt 0, the first retry, runs at once)."""


class JitterType(enum.Enum):
    """Randomness added to a delay `d`: none, uniform over `[0, d]`, or `d/2` plus uniform over `[0, d/2]`."""

    NONE = "none"
    FULL = "full"
    EQUAL = "equal"


JitterLike = Union[JitterType, bool, str]


def _jitter_type(owner: str, jitter: JitterLike) -> JitterType:
    if isinstance(jitter, bool):
        return JitterType.EQUAL if jitter else JitterType.NONE
    try:
        return JitterType(jitter)
    except ValueError:
        raise ConfigurationError(
            f"{owner}(jitter={jitter!r}): use a JitterType, one of "
            f"{', '.join(repr(j.value) for j in JitterType)}, or a bool (True means 'equal')"
        ) from None


def _check_number(owner: str, name: str, value: object, *, above: float, inclusive: bool) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or (value < above if inclusive else value <= above)
    ):
        bound = ">=" if inclusive else ">"
        raise ConfigurationError(
            f"{owner}({name}={value!r}): must be a finite number {bound} {above:g}"
        )
    return float(value)


def _check_call(owner: str, attempt: object, base_delay: object) -> float:
    if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1:
        raise ConfigurationError(
            f"{owner}: attempt={attempt!r} must be a whole number >= 1 (the first retry, attempt 0, waits for nothing)"
        )
    return _check_number(owner, "base_delay", base_delay, above=0, inclusive=True)


def ConstantBackoff(attempt: int, base_delay: float) -> float:
    """Always `base_delay`."""
    return _check_call("ConstantBackoff", attempt, base_delay)


class _Backoff:
    """Shared by the growing backoffs: validation of the call, then the jitter."""

    def __init__(self, jitter: JitterLike) -> None:
        self.jitter = _jitter_type(type(self).__name__, jitter)

    def _delay(self, attempt: int, base_delay: float) -> float:
        raise NotImplementedError

    def __call__(self, attempt: int, base_delay: float) -> float:
        delay = self._delay(attempt, _check_call(type(self).__name__, attempt, base_delay))
        if self.jitter is JitterType.FULL:
            return random.uniform(0.0, delay)
        if self.jitter is JitterType.EQUAL:
            return delay / 2 + random.uniform(0.0, delay / 2)
        return delay

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and vars(self) == vars(other)

    def __hash__(self) -> int:
        return hash((type(self), tuple(sorted(vars(self).items()))))

    def __repr__(self) -> str:
        args = ", ".join(f"{name}={value!r}" for name, value in vars(self).items())
        return f"{type(self).__name__}({args})"


class LinearBackoff(_Backoff):
    """`base_delay + (attempt - 1) * increment` seconds."""

    def __init__(self, increment: float = 1.0, jitter: JitterLike = JitterType.NONE) -> None:
        self.increment = _check_number(
            "LinearBackoff", "increment", increment, above=0, inclusive=True
        )
        super().__init__(jitter)

    def _delay(self, attempt: int, base_delay: float) -> float:
        return base_delay + (attempt - 1) * self.increment


class ExponentialBackoff(_Backoff):
    """`base_delay * multiplier ** (attempt - 1)` seconds, capped at `max_delay`; jitter applies after the cap."""

    def __init__(
        self,
        multiplier: float = 2.0,
        max_delay: float | None = None,
        jitter: JitterLike = JitterType.NONE,
    ) -> None:
        owner = "ExponentialBackoff"
        self.multiplier = _check_number(owner, "multiplier", multiplier, above=1, inclusive=True)
        self.max_delay = (
            None
            if max_delay is None
            else _check_number(owner, "max_delay", max_delay, above=0, inclusive=False)
        )
        super().__init__(jitter)

    def _delay(self, attempt: int, base_delay: float) -> float:
        try:
            delay = base_delay * self.multiplier ** (attempt - 1)
        except OverflowError:
            delay = math.inf
        return delay if self.max_delay is None else min(delay, self.max_delay)


class LogarithmicBackoff(_Backoff):
    """`base_delay * log(attempt + 1, base)` seconds: grows quickly at first, then slowly."""

    def __init__(self, base: float = 2.0, jitter: JitterLike = JitterType.NONE) -> None:
        self.base = _check_number("LogarithmicBackoff", "base", base, above=1, inclusive=False)
        super().__init__(jitter)

    def _delay(self, attempt: int, base_delay: float) -> float:
        return base_delay * math.log(attempt + 1, self.base)


DEFAULT_BACKOFF = ExponentialBackoff(2.0, max_delay=60.0, jitter=JitterType.FULL)
"""Doubling delays capped at a minute, with full jitter (traffik 1.2's default backoff)."""
