"""Conformance for what every answer tells a client: its wait, `Retry-After`, units left and reset.

Part of `BackendConformance`, so every backend runs it. A client that obeys what it is told
is never surprised (docs/guides/headers.md, docs/guides/costs.md):

- a refused request retried after the whole seconds `Retry-After` rounds its wait up to
  (`Decision.retry_after`) is admitted, whatever the strategy (the hour's limit of a
  `TimeOfDay` included; the wait itself is checked to the millisecond by the timelines);
- right after an admitted request that left `r` units, exactly `r` more requests of cost 1
  are admitted at that instant, and the next is refused;
- at the reset a decision tells (`reset_ms`), every rate of the client is whole again (a
  peek answers as on a key never used, or better: a `QuotaWithRollover` rollover) and, for
  one rate, not a millisecond earlier when the request held something (a refused step of
  several rates tells the reset of those that admit it as if charged);
- a cost above what a rate can ever admit (up to past 64 bits) is refused with one period
  of that rate as its wait (with several rates, at least that) and takes nothing: no
  promise, it stays refused.

A cost of 0 is left out: a throttle never asks a store about it (it passes). `answer_walks`
runs these checks on random walks, with one or two rates; a backend whose key expiry
follows an injected clock (`InMemoryBackend`, `SQLiteBackend`) can run it with periods down
to a millisecond (`SHORT_PERIODS_MS`), which the shared suite leaves out: a server's keys
expire on its own clock, whatever the test clock says. Needs pytest and anyio.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Iterator, Sequence
from typing import Any, Callable

import pytest

from traffik.backends.base import ThrottleBackend
from traffik.clock import ManualClock
from traffik.decision import Decision
from traffik.rates import Rate
from traffik.strategies import (
    GCRA,
    AdaptiveThrottle,
    CostBasedTokenBucket,
    FixedWindow,
    LeakyBucket,
    LeakyBucketWithQueue,
    PriorityQueue,
    QuotaWithRollover,
    SlidingWindowCounter,
    SlidingWindowLog,
    Strategy,
    TieredRate,
    TimeOfDay,
    TokenBucket,
    TokenBucketWithDebt,
)
from traffik.strategies.markers import deciding
from traffik.strategies.steps import items

__all__ = [
    "GCRA_RESETS",
    "LONG_PERIODS_MS",
    "SHORT_PERIODS_MS",
    "TRUTH_STRATEGIES",
    "AnswerTruthConformance",
    "answer_walks",
]

_START = 1_700_000_040.0  # on a minute boundary
_names = itertools.count()
_DAY = 86_400_000
_EIGHT_PM = 1_699_992_000.0
"""20:00:00 UTC (2023-11-14)."""

LONG_PERIODS_MS = (60_000, 90_000, 3_600_000, 31 * _DAY, 400 * _DAY)
"""Periods every backend walks on a test clock: a minute and more (a server's keys expire on
its own clock), up to past memcached's 30-day expiry rule."""
SHORT_PERIODS_MS = (1, 7, 700, 1000, 1500, 3000)
"""Periods down to a millisecond (`1/3s`, `10/1500ms`), for a backend whose keys expire on
the test clock."""

TRUTH_STRATEGIES: tuple[Strategy, ...] = (
    FixedWindow(),
    SlidingWindowCounter(),
    SlidingWindowLog(),
    TokenBucket(),
    TokenBucket(burst_size=3),
    TokenBucketWithDebt(max_debt=2),
    LeakyBucket(),
    LeakyBucketWithQueue(),
    GCRA(),
    GCRA(burst_tolerance_ms=0),
    # a tolerance that is not a whole number of intervals (of most rates), larger than the
    # shortest periods
    GCRA(burst_tolerance_ms=1500),
    TieredRate(),
    AdaptiveThrottle(),
    AdaptiveThrottle(0.5, 0.5, 0.2, 0.3),
    PriorityQueue(),
    QuotaWithRollover(),
    # limits that change hour by hour (an hour allowing nothing at a limit of 1), off UTC
    TimeOfDay([(0, 7, 0.5), (7, 13, 3), (13, 20, 1), (22, 24, 2)], 5.5),
    CostBasedTokenBucket(),
)
GCRA_RESETS: tuple[tuple[str, Any, int, int, int], ...] = (
    # (rate, burst_tolerance_ms, capacity, reset after a hit of 1, after a hit of capacity)
    ("3/90s", None, 3, 30_000, 90_000),
    ("3/90s", 0, 1, 30_000, 30_000),
    ("3/90s", 30_000, 2, 30_000, 60_000),  # one whole interval
    ("3/90s", 1500, 1, 28_500, 28_500),  # the budget is whole once 1500 ms are left
    ("3/90s", 100_000, 4, 20_000, 110_000),  # longer than the period: 3 1/3 intervals
    ("2/min", 45_000, 2, 15_000, 45_000),
    ("7/min", 1500, 1, 7072, 7072),  # an interval of 8571 3/7 ms
    ("7/min", 100_000, 12, 2858, 97_143),
    ("5/hour", 1500, 1, 718_500, 718_500),
)
"""`GCRA`'s reset for a tolerance that is a whole number of emission intervals or not, 0, or
longer than the period: the budget is whole again once the backlog is back to the part of
the tolerance short of a whole interval (that part never admits a unit), not when it is
gone."""
_KEYS = ("", "tier:premium:", "priority:1:", "priority:4:")
"""Key prefixes of the walks: a tier (`TieredRate`), a priority (`PriorityQueue`), or none."""


def _bare_id(strategy: Strategy) -> str:
    return repr(strategy).replace(" ", "")


_MINUTE_AND_HOUR = (Rate.parse("2/min"), Rate.parse("10/hour"))


def _minute_below_hour(strategy: Strategy) -> Strategy:
    """`strategy` as the cost-above-one-limit walk uses it (`TimeOfDay` allowing its limit
    all day)."""
    return TimeOfDay([(0, 24, 1)]) if isinstance(strategy, TimeOfDay) else strategy


def _capacity_for(strategy: Strategy, key: str, rate: Rate) -> int:
    """The most `strategy` admits at once for `key` at `rate`, as it decides the key
    (`deciding`: a `TieredRate` at the key's tier, whose `capacity` alone is the highest
    tier's)."""
    bound, (decided,) = deciding(strategy, key, (rate,))
    return int(bound.capacity(decided))


OVER_THE_MINUTE: tuple[Strategy, ...] = tuple(
    strategy
    for strategy in map(_minute_below_hour, TRUTH_STRATEGIES)
    if _capacity_for(strategy, "k", _MINUTE_AND_HOUR[0]) + 1
    < _capacity_for(strategy, "k", _MINUTE_AND_HOUR[1])
)
"""The strategies whose hour admits at once more than their minute can ever (not a bucket
whose size caps both)."""


async def _decide(
    backend: ThrottleBackend, strategy: Strategy, key: str, rates: Sequence[Rate], cost: int
) -> Decision:
    """One hit, as a throttle decides it: one step for all the rates."""
    return await backend.evaluate_all(items(strategy, key, rates, cost, backend))


async def _peek(
    backend: ThrottleBackend, strategy: Strategy, key: str, rates: Sequence[Rate]
) -> list[tuple[bool, Any]]:
    """For each rate, whether a hit of cost 1 would be admitted now, and the units it would
    leave."""
    peek = await backend.evaluate_all(items(strategy, key, rates, 1, backend), commit=False)
    return [(part.allowed, part.remaining) for part in getattr(peek, "parts", (peek,))]


def _short_of(peek: list[tuple[bool, Any]], whole: list[tuple[bool, Any]]) -> bool:
    """Whether some rate of `peek` has less than the same rate of a fresh key (`whole`)."""
    return any(
        fresh and (not allowed or left < fresh_left)
        for (allowed, left), (fresh, fresh_left) in zip(peek, whole)
    )


def _capacities(
    backend: ThrottleBackend, strategy: Strategy, key: str, rates: Sequence[Rate]
) -> list[int]:
    """The most each rate admits at once for `key` (a tier's limit, for a tier's key)."""
    return [item.strategy.capacity(item.rate) for item in items(strategy, key, rates, 1, backend)]


async def _walk(
    backend: ThrottleBackend,
    clock: ManualClock,
    strategy: Strategy,
    rates: Sequence[Rate],
    rng: random.Random,
    where: str,
) -> None:
    prefix = rng.choice(_KEYS)
    key = f"{prefix}walk"
    fresh = (f"{prefix}fresh-{n}" for n in itertools.count())
    capacities = _capacities(backend, strategy, key, rates)
    capacity = min(capacities)
    period = max(rate.expire for rate in rates)
    for step in range(14):
        cost = rng.choice([1, 1, 1, rng.randint(1, capacity), capacity, capacity + 1, 10**30])
        held = await _peek(backend, strategy, key, rates) if cost > capacity else None
        decision = await _decide(backend, strategy, key, rates, cost)
        told = f"{where} step {step}: cost {cost}: {decision}"
        if cost > capacity:
            # Refused, told one period of the rate it exceeds (with several rates, at least
            # that), and charged nothing: not a promise, the request stays refused.
            exceeded = [r.expire for r, most in zip(rates, capacities) if cost > most]
            assert not decision.allowed and decision.wait_ms >= min(exceeded), told
            if len(rates) == 1:
                assert decision.wait_ms == rates[0].expire, told
            assert await _peek(backend, strategy, key, rates) == held, f"{told}: it took units"
            clock.advance(ms=decision.wait_ms)
            assert not (await _decide(backend, strategy, key, rates, cost)).allowed, told
            continue
        check = rng.choice(["remaining", "reset", "retry"])
        if check == "retry" and not decision.allowed:
            # The whole seconds of `Retry-After` (the wait itself is checked to the
            # millisecond by `test_waits_are_exact` and the advanced walks).
            clock.advance(ms=decision.retry_after * 1000)
            again = await _decide(backend, strategy, key, rates, cost)
            assert again.allowed, f"{told}: refused {decision.retry_after} s later: {again}"
        elif check == "remaining" and decision.allowed:
            left = int(decision.remaining or 0)
            hits = [(await _decide(backend, strategy, key, rates, 1)).allowed for _ in range(left)]
            extra = await _decide(backend, strategy, key, rates, 1)
            assert hits == [True] * left and not extra.allowed, (
                f"{told}: {sum(hits) + extra.allowed} more hits of cost 1 admitted"
            )
        elif check == "reset":
            # (A refused step of several rates tells the reset of the rates that admit it as
            # if they had been charged; only one rate is checked to the millisecond.)
            exact = len(rates) == 1 or decision.allowed
            await _check_reset(backend, clock, strategy, key, rates, decision, fresh, told, exact)
        clock.advance(ms=rng.choice([0, 0, 1, rng.randint(1, period)]))


async def _check_reset(
    backend: ThrottleBackend,
    clock: ManualClock,
    strategy: Strategy,
    key: str,
    rates: Sequence[Rate],
    decision: Decision,
    fresh: Iterator[str],
    told: str,
    exact: bool,
) -> None:
    """At the reset the key answers as a fresh one (or better: a rollover); a millisecond
    before, when the request held something and `exact`, it does not yet."""
    reset = int(decision.reset_ms)
    assert reset == decision.reset_ms >= 0, told
    held = exact and (decision.allowed or reset > 0)
    if reset > 0:
        clock.advance(ms=reset - 1)
        # (A rollover may leave more than a fresh key has; an adaptive limit still short of
        # the limit may admit as much this window as a fresh one, whose cut caps it too.)
        if held and not isinstance(strategy, (QuotaWithRollover, AdaptiveThrottle)):
            before = await _peek(backend, strategy, key, rates)
            whole = await _peek(backend, strategy, next(fresh), rates)
            # (An hour of `TimeOfDay` that allows nothing refuses a fresh key too.)
            assert _short_of(before, whole) or not all(admits for admits, _ in whole), (
                f"{told}: whole 1 ms before its reset ({before} against {whole})"
            )
        clock.advance(ms=1)
    after = await _peek(backend, strategy, key, rates)
    whole = await _peek(backend, strategy, next(fresh), rates)
    assert not _short_of(after, whole), (
        f"{told}: not whole at its reset ({after} against a fresh key's {whole})"
    )


async def answer_walks(
    make_backend: Callable[..., ThrottleBackend],
    strategy: Strategy,
    walks: int,
    periods: Sequence[int],
) -> None:
    """Random walks of `strategy` on backends from `make_backend(namespace=, clock=)`, with
    one or two rates of those `periods` and costs from 1 to past 64 bits: each answer is
    checked as the module docstring says."""
    rng = random.Random(f"truth-{_bare_id(strategy)}-{periods}")
    for walk in range(walks):
        clock = ManualClock(_START + rng.randrange(0, 10**8) / 1000)
        backend = make_backend(namespace=f"truth-{next(_names)}", clock=clock)
        rates = [Rate(limit=rng.randint(1, 8), milliseconds=rng.choice(periods))]
        if rng.random() < 0.25:
            other = Rate(limit=rates[0].limit + rng.randint(1, 4), milliseconds=rng.choice(periods))
            if other.expire != rates[0].expire:
                rates.append(other)
        try:
            await _walk(
                backend, clock, strategy, rates, rng, f"walk {walk} ({';'.join(map(str, rates))})"
            )
        finally:
            await backend.reset()
            await backend.close()


async def _sleep_at_least(ms: float) -> None:
    """Sleep `ms` milliseconds or more: an event loop's timer may fire a little early
    (uvloop's, to the millisecond)."""
    until = time.monotonic() + ms / 1000
    while (left := until - time.monotonic()) > 0:
        await asyncio.sleep(left)


@pytest.mark.anyio
class AnswerTruthConformance:
    """What answers tell a client; mixed into `BackendConformance`."""

    supports_clock: bool
    clock_moves_expiry: bool
    exact_walks: int

    @pytest.mark.parametrize("strategy", TRUTH_STRATEGIES, ids=_bare_id)
    async def test_every_answer_tells_the_truth(
        self, make_backend: Callable[..., ThrottleBackend], strategy: Strategy
    ) -> None:
        if not self.supports_clock:
            pytest.skip("this backend takes its time from the server")
        if isinstance(strategy, FixedWindow) and not self.clock_moves_expiry:
            pytest.skip("FixedWindow's window is a key TTL, which follows the server's clock here")
        await answer_walks(make_backend, strategy, max(self.exact_walks // 10, 2), LONG_PERIODS_MS)

    @pytest.mark.parametrize(
        ("text", "tolerance", "capacity", "after_one", "after_all"),
        GCRA_RESETS,
        ids=[f"{case[0]}-{case[1]}" for case in GCRA_RESETS],
    )
    async def test_gcra_is_whole_at_its_reset(
        self,
        make_backend: Callable[..., ThrottleBackend],
        text: str,
        tolerance: Any,
        capacity: int,
        after_one: int,
        after_all: int,
    ) -> None:
        """A hit of 1, of the whole capacity, and a refused hit tell the reset `GCRA_RESETS`
        gives: a hit of the whole capacity is admitted then, and not 1 ms before. What the
        charge holds (`held`, what a refund may give back) runs out at that reset; given back
        1 ms before it, the budget is whole."""
        if not self.supports_clock:
            pytest.skip("this backend takes its time from the server")
        strategy, rate = GCRA(burst_tolerance_ms=tolerance), Rate.parse(text)
        assert strategy.capacity(rate) == capacity
        clock = ManualClock(_START)
        backend = make_backend(namespace=f"truth-{next(_names)}", clock=clock)

        def at(ms: int) -> None:  # (`_START` plus whole ms: exact, where a float is not)
            clock.set(_START)
            clock.advance(ms=ms)

        async def whole(key: str) -> bool:
            hit = items(strategy, key, [rate], capacity, backend)
            return (await backend.evaluate_all(hit, commit=False)).allowed

        try:
            for key, cost, reset in (("one", 1, after_one), ("all", capacity, after_all)):
                at(0)
                admitted = await _decide(backend, strategy, key, [rate], cost)
                told = f"{text} GCRA({tolerance}) cost {cost}: {admitted}"
                assert admitted.allowed and admitted.reset_ms == reset, told
                assert admitted.remaining == capacity - cost, told
                if cost == capacity:
                    refused = await _decide(backend, strategy, key, [rate], 1)
                    assert not refused.allowed and refused.reset_ms == reset, (told, refused)
                assert strategy.held(rate, cost, admitted, 0) == cost, told
                assert strategy.held(rate, cost, admitted, reset - 1) >= 1, told
                assert strategy.held(rate, cost, admitted, reset) == 0, told
                at(reset - 1)
                assert not await whole(key), f"{told}: whole 1 ms before its reset"
                at(reset)
                assert await whole(key), f"{told}: not whole at its reset"
                # Given back 1 ms before the reset: what it still holds, and the budget is whole.
                at(0)
                again = f"{key}-given-back"
                admitted = await _decide(backend, strategy, again, [rate], cost)
                at(reset - 1)
                left = strategy.held(rate, cost, admitted, reset - 1)
                await backend.refund_all(items(strategy, again, [rate], left, backend))
                assert await whole(again), f"{told}: not whole given back {left} at {reset - 1}"
        finally:
            await backend.reset()
            await backend.close()

    async def test_retry_after_outlasts_an_hour_that_allows_less(
        self, make_backend: Callable[..., ThrottleBackend]
    ) -> None:
        """`TimeOfDay` at `1/min`, hours 20 to 24 allowing nothing, in a time zone 360 ms
        behind UTC: the window opening at 20:00:00.000 UTC is still 19:59:59.640 there, and
        its hour admits, but only for 360 ms. A client refused at 19:59:59.700 UTC and told
        `Retry-After: 1` would come back in the hour that allows nothing: it is told to
        wait until midnight there instead, to the millisecond, and admitted then."""
        if not self.supports_clock:
            pytest.skip("this backend takes its time from the server")
        strategy = TimeOfDay([(0, 20, 1), (20, 24, 0.5)], timezone_offset=-0.0001)
        rate = Rate.parse("1/min")
        clock = ManualClock(_EIGHT_PM - 0.5)
        backend = make_backend(namespace=f"truth-{next(_names)}", clock=clock)
        try:
            for key in ("waits-the-ms", "waits-the-seconds"):
                clock.set(_EIGHT_PM - 0.5)
                assert (await strategy.decide(key, rate, backend, 1)).allowed
                clock.advance(ms=200)
                refused = await strategy.decide(key, rate, backend, 1)
                assert refused.wait_ms == 4 * 3_600_000 + 660, refused  # to 00:00:00.360 UTC
                if key == "waits-the-ms":
                    clock.advance(ms=refused.wait_ms - 1)
                    assert not (await strategy.decide(key, rate, backend, 1)).allowed
                    clock.advance(ms=1)
                else:
                    clock.advance(ms=refused.retry_after * 1000)
                assert (await strategy.decide(key, rate, backend, 1)).allowed, key
        finally:
            await backend.reset()
            await backend.close()

    @pytest.mark.parametrize("strategy", TRUTH_STRATEGIES, ids=_bare_id)
    async def test_short_periods_in_real_time(
        self, make_backend: Callable[..., ThrottleBackend], strategy: Strategy
    ) -> None:
        """On the backend's own clock (a server's, for Redis), periods of a millisecond and
        of 40 ms: hits until one is refused, then a sleep of its wait, and the hit is admitted.
        Real time moves between hits and timers fire late or a little early, so this is the
        semantic check only: the sleep is the wait and 2 ms more, and no wait is timed (one
        longer than a second, an hour of `TimeOfDay` that allows nothing, is not slept on)."""
        backend = make_backend(namespace=f"truth-{next(_names)}")
        try:
            for text in ("1/1ms", "3/40ms"):
                rate = Rate.parse(text)
                key = f"real-{text}"
                for _ in range(3 * strategy.capacity(rate) + 3):
                    refused = await _decide(backend, strategy, key, [rate], 1)
                    if not refused.allowed:
                        break
                if refused.allowed or refused.wait_ms > 1000:
                    continue  # (the period passed between the hits; or no wait to sleep on)
                assert refused.wait_ms >= 1, (text, refused)
                await _sleep_at_least(refused.wait_ms + 2)
                again = await _decide(backend, strategy, key, [rate], 1)
                assert again.allowed, (text, refused, again)
        finally:
            await backend.reset()
            await backend.close()

    @pytest.mark.parametrize("strategy", OVER_THE_MINUTE, ids=_bare_id)
    async def test_a_cost_above_one_limit_waits_that_period(
        self, make_backend: Callable[..., ThrottleBackend], strategy: Strategy
    ) -> None:
        """`2/min;10/hour`, one hit (a fixed window opens), then a hit of a cost the minute
        can never admit and the hour would: refused with one full minute as its wait, as with
        the minute alone (docs/guides/costs.md), not the time left in the open window (no
        wait admits it), and charged to neither rate. On the backend's own clock: no window
        closes within the test (and `TimeOfDay` allows its limit all day)."""
        rates = list(_MINUTE_AND_HOUR)
        cost = _capacity_for(strategy, "k", rates[0]) + 1
        backend = make_backend(namespace=f"truth-{next(_names)}")
        try:
            assert (await _decide(backend, strategy, "k", rates, 1)).allowed
            await asyncio.sleep(0.002)  # (the open window has less than a minute left)
            refused = await _decide(backend, strategy, "k", rates, cost)
            assert not refused.allowed and refused.wait_ms == 60_000, refused
            assert (await _decide(backend, strategy, "k", rates, 1)).allowed
        finally:
            await backend.reset()
            await backend.close()
