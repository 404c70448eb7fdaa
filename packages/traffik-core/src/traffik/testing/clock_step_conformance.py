"""Conformance for a clock that steps while a client is counted: backward, forward, far ahead.

Part of `BackendConformance`, so every backend runs it, for every strategy, on a test clock.
A wall clock steps (an NTP correction, a VM resumed or restored, a container moved to
another host); what a client is told stays sound (docs/concepts/strategies.md, "Clocks"):

- after a step back of `S` ms, a spent client waits at most `HOLD_PERIODS` periods plus the
  part of the step a state is believed (`AHEAD_MS`): a state from further ahead is not
  believed (no state; a `FixedWindow` window is cut to one period, its count kept), so a key
  is never wedged until the clock catches up;
- every wait told is true (the hit retried then is admitted), every wait, reset and
  remaining is within bounds (never negative, never the size of the step), and the client
  is admitted at most `capacity` more than one clock admits over the time that went by;
- a step forward is time gone by: once it passes every hold, the client is decided as one
  never seen.

Clocks start in 2023 and in the year 2200 (`FAR_START`: large clock values). Needs pytest
and anyio.
"""

from __future__ import annotations

import itertools
from typing import Callable

import pytest

from traffik.backends.base import ThrottleBackend
from traffik.clock import ManualClock
from traffik.decision import Decision
from traffik.rates import Rate
from traffik.strategies import (
    ADVANCED_STRATEGIES,
    BUILTIN_STRATEGIES,
    GCRA,
    FixedWindow,
    Strategy,
)
from traffik.strategies.base import AHEAD_MS
from traffik.strategies.markers import deciding
from traffik.strategies.steps import items

__all__ = [
    "FAR_START",
    "HOLD_PERIODS",
    "RESET_PERIODS",
    "STEP_RATE",
    "ClockStepConformance",
    "check_answer",
    "most_admitted",
]

STEP_RATE = Rate.parse("4/min")
"""A minute and more: a server's keys expire on its own clock, whatever the test clock says."""
_START = 1_700_000_030.0
"""Half a minute into a minute (22:13:50 UTC): off the windows' boundaries."""
FAR_START = 7_258_118_430.0
"""Half a minute into a minute of 1 January 2200: clock values far past today's (a memcached
window counter holds times up to 2262, `traffik.backends.memcached._window`)."""
_DAY = 86_400_000
HOLD_PERIODS = 2
"""The longest wait, in periods, on one clock (`SlidingWindowCounter`: the next window, then
the old count's decay; `CostBasedTokenBucket` at half its refill)."""
RESET_PERIODS = 4
"""The longest reset, in periods, on one clock (`AdaptiveThrottle` recovering its limit)."""
_TICK_MS = 5_000
"""The time between two admitted hits of a walk: faster than `STEP_RATE` refills."""
_WALK_MS = 4 * 60_000

_STEPPED = [
    *(cls() for cls in (*BUILTIN_STRATEGIES, *ADVANCED_STRATEGIES)),
    GCRA(burst_tolerance_ms=1500),
]
_IDS = [*(type(strategy).__name__ for strategy in _STEPPED[:-1]), "GCRA(1500)"]
_BACK = [
    pytest.param(_START, 20_000, id="20s"),  # believed: decided at the state's time
    pytest.param(_START, 600_000, id="10min"),
    pytest.param(_START, 400 * _DAY, id="400d"),
    pytest.param(FAR_START, 600_000, id="10min-in-2200"),
]
_FORWARD = [
    pytest.param(_START, 600_000, id="10min"),
    pytest.param(_START, 400 * _DAY, id="400d"),
    pytest.param(FAR_START, 400 * _DAY, id="400d-in-2200"),
]
_names = itertools.count()


def _capacity(strategy: Strategy, rate: Rate) -> int:
    """The most one period admits at `rate` to a key that names no tier or priority (as the
    strategy decides it: `deciding`)."""
    bound, (decided,) = deciding(strategy, "", (rate,))
    return max(rate.limit, int(bound.capacity(decided)))


def most_admitted(strategy: Strategy, rate: Rate, span_ms: int, skew_ms: int) -> int:
    """The most hits `strategy` may admit to one client in `span_ms` at `rate` when its hosts'
    clocks are `skew_ms` apart: `capacity * (span + skew) / period + capacity`, the capacity
    being the most one period admits (`rate.limit`, or more for a strategy that allows a
    larger burst)."""
    capacity = _capacity(strategy, rate)
    return capacity * (span_ms + skew_ms) // rate.expire + capacity


def check_answer(strategy: Strategy, rate: Rate, decision: Decision, believed_ms: int) -> None:
    """A decision's numbers are whole and within one clock's bounds, plus `believed_ms` (the
    part of a step back that a state is believed): never negative, never a step's size."""
    capacity = _capacity(strategy, rate)
    wait, reset, remaining = decision.wait_ms, decision.reset_ms, decision.remaining
    assert remaining is not None and 0 <= remaining <= 2 * capacity, decision  # (a rollover)
    assert reset == int(reset) and 0 <= reset <= RESET_PERIODS * rate.expire + believed_ms, (
        f"{strategy!r}: a reset of {reset} ms at {rate}: {decision}"
    )
    if decision.allowed:
        assert wait == 0, decision
    else:
        assert wait == int(wait) and 0 < wait <= HOLD_PERIODS * rate.expire + believed_ms, (
            f"{strategy!r}: told to wait {wait} ms at {rate}: {decision}"
        )


async def _spend(strategy: Strategy, backend: ThrottleBackend, key: str) -> int:
    """Hits on `key` until one is refused; how many were admitted."""
    for admitted in range(_capacity(strategy, STEP_RATE) + 1):
        if not (await strategy.decide(key, STEP_RATE, backend, 1)).allowed:
            return admitted
    raise AssertionError(f"{strategy!r} admitted more than its capacity at once")


async def _walk(
    strategy: Strategy, backend: ThrottleBackend, clock: ManualClock, believed_ms: int
) -> tuple[int, int]:
    """Hits `_TICK_MS` apart for `_WALK_MS`, each refused one retried after exactly its wait
    (then admitted); the hits admitted and the time that went by."""
    admitted = elapsed = 0
    told = None
    while elapsed < _WALK_MS:
        decision = await strategy.decide("client", STEP_RATE, backend, 1)
        check_answer(strategy, STEP_RATE, decision, believed_ms)
        assert told is None or decision.allowed, (
            f"{strategy!r}: refused after waiting the {told} ms it was told: {decision}"
        )
        if decision.allowed:
            admitted, move, told = admitted + 1, _TICK_MS, None
        else:
            move = told = int(decision.wait_ms)
        clock.advance(ms=move)
        elapsed += move
    return admitted, elapsed


@pytest.mark.anyio
class ClockStepConformance:
    """What a backend must do when the clock it decides on steps."""

    supports_clock = True
    clock_moves_expiry = True

    def _skip_unless_clocked(self, strategy: Strategy) -> None:
        if not self.supports_clock:
            pytest.skip("this backend takes its time from the server: a test clock cannot step")
        if isinstance(strategy, FixedWindow) and not self.clock_moves_expiry:
            pytest.skip("FixedWindow's window is a key TTL, which follows the server's clock here")

    @pytest.mark.parametrize(("start", "step_ms"), _BACK)
    @pytest.mark.parametrize("strategy", _STEPPED, ids=_IDS)
    async def test_a_clock_stepped_back_neither_wedges_a_key_nor_lies(
        self,
        make_backend: Callable[..., ThrottleBackend],
        strategy: Strategy,
        start: float,
        step_ms: int,
    ) -> None:
        """A client spends its budget, the clock steps back `step_ms`, and the client keeps
        coming: it is held at most the part of the step that is believed (`AHEAD_MS`) plus
        the strategy's own hold, every answer is true and within bounds, and it is admitted
        at most one budget more than a clock that never stepped admits."""
        self._skip_unless_clocked(strategy)
        clock = ManualClock(start)
        backend = make_backend(namespace=f"conformance-steps-{next(_names)}", clock=clock)
        try:
            spent = await _spend(strategy, backend, "client")
            clock.set(start - step_ms / 1000)
            admitted, elapsed = await _walk(strategy, backend, clock, min(step_ms, AHEAD_MS))
        finally:
            await backend.reset()
            await backend.close()
        most = most_admitted(strategy, STEP_RATE, elapsed + STEP_RATE.expire, 0)
        assert spent + admitted <= most, (
            f"{strategy!r} admitted {spent} then {admitted} in {elapsed} ms after a step back "
            f"of {step_ms} ms at {STEP_RATE}: at most {most} may be"
        )

    @pytest.mark.parametrize(("start", "step_ms"), _FORWARD)
    @pytest.mark.parametrize("strategy", _STEPPED, ids=_IDS)
    async def test_a_clock_stepped_forward_is_time_gone_by(
        self,
        make_backend: Callable[..., ThrottleBackend],
        strategy: Strategy,
        start: float,
        step_ms: int,
    ) -> None:
        """A client spends its budget, then the clock jumps further than any hold (a VM
        resumed after a pause): the client is decided as one never seen, hit for hit."""
        self._skip_unless_clocked(strategy)
        clock = ManualClock(start)
        backend = make_backend(namespace=f"conformance-steps-{next(_names)}", clock=clock)
        try:
            await _spend(strategy, backend, "client")
            clock.advance(ms=step_ms)
            for _ in range(_capacity(strategy, STEP_RATE) + 1):
                stepped = await strategy.decide("client", STEP_RATE, backend, 1)
                fresh = await strategy.decide("never-seen", STEP_RATE, backend, 1)
                assert stepped == fresh, f"{strategy!r} after {step_ms} ms: {stepped}, not {fresh}"
        finally:
            await backend.reset()
            await backend.close()

    @pytest.mark.parametrize("several", [False, True], ids=["alone", "with-another-rate"])
    async def test_a_window_that_ends_too_late_is_cut_to_one_period(
        self, make_backend: Callable[..., ThrottleBackend], several: bool
    ) -> None:
        """A `FixedWindow` counter that outlives its period by more than `AHEAD_MS` (opened
        before the store's clock stepped back, or under a longer period) keeps its count in a
        window cut to one period from now: a refused hit is told one period at most, and the
        counter lives no longer, alone or decided with another rate."""
        backend = make_backend(namespace=f"conformance-steps-{next(_names)}")
        strategy, rate = FixedWindow(), STEP_RATE
        counter = backend.get_key("client") + strategy.suffix
        try:
            await backend.increment_with_ttl(counter, amount=rate.limit, ttl=3600)
            if several:
                rates = [rate, Rate.parse("1000/d")]
                decision = await backend.evaluate_all(items(strategy, "client", rates, 1, backend))
            else:
                decision = await strategy.decide("client", rate, backend, 1)
            assert not decision.allowed and 0 < decision.wait_ms <= rate.expire, decision
            left = await backend.ttl(counter)
            assert left is not None and 0 < left <= rate.expire, left
            stat = await strategy.get_stat("client", rate, backend)
            assert stat.hits_remaining == 0 and 0 < stat.wait_ms <= rate.expire, stat
        finally:
            await backend.reset()
            await backend.close()
