"""A client that spent its budget, then a rate change: every wait it is told is true.

Through a throttle's own path on every store (in memory the in-place steps, on Redis the
coalescing `EVALSHA`, on SQLite the row's rewrite, on Memcached `cas`), after
`throttle.update_rate` and after a deploy (a second version of the throttle, with the new
rate, on the same store): the client retries exactly when told and is admitted then, the
first time (docs/concepts/strategies.md, "When the rate changes"). Before, a refused hit
wrote nothing, so each retry converted the old state again, which had refilled at the old
rate: told 12 s after `5/h` became `5/min`, 60 times in a row.
"""

from __future__ import annotations

from typing import Any, Callable

import pytest
from starlette.requests import Request

from traffik import HTTPThrottle, ManualClock
from traffik.backends.base import ThrottleBackend
from traffik.rates import parse_rates
from traffik.strategies import (
    GCRA,
    CostBasedTokenBucket,
    LeakyBucket,
    LeakyBucketWithQueue,
    SlidingWindowCounter,
    TokenBucket,
    TokenBucketWithDebt,
)

pytestmark = pytest.mark.anyio

CONVERTING = [
    TokenBucket,
    TokenBucketWithDebt,
    CostBasedTokenBucket,
    GCRA,
    LeakyBucket,
    LeakyBucketWithQueue,
    SlidingWindowCounter,
]
"""The strategies whose state records its rate and converts (the advanced window strategies
are held to it by `traffik.testing.rate_change_conformance`)."""

CHANGES = [
    # (rates spent, rates then, the one wait told: ms)
    ("5/h", "5/min", {"": 12_000, "SlidingWindowCounter": 72_000}),
    ("5/d", "5/min", {"": 12_000, "SlidingWindowCounter": 72_000}),
    ("5/min", "3/min", {"": 36_000, "SlidingWindowCounter": 96_000}),  # until 2 of 5 held
    ("5/min", "5/h", {"": 720_000, "SlidingWindowCounter": 4_320_000}),
    ("5/h;50/d", "5/min;50/d", {"": 12_000, "SlidingWindowCounter": 72_000}),
]


class _Refused(Exception):
    def __init__(self, wait_ms: float) -> None:
        self.wait_ms = wait_ms


async def _refuse(connection: Any, wait_ms: float, throttle: Any, context: Any) -> None:
    raise _Refused(wait_ms)


def _request() -> Request:
    client = ("203.0.113.7", 1)
    return Request({"type": "http", "method": "GET", "path": "/x", "headers": [], "client": client})


@pytest.mark.parametrize("how", ["update_rate", "deploy"])
@pytest.mark.parametrize("change", CHANGES, ids=lambda c: f"{c[0]}->{c[1]}")
@pytest.mark.parametrize("strategy", CONVERTING, ids=lambda cls: cls.__name__)
async def test_a_client_retrying_when_told_is_admitted_then(
    make_backend: Callable[..., ThrottleBackend], strategy: type, change: Any, how: str
) -> None:
    first, second, waits = change
    clock = ManualClock(1_800_000_000)  # (on an hour: `5/min` to `5/h` waits a whole hour)
    backend = make_backend(clock=clock)
    # Memcached counts each period's windows apart: under a new period, a new window.
    kind = make_backend.kind  # type: ignore[attr-defined]
    periods = [parse_rates(rates)[0].expire for rates in (first, second)]
    apart = kind == "memcached" and strategy is SlidingWindowCounter and periods[0] != periods[1]
    try:
        before = HTTPThrottle(
            "api", rate=first, strategy=strategy(), backend=backend, handle_throttled=_refuse
        )
        for _ in range(5):
            await before.hit(_request())
        if how == "update_rate":
            before.update_rate(second)
            after = before
        else:
            after = HTTPThrottle(
                "api", rate=second, strategy=strategy(), backend=backend, handle_throttled=_refuse
            )
        told: list[float] = []
        while len(told) < 3:
            try:
                await after.hit(_request())
                break
            except _Refused as refused:
                told.append(refused.wait_ms)
                clock.advance(ms=refused.wait_ms)
        if apart:
            assert told == [], told
        else:
            assert told == [waits.get(strategy.__name__, waits[""])], told
    finally:
        await backend.reset()
        await backend.close()
