"""Conformance for clock-aligned windows on the calendar: UTC days, local hours, long periods.

Part of `BackendConformance`, so every backend runs it on a test clock. The strategies that
count in clock-aligned windows (`TieredRate`, `TimeOfDay`, `QuotaWithRollover`,
`AdaptiveThrottle`, `SlidingWindowCounter`) align them to multiples of the period since the
Unix epoch (docs/concepts/strategies.md, "Calendars"):

- a day is a UTC day (`"3/d"` turns at 00:00 UTC, across a year's end, a leap day and the
  days daylight saving time starts and ends), and a `TimeOfDay`'s `timezone_offset` only
  picks each hour's limit;
- `TimeOfDay`'s hours are those of its fixed offset (-12 to +14 hours, quarters included): an
  hour allowing less ends at local midnight whatever the offset, and a refused hit is told
  exactly that wait;
- a period of days is counted from 1970-01-01 (`"3/30d"` turns on 2023-11-19, not on the
  1st of a month).

Needs pytest and anyio.
"""

from __future__ import annotations

import datetime
import itertools
from typing import Callable

import pytest

from traffik.backends.base import ThrottleBackend
from traffik.clock import ManualClock
from traffik.rates import Rate
from traffik.strategies import (
    AdaptiveThrottle,
    QuotaWithRollover,
    Strategy,
    TieredRate,
    TimeOfDay,
)

__all__ = ["DAY_ENDS", "LOCAL_OFFSETS", "CalendarConformance"]

_names = itertools.count()
_UTC = datetime.timezone.utc

DAY_ENDS = {
    "year-end": "2023-12-31",
    "leap-day": "2024-02-29",
    "summer-time": "2024-03-31",  # (Europe, the US a few weeks before: nothing changes in UTC)
    "winter-time": "2024-10-27",
}
"""Days whose last second a day's window is checked at."""
LOCAL_OFFSETS = (-12, -3.5, 0, 5.75, 14)
"""`TimeOfDay` offsets checked around local midnight: both ends, a half and a quarter hour."""


def _last_second(day: str) -> float:
    """The Unix time of 23:59:59 UTC on `day` (ISO)."""
    moment = datetime.datetime.fromisoformat(f"{day}T23:59:59").replace(tzinfo=_UTC)
    return moment.timestamp()


def _aligned() -> list[Strategy]:
    return [
        TieredRate(),
        QuotaWithRollover(),
        TimeOfDay([(0, 24, 1)]),
        AdaptiveThrottle(load_threshold=0.99),  # (no cut before the limit: refused at it)
    ]


@pytest.mark.anyio
class CalendarConformance:
    """What a backend must do with clock-aligned windows on the calendar."""

    supports_clock = True

    def _clock(self, start: float) -> ManualClock:
        if not self.supports_clock:
            pytest.skip("this backend takes its time from the server: a test clock cannot set it")
        return ManualClock(start)

    @pytest.mark.parametrize("strategy", _aligned(), ids=lambda s: type(s).__name__)
    @pytest.mark.parametrize("day", sorted(DAY_ENDS.values()), ids=sorted(DAY_ENDS))
    async def test_a_day_turns_at_midnight_utc(
        self, make_backend: Callable[..., ThrottleBackend], strategy: Strategy, day: str
    ) -> None:
        """A client that spends `3/d` in the last second of a UTC day is told to wait exactly
        until 00:00 UTC, and is admitted then, with a whole day's budget."""
        clock = self._clock(_last_second(day))
        backend = make_backend(namespace=f"conformance-calendar-{next(_names)}", clock=clock)
        rate = Rate.parse("3/d")
        try:
            assert all([(await strategy.decide("c", rate, backend, 1)).allowed for _ in range(3)])
            refused = await strategy.decide("c", rate, backend, 1)
            assert not refused.allowed and refused.wait_ms == 1000, refused
            clock.advance(1)
            admitted = await strategy.decide("c", rate, backend, 1)
            assert admitted.allowed, admitted
            if not isinstance(strategy, AdaptiveThrottle):  # (its limit recovers a step a day)
                assert admitted.remaining == 2 and admitted.reset_ms == 86_400_000, admitted
        finally:
            await backend.reset()
            await backend.close()

    @pytest.mark.parametrize("offset", LOCAL_OFFSETS)
    async def test_time_of_day_hours_are_those_of_its_offset(
        self, make_backend: Callable[..., ThrottleBackend], offset: float
    ) -> None:
        """`TimeOfDay([(23, 24, 0.5)], offset)` at `4/h`: at 23:50 local time (on a UTC day
        that is not the local one, for most offsets) two hits pass, the third waits exactly
        until local midnight, where the limit is 4 again (in the hour window the two hits
        counted in, or a new one where the offset is whole hours)."""
        zone = datetime.timezone(datetime.timedelta(hours=offset))
        midnight = datetime.datetime(2023, 11, 15, tzinfo=zone).timestamp()
        clock = self._clock(midnight - 600)
        backend = make_backend(namespace=f"conformance-calendar-{next(_names)}", clock=clock)
        strategy, rate = TimeOfDay([(23, 24, 0.5)], timezone_offset=offset), Rate.parse("4/h")
        try:
            passed = [await strategy.decide("c", rate, backend, 1) for _ in range(3)]
            assert [d.allowed for d in passed] == [True, True, False], passed
            assert passed[2].limit == 2 and passed[2].wait_ms == 600_000, passed[2]
            clock.advance(ms=599_999)
            assert not (await strategy.decide("c", rate, backend, 1)).allowed
            clock.advance(ms=1)
            admitted = await strategy.decide("c", rate, backend, 1)
            assert admitted.allowed and admitted.limit == 4, admitted
            whole_hours = offset == int(offset)
            assert admitted.remaining == (3 if whole_hours else 1), admitted
        finally:
            await backend.reset()
            await backend.close()

    @pytest.mark.parametrize("strategy", _aligned(), ids=lambda s: type(s).__name__)
    async def test_a_period_of_days_counts_from_the_epoch(
        self, make_backend: Callable[..., ThrottleBackend], strategy: Strategy
    ) -> None:
        """`3/30d` turns every 30 days since 1970-01-01 UTC (on 2023-11-19, one of them), not
        on a month's first day: spent a second before, a client waits exactly that second."""
        turn = datetime.datetime(2023, 11, 19, tzinfo=_UTC).timestamp()
        assert turn % (30 * 86_400) == 0
        clock = self._clock(turn - 1)
        backend = make_backend(namespace=f"conformance-calendar-{next(_names)}", clock=clock)
        rate = Rate.parse("3/30d")
        try:
            assert all([(await strategy.decide("c", rate, backend, 1)).allowed for _ in range(3)])
            refused = await strategy.decide("c", rate, backend, 1)
            assert not refused.allowed and refused.wait_ms == 1000, refused
            clock.advance(1)
            assert (await strategy.decide("c", rate, backend, 1)).allowed
        finally:
            await backend.reset()
            await backend.close()
