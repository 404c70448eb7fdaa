"""Conformance for a client's state read under another rate than it was written under.

Part of `BackendConformance`, so every backend runs it. A throttle's rate may change for a
key that already has state (`throttle.update_rate`, a rate callable, a deploy). What the
client still holds then (units not yet refilled, drained or leaked, by the old rate, rounded
up) carries over to the new rate in units, as a fixed window's count and a log's entries do;
a window counted in periods (`SlidingWindowCounter` and the clock-aligned windows of the
advanced strategies) keeps its count when only the limit changes, and when the period
changes carries what its window still holds into the new period's window, wherever the
clock stands (window ids of two periods may be equal near 0, where a `ManualClock` may
start). A changed rate never admits more than the new
limit beyond what carries.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Callable, ClassVar

import pytest

from traffik.backends.base import ThrottleBackend
from traffik.clock import ManualClock
from traffik.decision import Decision
from traffik.rates import Rate, parse_rates
from traffik.strategies import (
    ADVANCED_STRATEGIES,
    BUILTIN_STRATEGIES,
    AdaptiveThrottle,
    FixedWindow,
    PriorityQueue,
    SlidingWindowLog,
    Strategy,
    TimeOfDay,
)
from traffik.strategies.steps import items

__all__ = [
    "RATE_CHANGES",
    "RATE_CHANGE_REFUSALS",
    "RATE_CHANGE_WAITS",
    "RateChangeConformance",
]

_START = 1_700_000_040.0  # on a minute boundary
_names = itertools.count()

RATE_CHANGES = [
    # (clock start in s, first rate, hits under it, ms later, second rate, hits under it)
    (_START, "10/min", 2, 0, "10/h", 10),  # slower: 2 held, 8 left
    (_START, "10/h", 2, 0, "10/min", 10),  # faster: 2 held, 8 left
    (_START, "10/min", 10, 15_000, "10/h", 10),  # 7.5 units still held, rounded up to 8: 2 left
    (_START, "4/min", 4, 0, "40/h", 40),  # a plan upgrade: 4 held, 36 left
    # A clock near 0 (a ManualClock may start there): the window ids of both periods meet.
    (30.0, "10/h", 2, 0, "10/min", 10),  # window 0 of the hour, window 0 of the minute
    (90.0, "10/h", 2, 0, "10/min", 20),  # window 0 of the hour, the minute's window before
    (_START, "100/h", 2, 0, "10/h", 100),  # a lower limit: 2 held, at most 8 more
    (_START, "10/min", 6, 0, "20/min", 20),  # a higher limit: 6 held, 14 left
]
"""The rate changes of `test_rate_change_carries_what_the_client_holds`. Periods of a minute
and more: a server's keys expire on its own clock, whatever the test clock says, so a state
of a per-second rate could expire on a slow machine before the second rate read it."""

_EXPECTED = {
    # hits admitted under the second rate, per change of RATE_CHANGES
    "FixedWindow": [8, 8, 0, 36, 8, 8, 8, 14],  # the count carries, in the window it opened
    "SlidingWindowCounter": [8, 8, 0, 36, 8, 8, 8, 14],  # the count carries into the new window
    "SlidingWindowLog": [8, 8, 0, 36, 8, 8, 8, 14],  # the entries carry
    "TokenBucket": [8, 8, 2, 36, 8, 8, 8, 14],
    "TokenBucketWithDebt": [8, 8, 2, 36, 8, 8, 8, 14],
    "LeakyBucket": [8, 8, 2, 36, 8, 8, 8, 14],
    "LeakyBucketWithQueue": [8, 8, 2, 36, 8, 8, 8, 14],
    "GCRA": [8, 8, 2, 36, 8, 8, 8, 14],
    # the advanced strategies (`traffik.strategies.custom`), a key without a tier or a
    # priority; AdaptiveThrottle cut by the hit that fills a window, TimeOfDay at 1x all day
    "TieredRate": [8, 8, 0, 36, 8, 8, 8, 14],  # the count carries into the new window
    "QuotaWithRollover": [8, 8, 0, 36, 8, 8, 8, 14],  # the usage carries into the new period
    "TimeOfDay": [8, 8, 0, 36, 8, 8, 8, 14],  # the count carries into the new window
    "AdaptiveThrottle": [8, 8, 0, 16, 8, 8, 8, 14],  # the count and the cut (its share) carry
    "PriorityQueue": [8, 8, 0, 36, 8, 8, 8, 14],  # the entries carry
    "CostBasedTokenBucket": [8, 8, 2, 36, 8, 8, 8, 14],
}


RATE_CHANGE_WAITS = [
    # (rates spent, rates then): the first rates' budget spent, the client retries under the
    # second exactly when told (each rate keyed by its place, as a throttle keys them)
    ("5/h", "5/min"),  # faster: one unit of the new rate, not of the old
    ("5/d", "5/min"),
    ("5/min", "3/min"),  # more held than the new capacity: refused until the old holds less
    ("5/min", "5/h"),  # slower
    ("5/h;50/d", "5/min;50/d"),  # one of several changed
    ("5/min;5/d", "5/min;5/h"),  # the changed one refuses longer than the one that did not
]
"""The rate changes of `test_a_wait_told_after_a_rate_change_is_true`."""

RATE_CHANGE_REFUSALS = [
    # (rates spent, ms later, rates then, the wait told to the first hit under them, ms
    # after it at which more hits come, each refused and told the rest of that wait)
    # More held than the new capacity (5 of 5/min, then 3/min): refused until the old
    # bucket, draining at the old rate, holds 2, whatever comes between (a hit once it
    # holds 2.5, or a millisecond before).
    ("5/min", 0, "3/min", 36_000, (30_000, 35_999)),
    ("5/min;50/d", 0, "3/min;50/d", 36_000, (30_000, 35_999)),  # one of several
    # A lower capacity, drained faster (10 of 10/h, then 5/min): the same, at the old rate.
    ("10/h", 0, "5/min", 2_160_000, (1_900_000, 2_159_999)),
    # No more held than the new capacity: the first hit writes what the old bucket holds,
    # exactly (a refused hit charges nothing): 4 and 1/12 units of 5/min, 11 s after 5 were
    # spent, under 5/h wait 60 s (1/12 of a unit), not 720 s (the 1/12 rounded up to one).
    ("5/min", 11_000, "5/h", 60_000, (30_000, 59_999)),
]
"""The rate changes of `test_refused_hits_after_a_rate_change_keep_the_wait_told`."""

_BUCKETS = (
    "TokenBucket",
    "TokenBucketWithDebt",
    "CostBasedTokenBucket",
    "GCRA",
    "LeakyBucket",
    "LeakyBucketWithQueue",
)
"""The strategies whose state records the rate it was written under, and converts."""


def _strategies() -> list[Strategy]:
    made = [cls() for cls in BUILTIN_STRATEGIES + ADVANCED_STRATEGIES]
    settled = {
        # cut only by the hit that fills the window; at 1x all day
        AdaptiveThrottle: AdaptiveThrottle(load_threshold=0.99),
        TimeOfDay: TimeOfDay([(0, 24, 1)]),
    }
    return [settled.get(type(strategy), strategy) for strategy in made]


async def _hit(
    strategy: Strategy, backend: ThrottleBackend, rates: tuple[Rate, ...], commit: bool = True
) -> Decision:
    """A hit on key `k` under `rates`, as a throttle decides it: with one rate by the
    strategy's `decide`, with several (or a peek, `commit=False`) in one step."""
    if len(rates) == 1 and commit:
        return await strategy.decide("k", rates[0], backend, 1)
    return await backend.evaluate_all(items(strategy, "k", rates, 1, backend), commit=commit)


@pytest.mark.anyio
class RateChangeConformance:
    """A key's state read under another rate; mixed into `BackendConformance`."""

    supports_clock: bool
    clock_moves_expiry: bool
    rate_change_differs: ClassVar[Mapping[str, list[int]]] = {}
    """Admissions of `test_rate_change_carries_what_the_client_holds` that differ on this
    backend, by strategy name (a behaviour the backend documents)."""

    @pytest.mark.parametrize(
        "strategy", _strategies(), ids=[type(s).__name__ for s in _strategies()]
    )
    async def test_rate_change_carries_what_the_client_holds(
        self, make_backend: Callable[..., ThrottleBackend], strategy: Strategy
    ) -> None:
        """Hits under one rate, then the same key under another (what a throttle does after
        `update_rate`): the hits admitted under the second rate are its limit minus the units
        the client still held (rounded up), never more, never fewer; a window strategy
        carries what its open window holds into the new period's window."""
        if not self.supports_clock:
            pytest.skip("this backend takes its time from the server")
        if isinstance(strategy, FixedWindow) and not self.clock_moves_expiry:
            pytest.skip("FixedWindow's window is a key TTL, which follows the server's clock here")
        admitted = []
        for start, first, before, later, second, after in RATE_CHANGES:
            clock = ManualClock(start)
            backend = make_backend(namespace=f"rate-change-{next(_names)}", clock=clock)
            try:
                old, new = Rate.parse(first), Rate.parse(second)
                for _ in range(before):
                    assert (await strategy.decide("k", old, backend, 1)).allowed, first
                clock.advance(ms=later)
                hits = [await strategy.decide("k", new, backend, 1) for _ in range(after)]
                admitted.append(sum(hit.allowed for hit in hits))
                assert all(hit.allowed for hit in hits[: admitted[-1]]), (first, second)
            finally:
                await backend.reset()
                await backend.close()
        name = type(strategy).__name__
        assert admitted == self.rate_change_differs.get(name, _EXPECTED[name])

    @pytest.mark.parametrize(
        "strategy", _strategies(), ids=[type(s).__name__ for s in _strategies()]
    )
    async def test_a_rate_changed_among_several_carries_as_alone(
        self, make_backend: Callable[..., ThrottleBackend], strategy: Strategy
    ) -> None:
        """A throttle with several rates whose first rate changes (`update_rate("3/min;
        100/day")` after `"2/min;100/day"`, or two versions of an app in a rolling deploy)
        admits under the new rates what the changed rate alone would: the client keeps what
        it spent, as with one rate. (Each rate is keyed by its place among the throttle's
        rates, not by its value, so a rate changed in place reads its old state.)"""
        if not self.supports_clock:
            pytest.skip("this backend takes its time from the server")
        if isinstance(strategy, FixedWindow) and not self.clock_moves_expiry:
            pytest.skip("FixedWindow's window is a key TTL, which follows the server's clock here")
        clock = ManualClock(_START)
        backend = make_backend(namespace=f"rate-change-{next(_names)}", clock=clock)
        day = Rate.parse("100/day")
        admitted = []
        try:
            for key, also in (("alone", ()), ("several", (day,))):
                old = [Rate.parse("2/min"), *also]
                new = [Rate.parse("3/min"), *also]
                for _ in range(2):
                    assert (
                        await backend.evaluate_all(items(strategy, key, old, 1, backend))
                    ).allowed
                hits = [
                    await backend.evaluate_all(items(strategy, key, new, 1, backend))
                    for _ in range(4)
                ]
                admitted.append([hit.allowed for hit in hits])
        finally:
            await backend.reset()
            await backend.close()
        alone, several = admitted
        assert several == alone, f"alone {alone}, with {day} beside it {several}"

    @pytest.mark.parametrize(
        "strategy", _strategies(), ids=[type(s).__name__ for s in _strategies()]
    )
    async def test_a_wait_told_after_a_rate_change_is_true(
        self, make_backend: Callable[..., ThrottleBackend], strategy: Strategy
    ) -> None:
        """A budget spent under one rate, then a hit under another (`update_rate`, a deploy)
        refused: a millisecond before the wait it was told the hit is still refused (asked
        without a hit; but for a log, see below), and exactly at it the hit is admitted (the
        README's promise), whatever the change (`RATE_CHANGE_WAITS`). A refused hit writes
        what it read as the new rate's state (charging nothing), so the next hits are decided
        under the new rate, not again from the old state, which drains at the old rate (a
        client was told 12 s after `5/h` became `5/min`, 60 times in a row); a bucket that
        held more than the new rate's capacity is refused until it holds what that rate
        admits (`5/min` to `3/min`: 36 s)."""
        if not self.supports_clock:
            pytest.skip("this backend takes its time from the server")
        if isinstance(strategy, FixedWindow) and not self.clock_moves_expiry:
            pytest.skip("FixedWindow's window is a key TTL, which follows the server's clock here")
        # A log records no rate: its key lives as long as the period it was written under
        # said, so under a longer period it may be gone (and admit) before the wait told.
        exact = not isinstance(strategy, (SlidingWindowLog, PriorityQueue))
        untrue = []
        for first, second in RATE_CHANGE_WAITS:
            clock = ManualClock(_START)
            backend = make_backend(namespace=f"rate-change-{next(_names)}", clock=clock)
            old, new = parse_rates(first), parse_rates(second)
            try:
                spent = 0
                while (await _hit(strategy, backend, old)).allowed:
                    spent += 1
                    assert spent <= 50, f"{first} never refused"
                told = await _hit(strategy, backend, new)
                if told.allowed:  # (nothing it held still counts under the new rates)
                    continue
                clock.advance(ms=told.wait_ms - 1)
                early = await _hit(strategy, backend, new, commit=False)  # (a peek: no write)
                clock.advance(ms=1)
                then = await _hit(strategy, backend, new)
                if (early.allowed and exact) or not then.allowed:
                    untrue.append(
                        f"{first} -> {second}: told {told.wait_ms} ms; a millisecond earlier "
                        f"{'admitted' if early.allowed else 'refused'}, then "
                        f"{'admitted' if then.allowed else f'refused for {then.wait_ms} ms more'}"
                    )
            finally:
                await backend.reset()
                await backend.close()
        assert not untrue, "\n".join(untrue)

    @pytest.mark.parametrize(
        "strategy",
        [s for s in _strategies() if type(s).__name__ in _BUCKETS],
        ids=[type(s).__name__ for s in _strategies() if type(s).__name__ in _BUCKETS],
    )
    async def test_refused_hits_after_a_rate_change_keep_the_wait_told(
        self, make_backend: Callable[..., ThrottleBackend], strategy: Strategy
    ) -> None:
        """A budget spent under one rate, then hits under another, refused: the first is
        told when it will be admitted, and every refused hit after it is told the same
        moment and moves it by nothing, however much the old bucket holds when it comes
        (docs/concepts/strategies.md, "When the rate changes": a refused hit charges
        nothing). A hit refused while the old bucket holds more than the new rate's
        capacity writes nothing, so a hit refused once it holds less must not write a
        state that drains more slowly; a hit that converts writes exactly what the old
        bucket holds, not its units rounded up (`RATE_CHANGE_REFUSALS`)."""
        if not self.supports_clock:
            pytest.skip("this backend takes its time from the server")
        untrue = []
        for first, later, second, told_ms, probes in RATE_CHANGE_REFUSALS:
            clock = ManualClock(_START)
            backend = make_backend(namespace=f"rate-change-{next(_names)}", clock=clock)
            old, new = parse_rates(first), parse_rates(second)
            try:
                while (await _hit(strategy, backend, old)).allowed:
                    pass
                clock.advance(ms=later)
                start = clock()
                told = await _hit(strategy, backend, new)
                answers = [(0, told.allowed, told.wait_ms)]
                for at in probes:
                    clock.set(start + at / 1000)
                    hit = await _hit(strategy, backend, new)
                    answers.append((at, hit.allowed, hit.wait_ms))
                clock.set(start + told_ms / 1000)
                then = await _hit(strategy, backend, new)
                answers.append((told_ms, then.allowed, then.wait_ms))
                expected = [(at, False, told_ms - at) for at in (0, *probes)]
                expected.append((told_ms, True, 0))
                if answers != expected:
                    untrue.append(
                        f"{first} -> {second} ({later} ms later): (ms, admitted, wait) "
                        f"{answers}, expected {expected}"
                    )
            finally:
                await backend.reset()
                await backend.close()
        assert not untrue, "\n".join(untrue)
