"""The workloads: one key with nothing rejected, many keys, a saturated key; and the throttled apps for them."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from benchmarks.apps import (
    dependency_app,
    noop,
    noop_429,
    plain_app,
    raise_429_app,
    round_trip_dependency,
)
from benchmarks.asgi import Client, Target, asgi_target, bare_request, clients
from traffik import HTTPThrottle
from traffik.backends.base import ThrottleBackend
from traffik.strategies import BUILTIN_STRATEGIES

__all__ = ["WORKLOADS", "Workload", "baseline_targets", "prefill", "throttled_targets"]

BASE, FLOOR, FLOOR_TRIP = "no limiter", "no-op dependency", "no-op dependency + round trip"
BASE_429, FLOOR_429, FLOOR_TRIP_429 = (
    "429, no limiter",
    "no-op dependency, 429",
    "no-op dependency + round trip, 429",
)
_LOGS = ("SlidingWindowLog", "LeakyBucketWithQueue")


@dataclass(frozen=True)
class Workload:
    """`rate` for every strategy but those in `rates`; `many_keys` spreads requests over
    `Settings.keys` clients; a `rejected` workload answers 429 to every timed request."""

    slug: str
    rate: str
    many_keys: bool = False
    rejected: bool = False
    rates: dict[str, str] = field(default_factory=dict)

    def label(self, keys: int) -> str:
        if self.many_keys:
            return f"{keys:,} keys"
        return "saturated" if self.rejected else "one key"

    def rate_for(self, strategy: str) -> str:
        return self.rates.get(strategy, self.rate)

    def peers(self, keys: int) -> list[Client]:
        return clients(keys if self.many_keys else 1)

    @property
    def status(self) -> int:
        return 429 if self.rejected else 200

    @property
    def baselines(self) -> tuple[str, str, str]:
        """Names of: the endpoint with no limiter, behind a no-op dependency, behind a no-op
        dependency making the store's raw round trip (all answering 429 when rejected)."""
        if self.rejected:
            return BASE_429, FLOOR_429, FLOOR_TRIP_429
        return BASE, FLOOR, FLOOR_TRIP


WORKLOADS = (
    # A limit nobody reaches. SlidingWindowLog and LeakyBucketWithQueue keep an entry per hit
    # still in the window (or not yet drained): a 10 ms period keeps that to the last few
    # instead of every hit of the run (measured: about 10 log entries, hits of one millisecond
    # adding up in one; 1 to 5 queued).
    Workload("one", "1000000/d", rates=dict.fromkeys(_LOGS, "10000/10ms")),
    # A day's budget of 10,000 per client: every key stays live for the whole run.
    Workload("many", "10000/d", many_keys=True),
    # One hit a day: after the warm-up every request is rejected.
    Workload("saturated", "1/d", rejected=True),
)


def baseline_targets(
    workload: Workload,
    peers: list[Client],
    round_trip: Optional[Callable[[], Awaitable[Any]]],
) -> list[Target]:
    """The endpoint with no limiter, behind a no-op dependency, and (given a store's raw
    `round_trip`) behind a no-op dependency making it; each answers 429 when rejected."""
    base, floor, floor_trip = workload.baselines
    if workload.rejected:
        targets = [
            asgi_target(base, raise_429_app(), peers),
            asgi_target(floor, dependency_app(noop_429), peers),
        ]
    else:
        targets = [
            asgi_target(base, plain_app(), peers),
            asgi_target(floor, dependency_app(noop), peers),
        ]
    if round_trip is not None:
        dependency = round_trip_dependency(round_trip, reject=workload.rejected)
        targets.append(asgi_target(floor_trip, dependency_app(dependency), peers))
    return targets


def throttled_targets(
    workload: Workload, backend: ThrottleBackend, peers: list[Client]
) -> dict[str, tuple[HTTPThrottle, Target]]:
    """One throttled app per built-in strategy, by strategy name."""
    found = {}
    for strategy in BUILTIN_STRATEGIES:
        name = strategy.__name__
        throttle = HTTPThrottle(
            f"bench-{workload.slug}-{name}",
            rate=workload.rate_for(name),
            backend=backend,
            strategy=strategy(),
        )
        found[name] = (throttle, asgi_target(name, dependency_app(throttle), peers))
    return found


async def prefill(throttles: list[HTTPThrottle], peers: list[Client], width: int) -> None:
    """One hit per client on each throttle, `width` at a time, so the store tracks every key."""
    requests = [bare_request(peer) for peer in peers]
    for throttle in throttles:
        for start in range(0, len(requests), width):
            await asyncio.gather(*(throttle.hit(r) for r in requests[start : start + width]))
