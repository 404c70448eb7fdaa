"""`TimeOfDay`: a clock-aligned window whose limit follows the hour of the day (peak and off-peak)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Optional

from traffik.decision import Decision
from traffik.exceptions import ConfigurationError
from traffik.strategies.base import (
    Refund,
    StateStrategy,
    Transition,
    ceil_div,
    later,
    later_refund,
    never_admitted,
)
from traffik.strategies.periods import (
    aligned,
    check_number,
    of_another_period,
    window_count,
    window_start,
)

if TYPE_CHECKING:
    from traffik.backends.base import ThrottleBackend
    from traffik.rates import Rate
    from traffik.typing import StrategyStat

__all__ = ["TimeOfDay", "TimeOfDayStrategy"]

HOUR_MS = 3_600_000
_DEFAULT_WINDOWS = [(0, 8, 2.0), (8, 17, 1.0), (17, 24, 1.5)]


def _windows(owner: str, given: object) -> list[tuple[int, int, float]]:
    """`time_windows` as a list, each `(start_hour, end_hour, multiplier)` checked."""
    if isinstance(given, (str, bytes)) or not isinstance(given, Iterable):
        raise ConfigurationError(
            f"{owner}(time_windows={given!r}): must be a list of (start_hour, end_hour, "
            "multiplier), such as [(0, 8, 2.0), (8, 17, 1.0), (17, 24, 1.5)]"
        )
    windows = list(given)
    if not windows:
        raise ConfigurationError(f"{owner}(time_windows=[]): give at least one window")
    for window in windows:
        try:
            start, end, multiplier = window
        except (TypeError, ValueError):
            raise ConfigurationError(
                f"{owner}: time window {window!r} must be (start_hour, end_hour, multiplier)"
            ) from None
        if not all(isinstance(h, int) and not isinstance(h, bool) for h in (start, end)) or not (
            0 <= start < end <= 24
        ):
            raise ConfigurationError(
                f"{owner}: time window {window!r} needs whole hours 0 <= start < end <= 24 (a "
                "window across midnight is two: (22, 24, m) and (0, 6, m))"
            )
        if not check_number(owner, f"time window {window!r}: multiplier", multiplier) > 0:
            raise ConfigurationError(
                f"{owner}: time window {window!r} needs a multiplier greater than 0"
            )
    return windows


def _hourly(owner: str, windows: list[tuple[int, int, float]]) -> tuple[float, ...]:
    """The multiplier of each hour (1 for an hour in no window); windows may not overlap,
    since one of two multipliers for an hour would be silently ignored."""
    multipliers: list[Optional[float]] = [None] * 24
    holder: list[Optional[tuple[int, int, float]]] = [None] * 24
    for window in windows:
        start, end, multiplier = window
        for hour in range(start, end):
            if holder[hour] is not None:
                raise ConfigurationError(
                    f"{owner}: time windows {holder[hour]!r} and {window!r} overlap (hour "
                    f"{hour}); each hour takes one multiplier: split the windows so that "
                    "they do not overlap"
                )
            holder[hour], multipliers[hour] = window, multiplier
    return tuple(1.0 if m is None else m for m in multipliers)


class TimeOfDay(StateStrategy):
    """At most `limit x multiplier` units per clock-aligned window, the multiplier of the current hour.

    `time_windows` are `(start_hour, end_hour, multiplier)`, start included and end excluded,
    in the time zone `timezone_offset` hours from UTC (-12 to +14, fractions such as 5.5
    allowed); windows may not overlap (traffik 1.2 silently took the first), and an hour in
    none counts at 1x. The limit is `int(limit * multiplier)` (an hour may allow nothing). A
    rejected hit counts nothing; its wait is exact: to the first hour of this window whose
    limit fits the count and cost, else to the first time after the window whose limit fits
    the cost, passing over a moment that stops admitting (an hour allowing less begins)
    within the second `Retry-After` rounds the wait up to (`_wait`). State: `[window_id,
    count, period_ms]`: the count is kept when the limit changes, and a state counted in
    windows of another period carries its count while its window is open
    (`periods.of_period`; a rejected hit writes it into this period's: `base.Transition`); a `[window_id, count]` state (written before the period was kept)
    is read as counted in the current period.

    On Redis it decides in one `EVALSHA` on the server's clock, as every built-in strategy
    (traffik 1.2 took a lock and used the app's clock): the program reads the day's limits
    from `script_table`. `lock_config` is accepted for traffik 1.2 code and unused.
    """

    name: ClassVar[str] = "time_of_day"
    suffix: ClassVar[str] = ":tod"
    script: ClassVar[str] = "time_of_day"

    def __init__(
        self,
        time_windows: Optional[Sequence[tuple[int, int, float]]] = None,
        timezone_offset: float = 0,
        lock_config: Optional[Mapping[str, Any]] = None,
    ) -> None:
        super().__init__(lock_config)
        owner = type(self).__name__
        windows = _windows(owner, _DEFAULT_WINDOWS if time_windows is None else time_windows)
        offset = check_number(owner, "timezone_offset", timezone_offset)
        if not -12 <= offset <= 14:
            raise ConfigurationError(
                f"{owner}(timezone_offset={timezone_offset!r}): must be within -12 and +14 hours"
            )
        self.time_windows = windows
        self.timezone_offset = timezone_offset
        self._multipliers = _hourly(owner, windows)
        self._offset_ms = round(offset * HOUR_MS)

    def __repr__(self) -> str:
        return f"TimeOfDay(time_windows={self.time_windows!r}, timezone_offset={self.timezone_offset!r})"

    def _config(self) -> tuple[tuple[str, Any], ...]:
        return (
            ("time_windows", tuple(map(tuple, self.time_windows))),
            ("timezone_offset", self.timezone_offset),
        )

    def hour_of_day(self, now_ms: int) -> int:
        return ((now_ms + self._offset_ms) // HOUR_MS) % 24

    def multiplier(self, now_ms: int) -> float:
        return self._multipliers[self.hour_of_day(now_ms)]

    def limit_at(self, now_ms: int, rate: Rate) -> int:
        """The limit in force at `now_ms`: `int(limit * multiplier)` of its hour."""
        return int(rate.limit * self.multiplier(now_ms))

    def script_args(self, rate: Rate, cost: int) -> tuple[int, ...]:
        """As every strategy's, then the time zone's offset in ms."""
        return (rate.limit, rate.expire, cost, self._offset_ms)

    def script_table(self, rate: Rate) -> tuple[int, ...]:
        """What the Redis program reads besides `script_args`: the limit of each hour of the
        day (0 to 23, in the strategy's time zone; `limit_at`), then `capacity`."""
        day = tuple(self.limit_at(hour * HOUR_MS - self._offset_ms, rate) for hour in range(24))
        return (*day, self.capacity(rate))

    def capacity(self, rate: Rate) -> int:
        return max(int(rate.limit * m) for m in self._multipliers)

    def scale(self, rate: Rate) -> int:
        return 2 * self.capacity(rate) * rate.expire

    def _next_hour(self, after: int) -> int:
        """The first hour boundary (in the strategy's time zone) later than `after`."""
        return ((after + self._offset_ms) // HOUR_MS + 1) * HOUR_MS - self._offset_ms

    def _wait(self, now: int, end: int, count: int, rate: Rate, cost: int) -> int:
        """The wait of a hit refused at `now` (its window ends at `end`, holding `count`):
        until the first moment that admits it and still does when a client told the wait in
        whole seconds (`Retry-After`, rounded up) comes back. A moment an hour that allows
        less ends within that second is passed over (`_admits_from` after that hour)."""
        at = self._admits_from(now, end, count, rate, cost)
        while True:
            told = now + ceil_div(at - now, 1000) * 1000
            hour = self._next_hour(at)
            if hour > told or self.limit_at(hour, rate) >= (count if hour < end else 0) + cost:
                return at - now
            at = self._admits_from(hour, end, count, rate, cost)

    def _admits_from(self, after: int, end: int, count: int, rate: Rate, cost: int) -> int:
        """The first moment later than `after` (which does not admit the hit) that does: in
        this window once an hour's limit fits `count + cost`, else from the window's end (a
        new count) once one fits `cost`. The limits repeat each day, so 24 hours tell (some
        hour fits `cost`, at most `capacity`)."""
        boundary = self._next_hour(after)
        for _ in range(24):
            if boundary >= end:
                break
            if self.limit_at(boundary, rate) >= count + cost:
                return boundary
            boundary += HOUR_MS
        start = max(end, after + 1)
        while self.limit_at(start, rate) < cost:
            start = self._next_hour(start)
        return start

    def transition(self, state: Optional[list[int]], now: int, rate: Rate, cost: int) -> Transition:
        at = window_start(state, now, 3, rate.expire)
        if at > now:
            return later(self.transition(state, at, rate, cost), at - now)
        if cost > self.capacity(rate):
            return never_admitted(rate), None, 0
        limit = self.limit_at(now, rate)
        wid, left = aligned(now, rate.expire)
        count = window_count(state, now, rate.expire)
        if count + cost <= limit:
            count += cost
            return Decision(True, 0, limit - count, left, limit), [wid, count, rate.expire], left
        wait = self._wait(now, now + left, count, rate, cost)
        reset = left if count > 0 else 0
        decision = Decision(False, wait, max(limit - count, 0), reset, limit)
        if of_another_period(state, 3, rate.expire, now):  # (carried, written: `base.Transition`)
            return decision, [wid, count, rate.expire], left
        return decision, None, 0

    def refund(self, state: Optional[list[int]], now: int, rate: Rate, cost: int) -> Refund:
        at = window_start(state, now, 3, rate.expire)
        if at > now:
            return later_refund(self.refund(state, at, rate, cost), at - now)
        wid, left = aligned(now, rate.expire)
        count = window_count(state, now, rate.expire)
        return [wid, max(count - cost, 0), rate.expire], left

    async def get_stat(self, key: Any, rate: Rate, backend: ThrottleBackend) -> StrategyStat:
        """As every strategy's, with traffik 1.2's metadata: `hour_of_day`, `time_multiplier`,
        `effective_limit`, `current_count`, `window_id`, `window_start_ms`."""
        stat = await super().get_stat(key, rate, backend)
        if rate.unlimited or stat.metadata is None:
            return stat
        now = backend.now_ms()
        limit = self.limit_at(now, rate)
        wid, _ = aligned(now, rate.expire)
        return dataclasses.replace(
            stat,
            metadata={
                **stat.metadata,
                "hour_of_day": self.hour_of_day(now),
                "time_multiplier": self.multiplier(now),
                "effective_limit": limit,
                "current_count": max(limit - stat.hits_remaining, 0),
                "window_id": wid,
                "window_start_ms": wid * rate.expire,
            },
        )


TimeOfDayStrategy = TimeOfDay
