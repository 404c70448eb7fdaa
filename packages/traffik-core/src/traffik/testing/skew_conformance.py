"""Hosts whose clocks disagree, on one shared store: the limit still holds, within the skew.

`SkewConformance` (a mixin of `traffik.testing.conformance.SharedStoreConformance`) puts two
instances of a backend on one store, under `ManualClock`s `D` ms apart, and alternates one
client's hits between them every `SKEW_STEP_MS` for `SKEW_SPAN_MS` at `SKEW_RATE`, for every
strategy. A state's time never goes backwards (docs/concepts/strategies.md, "When clocks
disagree"), so at most `limit * (T + D) / period + limit` hits are admitted, where one clock
admits `limit * T / period + limit`. Needs pytest and anyio.

The period is 40 s, not a second: a server's keys expire on its own clock, whatever the test
clocks say, so a state of a per-second rate could expire while a slow machine ran the
timeline, and the limit was admitted again. The skews stay under a minute, the most a state
may be ahead (`traffik.strategies.base.AHEAD_MS`).

Hosts further apart than that decide each from its own clock (a state from further ahead is
no state, `traffik.strategies.base.dated`): the limit no longer holds between them, but no
client is ever held for the skew (`FAR_SKEWS_MS`): every answer stays within the bounds of
one clock's (`traffik.testing.clock_step_conformance.check_answer`).
"""

from __future__ import annotations

import itertools
from typing import Callable

import pytest

from traffik.backends.base import ThrottleBackend
from traffik.clock import ManualClock
from traffik.rates import Rate
from traffik.strategies import ADVANCED_STRATEGIES, BUILTIN_STRATEGIES, FixedWindow, Strategy
from traffik.strategies.base import AHEAD_MS
from traffik.testing.clock_step_conformance import check_answer, most_admitted

__all__ = [
    "FAR_SKEWS_MS",
    "SKEWS_MS",
    "SKEW_RATE",
    "SKEW_SPAN_MS",
    "SKEW_STEP_MS",
    "SkewConformance",
    "most_admitted",
]

SKEWS_MS = (2000, 24_000, 50_000)
"""How far apart the two hosts' clocks are: less than a period, about one, more than one."""
FAR_SKEWS_MS = (120_000, 86_400_000)
"""Hosts further apart than `AHEAD_MS`: two minutes, a day."""
SKEW_RATE = Rate.parse("10/40s")
SKEW_SPAN_MS = 120_000
SKEW_STEP_MS = 800
_START = 1_700_000_056.5
"""Off every window boundary (16.5 s into a 40 s window), so neither host's first hit opens a
window, and no host writes a window's state so near its end that it expires (on the server's
clock) before the other host reads it."""

_namespaces = itertools.count()
_STRATEGIES = [cls() for cls in (*BUILTIN_STRATEGIES, *ADVANCED_STRATEGIES)]


@pytest.mark.anyio
class SkewConformance:
    """What a backend whose instances share one store must do when their clocks disagree."""

    clock_moves_expiry = True

    @pytest.mark.parametrize("ahead_first", [True, False], ids=["ahead-first", "behind-first"])
    @pytest.mark.parametrize("skew_ms", SKEWS_MS)
    @pytest.mark.parametrize("strategy", _STRATEGIES, ids=lambda s: type(s).__name__)
    async def test_hosts_whose_clocks_disagree_keep_the_limit(
        self,
        make_backend: Callable[..., ThrottleBackend],
        strategy: Strategy,
        skew_ms: int,
        ahead_first: bool,
    ) -> None:
        if isinstance(strategy, FixedWindow) and not self.clock_moves_expiry:
            pytest.skip("FixedWindow's window is a key TTL, which follows the server's clock here")
        ahead, behind = ManualClock(_START + skew_ms / 1000), ManualClock(_START)
        namespace = f"conformance-skew-{next(_namespaces)}"
        first = make_backend(namespace=namespace, clock=ahead)
        second = make_backend(namespace=namespace, clock=behind)
        hosts = (first, second) if ahead_first else (second, first)
        admitted = 0
        try:
            for step in range(SKEW_SPAN_MS // SKEW_STEP_MS):
                decision = await strategy.decide("client", SKEW_RATE, hosts[step % 2], 1)
                admitted += decision.allowed
                ahead.advance(ms=SKEW_STEP_MS)
                behind.advance(ms=SKEW_STEP_MS)
        finally:
            await first.reset()
            await first.close()
            await second.close()
        most = most_admitted(strategy, SKEW_RATE, SKEW_SPAN_MS, skew_ms)
        assert admitted <= most, (
            f"{strategy!r} admitted {admitted} hits in {SKEW_SPAN_MS} ms at {SKEW_RATE} on "
            f"two hosts {skew_ms} ms apart: at most {most} may be"
        )

    @pytest.mark.parametrize("skew_ms", FAR_SKEWS_MS)
    @pytest.mark.parametrize("strategy", _STRATEGIES, ids=lambda s: type(s).__name__)
    async def test_hosts_further_apart_never_hold_a_client_for_the_skew(
        self, make_backend: Callable[..., ThrottleBackend], strategy: Strategy, skew_ms: int
    ) -> None:
        if isinstance(strategy, FixedWindow) and not self.clock_moves_expiry:
            pytest.skip("FixedWindow's window is a key TTL, which follows the server's clock here")
        ahead, behind = ManualClock(_START + skew_ms / 1000), ManualClock(_START)
        namespace = f"conformance-skew-{next(_namespaces)}"
        hosts = (
            make_backend(namespace=namespace, clock=ahead),
            make_backend(namespace=namespace, clock=behind),
        )
        try:
            for step in range(SKEW_SPAN_MS // SKEW_STEP_MS):
                decision = await strategy.decide("client", SKEW_RATE, hosts[step % 2], 1)
                check_answer(strategy, SKEW_RATE, decision, AHEAD_MS)
                ahead.advance(ms=SKEW_STEP_MS)
                behind.advance(ms=SKEW_STEP_MS)
        finally:
            await hosts[0].reset()
            for host in hosts:
                await host.close()
