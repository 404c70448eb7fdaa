"""Conformance for the advanced strategies (`traffik.strategies.custom`): timelines on a test clock.

Part of `BackendConformance`, so every backend runs it. Each timeline checks admissions and
costs, that a refused hit's wait is never 0 and never longer than needed (refused a
millisecond before it, admitted at it), and that `get_stat` agrees with the next decision.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import AsyncIterator
from typing import Any, Callable

import pytest

from traffik.backends.base import ThrottleBackend
from traffik.backends.inmemory import InMemoryBackend
from traffik.clock import ManualClock
from traffik.decision import Decision
from traffik.rates import Rate
from traffik.strategies import (
    AdaptiveThrottle,
    CostBasedTokenBucket,
    PriorityQueue,
    QuotaWithRollover,
    Strategy,
    TieredRate,
    TimeOfDay,
)
from traffik.strategies.steps import items

__all__ = ["AdvancedConformance"]

_START = 1_700_000_040.0
"""A minute boundary: 22:14 UTC, so clock-aligned windows are predictable."""
_MINUTE = 60_000
_names = itertools.count()


def _advanced() -> list[Strategy]:
    return [
        TieredRate(),
        AdaptiveThrottle(),
        PriorityQueue(),
        QuotaWithRollover(),
        TimeOfDay([(0, 24, 1)]),
        CostBasedTokenBucket(),
    ]


_IDS = [type(strategy).__name__ for strategy in _advanced()]

FIRST_WAIT_MS = {
    # three hits of 3/min at _START, then the fourth is refused with this wait:
    "TieredRate": _MINUTE,  # the window's end
    "AdaptiveThrottle": _MINUTE,  # the window's end (the third hit cut the limit to 1)
    "PriorityQueue": _MINUTE,  # the oldest entry leaves the log
    "QuotaWithRollover": _MINUTE,  # the period's end
    "TimeOfDay": _MINUTE,  # the window's end
    "CostBasedTokenBucket": 20_000,  # one token refills every 20 s (average cost 1)
}


async def _refused_exactly(
    backend: ThrottleBackend,
    clock: ManualClock,
    strategy: Any,
    key: str,
    rate: Rate,
    cost: int,
    where: str = "",
) -> Decision:
    """Decide a hit that must be refused; check its wait against `get_stat` (for cost 1) and
    against the clock (refused 1 ms before the wait, admitted at it); return the admission."""
    refused = await strategy.decide(key, rate, backend, cost)
    assert not refused.allowed, (where, refused)
    wait = refused.wait_ms
    assert wait >= 1 and wait == int(wait), (where, refused)
    if cost == 1:
        stat = await strategy.get_stat(key, rate, backend)
        assert stat.hits_remaining == 0 and stat.wait_ms == wait, (where, stat, refused)
    clock.advance(ms=wait - 1)
    early = await strategy.decide(key, rate, backend, cost)
    assert not early.allowed, f"{where}: admitted 1 ms before the wait ({wait} ms): too long"
    clock.advance(ms=1)
    if cost == 1:
        stat = await strategy.get_stat(key, rate, backend)
        assert stat.wait_ms == 0 and stat.hits_remaining >= 1, (where, stat)
    admitted = await strategy.decide(key, rate, backend, cost)
    assert admitted.allowed, f"{where}: refused after waiting exactly {wait} ms: {admitted}"
    return admitted


async def _hits(
    backend: ThrottleBackend, strategy: Any, key: str, rate: Rate, n: int
) -> list[bool]:
    return [(await strategy.decide(key, rate, backend, 1)).allowed for _ in range(n)]


# Periods of a minute and more (and clock moves to match): a server's keys expire on its own
# clock, whatever the test clock says, so a key of a one-second period read a second later on
# a slow machine was gone where memory still had it.
_PERIODS = [60_000, 90_000, 150_000, 600_000, 3_600_000, 216_000_000]
_KEYS = ["k", "tier:premium:k", "priority:1:k", "priority:4:k", "priority:high:k", "j"]


def _operation(rng: random.Random) -> tuple[Any, ...]:
    roll = rng.random()
    if roll < 0.5:
        return ("hit", rng.choice(_KEYS), rng.choice([1, 1, 1, 2, 3, 0, 5, 9]))
    if roll < 0.65:
        return (
            "advance",
            rng.choice([0, 1, 59_999, rng.randint(1, 1_800_000), rng.randint(1, 240 * 10**6)]),
        )
    if roll < 0.75:
        return ("wait", rng.choice([-1, 0]))
    if roll < 0.87:
        return ("refund", rng.choice(_KEYS), rng.randint(1, 3))
    return ("stat", rng.choice(_KEYS))


async def _timeline(
    backend: ThrottleBackend,
    clock: ManualClock,
    strategy: Any,
    rates: list[Rate],
    ops: list[tuple[Any, ...]],
) -> list[Any]:
    """What `backend` answers to `ops`: hits (one step for all the rates), clock moves (by
    the last refusal's wait, or -1 ms), refunds and stats."""
    answers: list[Any] = []
    wait = 0.0
    for op in ops:
        kind = op[0]
        if kind == "hit":
            decision = await backend.evaluate_all(items(strategy, op[1], rates, op[2], backend))
            wait = wait if decision.allowed else decision.wait_ms
            answers.append(
                (decision.allowed, decision.wait_ms, decision.remaining, decision.reset_ms)
            )
        elif kind == "advance":
            clock.advance(ms=op[1])
        elif kind == "wait":
            clock.advance(ms=max(wait + op[1], 0))
        elif kind == "refund":
            await backend.refund_all(items(strategy, op[1], rates, op[2], backend))
        else:
            peek = await backend.evaluate_all(
                items(strategy, op[1], rates, 1, backend), commit=False
            )
            answers.append((peek.allowed, peek.wait_ms, peek.remaining, peek.reset_ms))
    return answers


@pytest.mark.anyio
class AdvancedConformance:
    """The advanced strategies on every backend; mixed into `BackendConformance`."""

    supports_clock: bool
    exact_walks: int

    @pytest.fixture
    async def advanced_clock(
        self, make_backend: Callable[..., ThrottleBackend]
    ) -> AsyncIterator[tuple[ThrottleBackend, ManualClock]]:
        if not self.supports_clock:
            pytest.skip("this backend takes its time from the server")
        clock = ManualClock(_START)
        backend = make_backend(namespace=f"advanced-{next(_names)}", clock=clock)
        yield backend, clock
        await backend.reset()
        await backend.close()

    @pytest.mark.parametrize("strategy", _advanced(), ids=_IDS)
    async def test_advanced_timeline(
        self, advanced_clock: tuple[ThrottleBackend, ManualClock], strategy: Strategy
    ) -> None:
        backend, clock = advanced_clock
        rate = Rate.parse("3/min")
        hits = [await strategy.decide("t", rate, backend, 1) for _ in range(3)]
        assert [d.allowed for d in hits] == [True] * 3
        assert [d.remaining for d in hits] == [2, 1, 0]
        refused = await strategy.decide("t", rate, backend, 1)
        assert refused.wait_ms == FIRST_WAIT_MS[type(strategy).__name__]
        await _refused_exactly(backend, clock, strategy, "t", rate, 1)
        clock.advance(ms=4 * rate.expire)
        again = await _hits(backend, strategy, "t", rate, 3)
        assert again == [True] * 3, "the limit did not recover"

    @pytest.mark.parametrize("strategy", _advanced(), ids=_IDS)
    async def test_advanced_concurrent_hits(
        self, advanced_clock: tuple[ThrottleBackend, ManualClock], strategy: Strategy
    ) -> None:
        """200 hits at once on a limit of 100 admit exactly 100, or, for AdaptiveThrottle,
        exactly the 81 its threshold lets through (the 81st passes 80 % and cuts the limit)."""
        backend, _ = advanced_clock
        rate = Rate.parse("100/hour")
        decisions = await asyncio.gather(
            *(strategy.decide("hot", rate, backend, 1) for _ in range(200))
        )
        expected = 81 if isinstance(strategy, AdaptiveThrottle) else 100
        assert sum(1 for d in decisions if d.allowed) == expected
        assert all(d.wait_ms > 0 for d in decisions if not d.allowed)

    @pytest.mark.parametrize("strategy", _advanced(), ids=_IDS)
    async def test_advanced_costs_and_refunds(
        self, advanced_clock: tuple[ThrottleBackend, ManualClock], strategy: Strategy
    ) -> None:
        backend, clock = advanced_clock
        rate = Rate.parse("3/min")
        assert (await strategy.decide("c", rate, backend, 2)).allowed
        await _refused_exactly(backend, clock, strategy, "c", rate, 2)
        never = await strategy.decide("big", rate, backend, 4)
        assert not never.allowed and never.wait_ms == rate.expire
        assert (await strategy.decide("big", rate, backend, 1)).allowed, (
            "an oversized request must not consume quota"
        )
        hit = items(strategy, "r", (rate,), 1, backend)
        assert all([(await backend.evaluate_all(hit)).allowed for _ in range(2)])
        await backend.refund_all(hit)
        peek = await backend.evaluate_all(hit, commit=False)
        assert peek.allowed and peek.remaining == 1, peek

    @pytest.mark.parametrize("strategy", _advanced(), ids=_IDS)
    async def test_advanced_waits_are_exact(
        self, make_backend: Callable[..., ThrottleBackend], strategy: Strategy
    ) -> None:
        """Random walks (limits 1-8, periods 1 min to 2 h, costs up to what the strategy
        admits; tiers and priorities varied): every refused hit is refused a millisecond
        before its wait and admitted at it. (Periods of a minute and more: a server's keys
        expire on its own clock, whatever the test clock says.)"""
        if not self.supports_clock:
            pytest.skip("this backend takes its time from the server")
        name = type(strategy).__name__
        if isinstance(strategy, TimeOfDay):  # limits that change hour by hour, and zero hours
            strategy = TimeOfDay([(0, 7, 0.5), (7, 13, 3), (13, 20, 1), (22, 24, 2)], 5.5)
        rng = random.Random(f"advanced-exact-{name}")
        for walk in range(max(self.exact_walks // 3, 4)):
            clock = ManualClock(_START + rng.randrange(0, 10**8) / 1000)
            backend = make_backend(namespace=f"advanced-{next(_names)}", clock=clock)
            try:
                limit = rng.randint(1, 8)
                period = rng.choice([rng.randint(60_000, 600_000), 1_800_000, 5_400_000, 7_200_000])
                rate = Rate(limit=limit, milliseconds=period)
                for step in range(10):
                    key = rng.choice(
                        ["walk", "tier:premium:walk", "priority:1:walk", "priority:4:walk"]
                    )
                    cost = rng.randint(1, min(limit, strategy.capacity(rate)))
                    decision = await strategy.decide(key, rate, backend, cost)
                    if not decision.allowed:
                        where = f"walk {walk} step {step} ({rate}, cost {cost}, {key})"
                        await _refused_exactly(backend, clock, strategy, key, rate, cost, where)
                    clock.advance(ms=rng.choice([0, 1, rng.randint(1, period)]))
            finally:
                await backend.reset()
                await backend.close()

    @pytest.mark.parametrize("strategy", _advanced(), ids=_IDS)
    async def test_advanced_matches_memory(
        self, make_backend: Callable[..., ThrottleBackend], strategy: Strategy
    ) -> None:
        """Random timelines (one to three rates, costs up to past the limit, tiers and
        priorities varied, refunds, stats) decide exactly as on `InMemoryBackend`."""
        if not self.supports_clock:
            pytest.skip("this backend takes its time from the server")
        name = type(strategy).__name__
        if isinstance(strategy, TimeOfDay):
            strategy = TimeOfDay([(0, 7, 0.5), (7, 13, 3), (13, 20, 1), (22, 24, 2)], 5.5)
        rng = random.Random(f"advanced-memory-{name}")
        for _ in range(max(self.exact_walks // 5, 3)):
            rates: list[Rate] = []
            for _ in range(rng.choice([1, 2, 2, 3])):
                rate = Rate(limit=rng.randint(1, 6), milliseconds=rng.choice(_PERIODS))
                if all((rate.limit, rate.expire) != (r.limit, r.expire) for r in rates):
                    rates.append(rate)
            ops = [_operation(rng) for _ in range(25)]
            start = _START + rng.randrange(0, 10**8) / 1000
            answers = []
            for make in (InMemoryBackend, make_backend):
                clock = ManualClock(start)
                backend = make(namespace=f"advanced-{next(_names)}", clock=clock)
                try:
                    answers.append(await _timeline(backend, clock, strategy, rates, ops))
                finally:
                    await backend.reset()
                    await backend.close()
            memory, other = answers
            assert other == memory, next(
                (ops[: i + 1], m, o) for i, (m, o) in enumerate(zip(memory, other)) if m != o
            )

    # -- what each strategy is for ---------------------------------------------------------

    async def test_tiers_share_one_count_per_client(
        self, advanced_clock: tuple[ThrottleBackend, ManualClock]
    ) -> None:
        backend, clock = advanced_clock
        strategy, rate = TieredRate({"free": 1, "pro": 3}), Rate.parse("2/min")  # int multipliers
        assert await _hits(backend, strategy, "tier:pro:u", rate, 7) == [True] * 6 + [False]
        stat = await strategy.get_stat("tier:pro:u", rate, backend)
        assert stat.metadata is not None and stat.metadata["effective_limit"] == 6
        # The same client as free (or naming no tier): one count, already past 2.
        assert await _hits(backend, strategy, "tier:free:u", rate, 1) == [False]
        assert (await strategy.get_stat("u", rate, backend)).hits_remaining == 0
        await _refused_exactly(backend, clock, strategy, "tier:pro:u", rate, 1)

    async def test_priorities_meet_in_one_log(
        self, advanced_clock: tuple[ThrottleBackend, ManualClock]
    ) -> None:
        backend, clock = advanced_clock
        strategy, rate = PriorityQueue(), Rate.parse("3/min")
        assert await _hits(backend, strategy, "priority:1:u", rate, 3) == [True] * 3
        clock.advance(10)
        # Higher priorities do not count the LOW hits...
        assert await _hits(backend, strategy, "priority:4:u", rate, 4) == [True] * 3 + [False]
        # ...and every other level counts the CRITICAL ones: the client has one log.
        assert await _hits(backend, strategy, "u", rate, 1) == [False]
        await _refused_exactly(backend, clock, strategy, "priority:high:u", rate, 1)
        await _refused_exactly(backend, clock, strategy, "priority:1:u", rate, 3)

    async def test_adaptive_limit_drops_once_per_window(
        self, advanced_clock: tuple[ThrottleBackend, ManualClock]
    ) -> None:
        backend, clock = advanced_clock
        strategy = AdaptiveThrottle(0.5, 0.5, 0.1, 0.3)
        rate = Rate.parse("10/min")
        admitted: list[int] = []
        for _ in range(3):
            # Past 50 % of the limit the limit halves, once (10 -> 5; then 6 -> 3; 4 -> 2),
            # however many refused hits follow; each new window recovers one unit.
            admitted.append(sum(await _hits(backend, strategy, "a", rate, 30)))
            clock.advance(ms=rate.expire)
        assert admitted == [6, 4, 3]
        await _hits(backend, strategy, "a", rate, 30)
        await _refused_exactly(backend, clock, strategy, "a", rate, 1)

    async def test_adaptive_refund_undoes_the_cut(
        self, advanced_clock: tuple[ThrottleBackend, ManualClock]
    ) -> None:
        """A refund that takes the count back under the threshold undoes the cut it made,
        as if the hit had not happened."""
        backend, _ = advanced_clock
        strategy, rate = AdaptiveThrottle(0.5, 0.5, 0.1, 0.3), Rate.parse("10/min")
        assert await _hits(backend, strategy, "a", rate, 7) == [True] * 6 + [False]  # 10 -> 5
        hit = items(strategy, "a", (rate,), 1, backend)
        await backend.refund_all(hit)  # 5 counted: not past 50 % of 10
        assert await _hits(backend, strategy, "a", rate, 2) == [True, False]  # cut again at 6
        await backend.refund_all(items(strategy, "a", (rate,), 2, backend))  # 4: still cut? no
        assert sum(await _hits(backend, strategy, "a", rate, 9)) == 2  # 5, then 6 cuts to 5

    async def test_adaptive_several_rates_a_refused_step_leaves_no_cut(
        self, advanced_clock: tuple[ThrottleBackend, ManualClock]
    ) -> None:
        """A step a later rate refuses takes nothing from an earlier one, its load cut
        included (Memcached takes the rates in turn and gives back: the cut stayed)."""
        backend, _ = advanced_clock
        strategy = AdaptiveThrottle(0.9, 0.5, 0.1, 0.3)
        rates = (Rate.parse("10/min"), Rate.parse("9/hour"))
        refused = await backend.evaluate_all(items(strategy, "s", rates, 10, backend))
        assert not refused.allowed  # 10 fits 10/min (and would cut it to 5), never 9/hour
        admitted = [
            (await backend.evaluate_all(items(strategy, "s", rates, 1, backend))).allowed
            for _ in range(10)
        ]
        assert admitted == [True] * 9 + [False]  # the ninth passes 90 % of 9/hour, cuts it

    async def test_rollover_carries_part_of_the_unused_quota(
        self, advanced_clock: tuple[ThrottleBackend, ManualClock]
    ) -> None:
        backend, clock = advanced_clock
        strategy, rate = QuotaWithRollover(0.5, max_rollover=1), Rate.parse("4/min")
        admitted: list[int] = []
        for _ in range(3):  # uses 1 (3 unused: 1 rolls over), then 5, then 4 (none unused)
            admitted.append(
                sum(await _hits(backend, strategy, "q", rate, 1 if not admitted else 9))
            )
            clock.advance(ms=rate.expire)
        assert admitted == [1, 5, 4]
        assert sum(await _hits(backend, strategy, "q", rate, 1)) == 1  # 3 unused...
        clock.advance(ms=2 * rate.expire)  # ...but the next period saw nothing: no rollover
        assert sum(await _hits(backend, strategy, "q", rate, 9)) == 4

    async def test_time_of_day_waits_for_the_hour_that_allows_more(
        self, advanced_clock: tuple[ThrottleBackend, ManualClock]
    ) -> None:
        backend, clock = advanced_clock
        strategy, rate = TimeOfDay([(0, 23, 1), (23, 24, 2)]), Rate.parse("2/day")
        assert await _hits(backend, strategy, "d", rate, 2) == [True, True]  # 22:14 UTC
        admitted = await _refused_exactly(backend, clock, strategy, "d", rate, 1)
        assert clock() == _START + 46 * 60  # 23:00, when the day's limit becomes 4
        assert admitted.limit == 4 and admitted.remaining == 1
        assert await _hits(backend, strategy, "d", rate, 1) == [True]
        await _refused_exactly(backend, clock, strategy, "d", rate, 1)
        assert clock() == _START + 106 * 60  # midnight: a new day, limit 2 again

    async def test_expensive_traffic_refills_more_slowly(
        self, advanced_clock: tuple[ThrottleBackend, ManualClock]
    ) -> None:
        backend, clock = advanced_clock
        strategy = CostBasedTokenBucket(burst_size=10, cost_window=2, min_refill_rate=0.25)
        # One token a minute at the full rate (not a second: a server's keys expire on its own
        # clock, and a bucket that expired between two hits would forget its history).
        rate = Rate.parse("10/10min")
        assert (await strategy.decide("b", rate, backend, 10)).allowed
        refused = await strategy.decide("b", rate, backend, 1)
        assert refused.wait_ms == 240_000  # average cost 10: refills at the least, a quarter
        await _refused_exactly(backend, clock, strategy, "b", rate, 1)
        clock.advance(ms=2_400_000)  # full again: the history is forgotten
        assert (await strategy.decide("b", rate, backend, 10)).allowed
        assert (await strategy.decide("b", rate, backend, 1)).wait_ms == 240_000
        clock.advance(ms=2_400_000)
        for _ in range(9):
            assert (await strategy.decide("b", rate, backend, 1)).allowed
        assert (await strategy.decide("b", rate, backend, 2)).wait_ms == 60_000  # average 1
