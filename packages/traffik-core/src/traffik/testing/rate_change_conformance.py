"""Conformance for a client's state read under another rate than it was written under.

Part of `BackendConformance`, so every backend runs it. A throttle's rate may change for a
key that already has state (`throttle.update_rate`, a rate callable, a deploy). What the
client still holds then (units not yet refilled, drained or leaked, by the old rate, rounded
up) carries over to the new rate in units, as a fixed window's count and a log's entries do;
a window counted in periods (`SlidingWindowCounter`) starts a new window when the period
changes.
"""

from __future__ import annotations

import itertools
from typing import Callable

import pytest

from traffik.backends.base import ThrottleBackend
from traffik.clock import ManualClock
from traffik.rates import Rate
from traffik.strategies import BUILTIN_STRATEGIES, FixedWindow, Strategy

__all__ = ["RATE_CHANGES", "RateChangeConformance"]

_START = 1_700_000_040.0  # on a minute boundary
_names = itertools.count()

RATE_CHANGES = [
    # (first rate, hits under it, ms later, second rate, hits under it)
    ("10/s", 2, 0, "10/min", 10),  # slower: 2 held, 8 left
    ("10/min", 2, 0, "10/s", 10),  # faster: 2 held, 8 left
    ("10/s", 10, 250, "10/min", 10),  # 7.5 units still held, rounded up to 8: 2 left
    ("4/min", 4, 0, "40/h", 40),  # a plan upgrade: 4 held, 36 left
]
"""The rate changes of `test_rate_change_carries_what_the_client_holds`."""

_EXPECTED = {
    # hits admitted under the second rate, per change of RATE_CHANGES
    "FixedWindow": [8, 8, 0, 36],  # the count carries, in the window it opened
    "SlidingWindowCounter": [10, 10, 10, 40],  # a new period: a new window
    "SlidingWindowLog": [8, 8, 0, 36],  # the entries carry
    "TokenBucket": [8, 8, 2, 36],
    "TokenBucketWithDebt": [8, 8, 2, 36],
    "LeakyBucket": [8, 8, 2, 36],
    "LeakyBucketWithQueue": [8, 8, 2, 36],
    "GCRA": [8, 8, 2, 36],
}


@pytest.mark.anyio
class RateChangeConformance:
    """A key's state read under another rate; mixed into `BackendConformance`."""

    supports_clock: bool
    clock_moves_expiry: bool

    @pytest.mark.parametrize(
        "strategy",
        [cls() for cls in BUILTIN_STRATEGIES],
        ids=[c.__name__ for c in BUILTIN_STRATEGIES],
    )
    async def test_rate_change_carries_what_the_client_holds(
        self, make_backend: Callable[..., ThrottleBackend], strategy: Strategy
    ) -> None:
        """Hits under one rate, then the same key under another (what a throttle does after
        `update_rate`): the hits admitted under the second rate are its limit minus the units
        the client still held (rounded up), never more, never fewer."""
        if not self.supports_clock:
            pytest.skip("this backend takes its time from the server")
        if isinstance(strategy, FixedWindow) and not self.clock_moves_expiry:
            pytest.skip("FixedWindow's window is a key TTL, which follows the server's clock here")
        admitted = []
        for first, before, later, second, after in RATE_CHANGES:
            clock = ManualClock(_START)
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
        assert admitted == _EXPECTED[type(strategy).__name__]
