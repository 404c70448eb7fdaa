"""`Decision`: what one rate-limit step answers, with everything rate-limit headers need."""

from __future__ import annotations

import math
from typing import Optional

__all__ = ["LONGEST_WAIT_MS", "Decision", "whole_seconds"]


LONGEST_WAIT_MS = 2**53
"""The longest wait or reset a header tells, in ms (about 285 000 years; no built-in strategy
computes a number past it): a longer one, an infinite one included, is told as this."""


def whole_seconds(ms: float, least: int = 0) -> int:
    """`ms` milliseconds as whole seconds for a header: rounded up, at least `least`, and at
    most `LONGEST_WAIT_MS` (whatever a strategy answered: NaN or a negative counts as 0).

    Args:
        ms: The wait or reset, in milliseconds.
        least: The fewest seconds to tell (`1` for a refused request's wait).

    Returns:
        The whole seconds.
    """
    if not ms > 0:
        return least
    if ms >= LONGEST_WAIT_MS:
        return LONGEST_WAIT_MS // 1000
    return max(least, math.ceil(ms / 1000))


class Decision:
    """The outcome of one decision on one key.

    `wait_ms` is 0 when allowed, otherwise the whole milliseconds until the same request
    would be admitted (or one full period when it never can be, its cost exceeding the
    limit). `remaining` is the units left after this decision (None when unknown: an
    answer of the `on_error` policy, which makes no claim about quota), `reset_ms` the time
    until the limit is fully available again, `limit` the units per period. `at` is the
    backend's time (`backend.now_ms()`) the decision was made at, or asked at just before
    (None when unknown): what a refund reads to tell what a charge still holds.
    """

    __slots__ = ("allowed", "at", "limit", "remaining", "reset_ms", "wait_ms")

    def __init__(
        self,
        allowed: bool,
        wait_ms: float,
        remaining: Optional[float],
        reset_ms: float,
        limit: float,
        at: Optional[int] = None,
    ) -> None:
        self.allowed = allowed
        self.wait_ms = wait_ms
        self.remaining = remaining
        self.reset_ms = reset_ms
        self.limit = limit
        self.at = at

    @property
    def retry_after(self) -> int:
        """Seconds for a `Retry-After` header: whole, and at least 1 when throttled."""
        if self.allowed:
            return 0
        return whole_seconds(self.wait_ms, 1)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Decision):
            return NotImplemented
        return (self.allowed, self.wait_ms, self.remaining, self.reset_ms, self.limit) == (
            other.allowed,
            other.wait_ms,
            other.remaining,
            other.reset_ms,
            other.limit,
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"Decision(allowed={self.allowed}, wait_ms={self.wait_ms}, remaining={self.remaining}, "
            f"reset_ms={self.reset_ms}, limit={self.limit})"
        )


ALLOWED_UNLIMITED = Decision(True, 0.0, math.inf, 0.0, math.inf)
