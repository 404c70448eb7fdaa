"""`FixedWindow`: a counter per key whose window opens at the first hit and lasts one period."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Optional

from traffik.decision import Decision
from traffik.strategies.base import AHEAD_MS, Strategy, never_admitted, settled
from traffik.strategies.stat_metadata import FixedWindowStatMetadata  # (1.2 exported it here)
from traffik.typing import StrategyStat

if TYPE_CHECKING:
    from traffik.backends.base import ThrottleBackend
    from traffik.rates import Rate

__all__ = [
    "FixedWindow",
    "FixedWindowStatMetadata",
    "FixedWindowStrategy",
    "counted_decision",
    "counter_decision",
    "too_late",
]


def _ttl_seconds(window_ms: int) -> float:
    return window_ms // 1000 if window_ms % 1000 == 0 else window_ms / 1000.0


def counter_decision(count: int, ttl_ms: Optional[float], rate: Rate, cost: int) -> Decision:
    """The decision for a hit of `cost` on a window counter now holding `count`, whose key is
    gone in `ttl_ms` (None: no window yet); a cost above the limit is never admitted, as
    `settled` answers it (one period, not the window's time left)."""
    if cost > rate.limit:
        return never_admitted(rate)
    limit, left = rate.limit, _left(ttl_ms if count else None, rate)
    after = count + cost
    if after > limit:
        return Decision(False, left, 0, left, limit)
    return Decision(True, 0, limit - after, left, limit)


def counted_decision(count: int, ttl_ms: Optional[float], rate: Rate) -> Decision:
    """The decision for a hit already counted: the counter now holds `count` and its key is
    gone in `ttl_ms` (None: unknown, so one period)."""
    limit, left = rate.limit, _left(ttl_ms, rate)
    if count > limit:
        return Decision(False, left, 0, left, limit)
    return Decision(True, 0, limit - count, left, limit)


def too_late(left_ms: Optional[float], period_ms: float) -> bool:
    """Whether a window counter gone in `left_ms` outlives a window of `period_ms` by more than
    `AHEAD_MS`: one opened before its store's clock stepped back (or under a longer period).
    Every backend cuts such a window to end one period from now, keeping its count, when a
    hit counts in it (`increment_with_ttl`), so that no client waits for a clock to catch up;
    a decision that only reads it tells it as cut."""
    return left_ms is not None and left_ms > period_ms + AHEAD_MS


def _left(ttl_ms: Optional[float], rate: Rate) -> int:
    """Whole milliseconds until the window closes (the counter's TTL), one period when unknown
    or when the window ends too late (`too_late`)."""
    if ttl_ms is None or ttl_ms <= 0 or too_late(ttl_ms, rate.expire):
        return rate.expire
    return max(int(-(-ttl_ms // 1)), 1)


class FixedWindow(Strategy):
    """At most `limit` units per window of one period, counted in one backend call.

    Each key's window starts with its first hit and ends one period later (the counter's
    time to live), so a `5/s` limit is 5 per second, the wait a rejected hit gets is the
    exact time left in its window, and time comes from the backend's clock (the server's,
    for Redis). Rejected hits still count, so the counter can pass its limit. A window that
    ends more than a period and `AHEAD_MS` from now (its clock stepped back, or it opened
    under a longer period) is cut to one period from now, its count kept (`too_late`).
    """

    name: ClassVar[str] = "fixed_window"
    suffix: ClassVar[str] = ":fw"
    counter: ClassVar[bool] = True
    """Its state is a plain counter (`increment_with_ttl`), not a `transition` state."""

    async def decide(
        self, key: Any, rate: Rate, backend: ThrottleBackend, cost: int = 1
    ) -> Decision:
        early = settled(self, rate, cost)
        if early is not None:
            return early
        counter = backend.get_key(key) + self.suffix
        count = await backend.increment_with_ttl(
            counter, amount=cost, ttl=_ttl_seconds(rate.expire)
        )
        ttl_ms = getattr(count, "ttl_ms", None)
        if ttl_ms is None and count > rate.limit:
            ttl_ms = await backend.ttl(counter)
            if too_late(ttl_ms, rate.expire):  # (a backend's own counter that cuts nothing)
                await backend.expire(counter, _ttl_seconds(rate.expire))
        decision = counted_decision(count, ttl_ms, rate)
        decision.at = getattr(count, "at", None)  # (when the store says: for refunds)
        return decision

    async def get_stat(self, key: Any, rate: Rate, backend: ThrottleBackend) -> StrategyStat:
        if rate.unlimited:
            return StrategyStat.unlimited(key, rate)
        counter = backend.get_key(key) + self.suffix
        raw = await backend.get(counter)
        try:
            count = int(raw) if raw is not None else 0
        except ValueError:
            count = 0
        left = _left((await backend.ttl(counter)) if count else None, rate)
        return StrategyStat(
            key=key,
            rate=rate,
            hits_remaining=max(rate.limit - count, 0),
            wait_ms=left if count >= rate.limit else 0,
            metadata={
                "strategy": self.name,
                "current_count": count,
                "reset_ms": left if count else 0,
            },
        )


FixedWindowStrategy = FixedWindow
