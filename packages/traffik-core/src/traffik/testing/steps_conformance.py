"""Conformance for decisions over several items: several rates, combined throttles, refunds.

Part of `BackendConformance`, so every backend runs it. The reference is independence: a
decision over items admits exactly when every item, alone, would; it charges every item or
none (a fixed-window counter that refuses included: only alone does it count the hit); and its
wait is the longest refusing wait.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from typing import Any, Callable

import pytest

from traffik.backends.base import ThrottleBackend
from traffik.clock import ManualClock
from traffik.rates import Rate, parse_rates
from traffik.strategies import (
    ADVANCED_STRATEGIES,
    BUILTIN_STRATEGIES,
    AdaptiveThrottle,
    FixedWindow,
    QuotaWithRollover,
    SlidingWindowLog,
    Strategy,
    TimeOfDay,
)
from traffik.strategies.steps import Item, items

__all__ = ["StepsConformance"]

_START = 1_700_000_040.0
_names = itertools.count()
_IDS = [cls.__name__ for cls in BUILTIN_STRATEGIES]


def _strategies() -> list[Strategy]:
    return [cls() for cls in BUILTIN_STRATEGIES]


def _every_strategy() -> list[Strategy]:
    """The built-in and the advanced strategies (`AdaptiveThrottle` cut only by the hit that
    fills a window, `TimeOfDay` at 1x all day)."""
    settled = {
        AdaptiveThrottle: AdaptiveThrottle(load_threshold=0.99),
        TimeOfDay: TimeOfDay([(0, 24, 1)]),
    }
    made = [cls() for cls in BUILTIN_STRATEGIES + ADVANCED_STRATEGIES]
    return [settled.get(type(strategy), strategy) for strategy in made]


_HOUR_START = 1_700_002_800.0
"""A test-clock start on an hour boundary, so an hour's window turns with a minute's."""

_REFUSED_STEPS = [
    # (s after the start, cost, whether only the key that takes refused steps gets it)
    (0, 3, False),  # 3 of 3/min, 3 of 5/h
    (60, 2, False),  # 2 of 3/min (its next window), 5 of 5/h (a window strategy's)
    (3540, 1, True),  # the minute before the hour turns: 3/min admits, 5/h refuses
    (3542, 1, True),
]
"""The steps of `test_a_refused_step_leaves_every_rate_as_it_found_it` before the two keys
are compared."""


async def _alone(backend: ThrottleBackend, item: Item, commit: bool) -> Any:
    """`item` decided on its own (the reference)."""
    return await backend.evaluate_all([item], commit=commit)


async def _left(backend: ThrottleBackend, item: Item) -> Any:
    """The units `item`'s key has left: what a peek of cost 1 leaves plus that 1 (0 when
    refused)."""
    peek = await _alone(backend, Item(item.strategy, item.key, item.rate, 1), commit=False)
    return peek.remaining + 1 if peek.allowed else 0


@pytest.mark.anyio
class StepsConformance:
    """Decisions over several items; mixed into `BackendConformance`."""

    supports_clock: bool
    clock_moves_expiry: bool
    exact_walks: int

    def _clocked(
        self, make_backend: Callable[..., ThrottleBackend], strategy: Strategy
    ) -> tuple[ThrottleBackend, ManualClock]:
        if not self.supports_clock:
            pytest.skip("this backend takes its time from the server")
        if isinstance(strategy, FixedWindow) and not self.clock_moves_expiry:
            pytest.skip("FixedWindow's window is a key TTL, which follows the server's clock here")
        clock = ManualClock(_START)
        return make_backend(namespace=f"steps-{next(_names)}", clock=clock), clock

    @pytest.mark.parametrize("strategy", _strategies(), ids=_IDS)
    async def test_several_rates_act_as_independent_limits_charged_together(
        self, make_backend: Callable[..., ThrottleBackend], strategy: Strategy
    ) -> None:
        """A random walk on two rates against two single-rate twins fed only what the pair
        admits: the pair admits exactly when both twins do, with the longest wait. (Periods of
        minutes: a server's keys expire on its own clock, whatever the test clock says, and a
        key that expired while a slow machine ran the walk would part a pair from its twins.)"""
        backend, clock = self._clocked(make_backend, strategy)
        rng = random.Random(f"steps-{type(strategy).__name__}")
        try:
            for walk in range(max(self.exact_walks // 5, 3)):
                short = Rate(limit=rng.randint(1, 4), milliseconds=rng.randint(30_000, 180_000))
                long = Rate(
                    limit=short.limit + rng.randint(1, 6),
                    milliseconds=rng.randint(300_000, 3_600_000),
                )
                rates = (short, long)
                pair = items(strategy, f"pair{walk}", rates, 1, backend)
                twins = [
                    Item(strategy, backend.get_key(f"twin{walk}-{i}") + strategy.suffix, r, 1)
                    for i, r in enumerate(rates)
                ]
                for step in range(25):
                    alone = [await _alone(backend, twin, commit=False) for twin in twins]
                    decision = await backend.evaluate_all(pair)
                    expected = all(d.allowed for d in alone)
                    assert decision.allowed is expected, f"walk {walk} step {step}: {decision}"
                    if expected:
                        for twin in twins:
                            assert (await _alone(backend, twin, commit=True)).allowed
                    else:
                        assert decision.wait_ms == max(d.wait_ms for d in alone if not d.allowed)
                    clock.advance(ms=rng.choice([0, 1, rng.randint(1, 2 * short.expire)]))
        finally:
            await backend.reset()
            await backend.close()

    @pytest.mark.parametrize(
        "strategy", [FixedWindow(), SlidingWindowLog()], ids=["FixedWindow", "SlidingWindowLog"]
    )
    async def test_refusals_take_nothing_from_the_longer_rate(
        self, make_backend: Callable[..., ThrottleBackend], strategy: Strategy
    ) -> None:
        """1/min;10/hour: one hit, twenty refused in that minute, then one a minute for nine
        minutes, all admitted; the eleventh in the hour waits for the hour. (Not `1/s;10/min`:
        a server's keys expire on its own clock, and a slow machine let the second's key
        expire among the twenty refusals, which were then admitted.)"""
        backend, clock = self._clocked(make_backend, strategy)
        rates = parse_rates("1/min;10/hour")
        hit = items(strategy, "issue", rates, 1, backend)
        try:
            assert (await backend.evaluate_all(hit)).allowed
            for _ in range(20):
                clock.advance(ms=2400)
                refused = await backend.evaluate_all(hit)
                assert not refused.allowed and refused.wait_ms <= 60_000
            clock.set(_START + 60)
            for minute in range(1, 10):
                assert (await backend.evaluate_all(hit)).allowed, f"minute {minute}"
                clock.advance(60)
            eleventh = await backend.evaluate_all(hit)
            assert not eleventh.allowed
            assert eleventh.wait_ms >= 3_600_000 - 600_000
            assert getattr(eleventh, "refused", None) == 1  # the hour refused
        finally:
            await backend.reset()
            await backend.close()

    @pytest.mark.parametrize("strategy", _strategies(), ids=_IDS)
    async def test_a_refused_step_of_several_items_takes_nothing_from_any(
        self, make_backend: Callable[..., ThrottleBackend], strategy: Strategy
    ) -> None:
        """2/hour;10/hour: a hit, then a hit of cost 2 refused by the hour, twice; every rate
        is left as it was (a refusing fixed-window counter counts nothing), so a hit of cost 1
        fits. Alone, a fixed window counts the hits it refuses."""
        backend = make_backend(namespace=f"steps-{next(_names)}")
        rates = parse_rates("2/hour;10/hour")
        try:
            for key, decided in (("pair", rates), ("alone", rates[:1])):
                hit = items(strategy, key, decided, 1, backend)
                costly = items(strategy, key, decided, 2, backend)
                assert (await backend.evaluate_all(hit)).allowed
                assert not (await backend.evaluate_all(costly)).allowed
                assert not (await backend.evaluate_all(costly)).allowed
                counted = key == "alone" and isinstance(strategy, FixedWindow)
                left = [await _left(backend, item) for item in hit]
                assert left == ([0] if counted else [1, 9][: len(decided)]), key
                assert (await backend.evaluate_all(hit)).allowed is not counted, key
        finally:
            await backend.reset()
            await backend.close()

    @pytest.mark.parametrize(
        "strategy", _every_strategy(), ids=[type(s).__name__ for s in _every_strategy()]
    )
    async def test_a_refused_step_leaves_every_rate_as_it_found_it(
        self, make_backend: Callable[..., ThrottleBackend], strategy: Strategy
    ) -> None:
        """Two clients with the same history, but that one also sends steps of `3/min;5/h`
        (`_REFUSED_STEPS`); each step it is admitted, the other is sent too. Its refused
        steps leave no trace (docs/multiple-limits.md: on Memcached too, where the rates are
        taken in turn and what they took given back): the two are then answered the same
        as the hour turns, and after. (Memcached gave `QuotaWithRollover`'s take back as a
        refund, which left its new period's state with nothing used: the client then counted
        as seen in that period, and rolled over quota it never had.)"""
        if not self.supports_clock:
            pytest.skip("this backend takes its time from the server")
        if isinstance(strategy, FixedWindow) and not self.clock_moves_expiry:
            pytest.skip("FixedWindow's window is a key TTL, which follows the server's clock here")
        clock = ManualClock(_HOUR_START)
        backend = make_backend(namespace=f"steps-{next(_names)}", clock=clock)
        rates = parse_rates("3/min;5/h")
        # (Each client's keys under one hash tag, as a throttle names them: one step on a
        # Redis Cluster too.)
        taking, twin = "{refused}", "{twin}"
        try:
            refused = 0
            for at, cost, alone in _REFUSED_STEPS:
                clock.set(_HOUR_START + at)
                step = await backend.evaluate_all(items(strategy, taking, rates, cost, backend))
                if step.allowed or not alone:
                    same = await backend.evaluate_all(items(strategy, twin, rates, cost, backend))
                    assert same.allowed == step.allowed, at
                else:
                    refused += 1
            answers: dict[str, list[Any]] = {taking: [], twin: []}
            for at in (3600, 3601, 3660, 3720):
                clock.set(_HOUR_START + at)
                for key, told in answers.items():
                    for _ in range(5):
                        d = await backend.evaluate_all(items(strategy, key, rates, 1, backend))
                        told.append((at, d.allowed, d.wait_ms, d.remaining, d.reset_ms))
            assert answers[taking] == answers[twin], f"after {refused} refused steps"
        finally:
            await backend.reset()
            await backend.close()

    async def test_a_refunded_hit_leaves_no_quota_to_roll_over(
        self, make_backend: Callable[..., ThrottleBackend]
    ) -> None:
        """`QuotaWithRollover`: a client whose only hit of a period was given back
        (`refund`, `charge_when`) is answered in the next period as one never seen then,
        rolling nothing over (its refund left the period's state at nothing used, which
        counted as seen: it rolled the whole unused quota over)."""
        if not self.supports_clock:
            pytest.skip("this backend takes its time from the server")
        clock = ManualClock(_HOUR_START)
        backend = make_backend(namespace=f"steps-{next(_names)}", clock=clock)
        strategy, rates = QuotaWithRollover(), parse_rates("3/h")
        refunded, twin = "{refunded}", "{twin}"
        try:
            clock.set(_HOUR_START + 10)
            taken = items(strategy, refunded, rates, 1, backend)
            assert (await backend.evaluate_all(taken)).allowed
            await backend.refund_all(taken)
            answers: dict[str, list[Any]] = {refunded: [], twin: []}
            clock.set(_HOUR_START + 3600 + 10)
            for key, told in answers.items():
                for _ in range(5):
                    d = await backend.evaluate_all(items(strategy, key, rates, 1, backend))
                    told.append((d.allowed, d.remaining))
            assert answers[refunded] == answers[twin]
        finally:
            await backend.reset()
            await backend.close()

    @pytest.mark.parametrize("strategy", _strategies(), ids=_IDS)
    async def test_concurrent_hits_on_several_rates_admit_exactly_the_tightest(
        self, make_backend: Callable[..., ThrottleBackend], strategy: Strategy
    ) -> None:
        backend = make_backend(namespace=f"steps-{next(_names)}")
        rates = parse_rates("100/min;50/hour")
        try:
            decisions = await asyncio.gather(
                *(
                    backend.evaluate_all(items(strategy, "hot", rates, 1, backend))
                    for _ in range(200)
                )
            )
            assert sum(1 for d in decisions if d.allowed) == 50
        finally:
            await backend.reset()
            await backend.close()

    @pytest.mark.parametrize("strategy", _strategies(), ids=_IDS)
    async def test_two_throttles_keys_decided_all_or_nothing(
        self, make_backend: Callable[..., ThrottleBackend], strategy: Strategy
    ) -> None:
        backend = make_backend(namespace=f"steps-{next(_names)}")
        tight, loose = Rate.parse("2/hour"), Rate.parse("5/hour")
        both = [
            *items(strategy, "a:{client}", (tight,), 1, backend),
            *items(strategy, "b:{client}", (loose,), 1, backend),
        ]
        try:
            results = [(await backend.evaluate_all(both)).allowed for _ in range(4)]
            assert results == [True, True, False, False]
            loose_alone = await backend.evaluate_all(both[1:], commit=False)
            assert loose_alone.allowed and loose_alone.remaining == 2  # charged twice, not four
        finally:
            await backend.reset()
            await backend.close()

    @pytest.mark.parametrize("strategy", _strategies(), ids=_IDS)
    async def test_refund_gives_back_every_rate_up_to_a_full_budget(
        self, make_backend: Callable[..., ThrottleBackend], strategy: Strategy
    ) -> None:
        backend = make_backend(namespace=f"steps-{next(_names)}")
        rates = parse_rates("3/hour;5/day")
        hit = items(strategy, "refund", rates, 1, backend)
        try:
            assert [(await backend.evaluate_all(hit)).allowed for _ in range(3)] == [True] * 3
            await backend.refund_all(hit)
            assert (await backend.evaluate_all(hit)).allowed
            assert not (await backend.evaluate_all(hit)).allowed
            fresh = items(strategy, "never-used", rates, 1, backend)
            await backend.refund_all(items(strategy, "never-used", rates, 5, backend))
            peek = await backend.evaluate_all(fresh, commit=False)
            assert peek.allowed and peek.remaining == 2  # clamped: 3 - 1, not 3 + 5 - 1
        finally:
            await backend.reset()
            await backend.close()
