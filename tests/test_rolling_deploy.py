"""A rolling deploy: two versions of an app share one store, each with its own rate for the
same throttle, and a client's hits alternate between them.

Alternating may never admit more over a span than the more generous of the two rates alone
would, and nothing may crash. On the in-memory and SQLite backends the timeline runs on a
`ManualClock`; Redis and Memcached take long periods, since their key expiry follows a real
clock.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Callable, Union

import pytest

from traffik import InMemoryBackend, ManualClock
from traffik.backends.base import ThrottleBackend
from traffik.rates import Rate
from traffik.strategies import (
    ADVANCED_STRATEGIES,
    BUILTIN_STRATEGIES,
    FixedWindow,
    PriorityQueue,
    SlidingWindowCounter,
    SlidingWindowLog,
    Strategy,
    TimeOfDay,
)

pytestmark = pytest.mark.anyio

_START = 1_700_000_040.0  # on a minute boundary
_names = itertools.count()

STRATEGIES = [
    TimeOfDay([(0, 24, 1)]) if cls is TimeOfDay else cls()  # (1x all day, as the rates say)
    for cls in BUILTIN_STRATEGIES + ADVANCED_STRATEGIES
]
PAIRS = [
    # (rate of one version, rate of the other, ms between hits, hits)
    ("10/s", "10/min", 20, 9000),
    ("10/s", "10/min", 120, 1500),
    ("10/min", "100/min", 1200, 150),
    ("4/10s", "40/100s", 200, 1500),
]
_LOGS = (FixedWindow, SlidingWindowLog, PriorityQueue)
"""Logs keep only the entries of the writer's period, and a fixed window's length is the
key's TTL, set by the version that opened it: between two periods of the same average rate,
alternating versions are held to the larger limit per the shorter period (docs/deployment.md),
not to either alone."""


def _ids(value: Any) -> str:
    return type(value).__name__ if isinstance(value, Strategy) else str(value)


async def _admitted(
    make: Callable[..., ThrottleBackend],
    strategy: Union[Strategy, list[Strategy]],
    rates: list[Rate],
    step_ms: int,
    hits: int,
) -> int:
    """Hits admitted when the `i`th goes to the version with `rates[i % len(rates)]` (and,
    given a list of strategies, the strategy `i % len(strategies)`)."""
    strategies = strategy if isinstance(strategy, list) else [strategy]
    clock = ManualClock(_START)
    backend = make(namespace=f"deploy-{next(_names)}", clock=clock)
    admitted = 0
    try:
        for i in range(hits):
            chosen = strategies[i % len(strategies)]
            decision = await chosen.decide("client", rates[i % len(rates)], backend, 1)
            admitted += decision.allowed
            clock.advance(ms=step_ms)
    finally:
        await backend.reset()
        await backend.close()
    return admitted


@pytest.fixture(params=["memory", "sqlite-file"])
def make_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., ThrottleBackend]:
    if request.param == "memory":
        return lambda **options: InMemoryBackend(**options)
    from traffik.backends.sqlite import SQLiteBackend

    url = f"sqlite:///{tmp_path / 'deploy.db'}"
    return lambda **options: SQLiteBackend(url, **options)


@pytest.mark.parametrize("pair", PAIRS, ids=lambda p: f"{p[0]}|{p[1]}@{p[2]}ms")
@pytest.mark.parametrize("strategy", STRATEGIES, ids=_ids)
async def test_alternating_versions_admit_no_more_than_the_more_generous_alone(
    make_backend: Callable[..., ThrottleBackend], strategy: Strategy, pair: tuple[Any, ...]
) -> None:
    first, second, step_ms, hits = pair
    a, b = Rate.parse(first), Rate.parse(second)
    mixed = await _admitted(make_backend, strategy, [a, b], step_ms, hits)
    if isinstance(strategy, _LOGS) and (first, second) == ("4/10s", "40/100s"):
        most = max(a.limit, b.limit)
        assert mixed <= most * (step_ms * hits // min(a.expire, b.expire) + 1), (strategy, mixed)
        return
    alone = max([await _admitted(make_backend, strategy, [rate], step_ms, hits) for rate in (a, b)])
    assert mixed <= alone, (strategy, first, second, mixed, alone)


LONG = ["5/h", "10/d"]  # long periods: a server's real clock moves nothing in a test


@pytest.mark.parametrize("strategy", STRATEGIES, ids=_ids)
@pytest.mark.parametrize("server", ["redis", "memcached"])
async def test_alternating_versions_on_a_server(
    request: pytest.FixtureRequest, server: str, strategy: Strategy
) -> None:
    """A burst alternating between `5/h` and `10/d`: at most 10 admitted (the more generous
    alone; on Memcached, whose SlidingWindowCounter counts each period apart, both limits),
    and no error."""
    if server == "redis":
        from traffik.backends.redis import RedisBackend

        url = request.getfixturevalue("redis_url")
        backend: ThrottleBackend = RedisBackend(url, namespace=f"deploy-{next(_names)}")
    else:
        from traffik.backends.memcached import MemcachedBackend

        url = request.getfixturevalue("memcached_url")
        backend = MemcachedBackend(url, namespace=f"deploy-{next(_names)}")
    apart = server == "memcached" and isinstance(strategy, SlidingWindowCounter)
    rates = [Rate.parse(text) for text in LONG]
    try:
        admitted = 0
        for i in range(40):
            decision = await strategy.decide("client", rates[i % 2], backend, 1)
            admitted += decision.allowed
        assert 1 <= admitted <= (15 if apart else 10), (strategy, admitted)
    finally:
        await backend.reset()
        await backend.close()


@pytest.mark.parametrize("strategy", STRATEGIES, ids=_ids)
async def test_a_restart_keeps_the_counts_on_a_sqlite_file(
    tmp_path: Path, strategy: Strategy
) -> None:
    """The same app restarted mid-window on a SQLite file: the client's budget goes on where
    it was, for one rate and for each of several."""
    from traffik.backends.sqlite import SQLiteBackend
    from traffik.strategies.steps import items

    rates = [Rate.parse("10/min"), Rate.parse("15/h")]

    async def run(name: str, restarts: int) -> list[bool]:
        url = f"sqlite:///{tmp_path / name}"
        clock = ManualClock(_START)
        answers: list[bool] = []
        backend = SQLiteBackend(url, namespace="restart", clock=clock)
        for i in range(18):
            if restarts and i % 6 == 0:
                await backend.close()
                backend = SQLiteBackend(url, namespace="restart", clock=clock)
            answers.append((await strategy.decide("one", rates[0], backend, 1)).allowed)
            step = items(strategy, "several", rates, 1, backend)
            answers.append((await backend.evaluate_all(step)).allowed)
            clock.advance(ms=100)
        await backend.close()
        return answers

    kept = await run("restarted.db", restarts=2)
    assert kept == await run("running.db", restarts=0)
    assert 10 <= sum(kept) < 36  # budgets ran out: the restarts gave nothing back


SWAPS = [
    ("TokenBucket", "GCRA"),
    ("FixedWindow", "SlidingWindowCounter"),
    ("TokenBucket", "TokenBucketWithDebt"),
    ("LeakyBucket", "LeakyBucketWithQueue"),
]


@pytest.mark.parametrize("swap", SWAPS, ids=lambda s: f"{s[0]}->{s[1]}")
async def test_another_strategy_starts_afresh_under_its_own_key(
    make_backend: Callable[..., ThrottleBackend], swap: tuple[str, str]
) -> None:
    """A strategy swapped between deploys: each keeps its state under its own suffix, so the
    new one starts with its whole budget; alternating the two never gives more than both
    budgets, and nothing fails."""
    import traffik.strategies as strategies

    old, new = (getattr(strategies, name)() for name in swap)
    assert old.suffix != new.suffix
    rate = Rate.parse("5/h")
    before = await _admitted(make_backend, old, [rate], 10, 10)
    clock = ManualClock(_START)
    backend = make_backend(namespace=f"swap-{next(_names)}", clock=clock)
    try:
        first = [(await old.decide("c", rate, backend, 1)).allowed for _ in range(10)]
        then = [(await new.decide("c", rate, backend, 1)).allowed for _ in range(10)]
        assert sum(first) == before == 5 and sum(then) == 5  # afresh, once
        both = [
            (await (old if i % 2 else new).decide("d", rate, backend, 1)).allowed for i in range(40)
        ]
        assert sum(both) == 10  # at most both budgets while both versions answer
    finally:
        await backend.reset()
        await backend.close()


OPTIONS = [
    # two versions of one strategy with the same rate and other options (the same suffix)
    ("TokenBucket", {"burst_size": 3}, {"burst_size": 30}),
    ("TokenBucketWithDebt", {"max_debt": 0}, {"max_debt": 20}),
    ("GCRA", {"burst_tolerance_ms": 0}, {}),
    ("CostBasedTokenBucket", {"burst_size": 3}, {"burst_size": 30, "min_refill_rate": 0.9}),
    ("QuotaWithRollover", {"rollover_percentage": 0}, {"rollover_percentage": 1.0}),
    ("AdaptiveThrottle", {"load_threshold": 0.5}, {"load_threshold": 0.99}),
    ("PriorityQueue", {"max_queue_size": 5}, {"max_queue_size": 1000}),
]


@pytest.mark.parametrize("option", OPTIONS, ids=lambda o: o[0])
@pytest.mark.parametrize("step_ms", [100, 1500])
async def test_alternating_options_admit_no_more_than_the_more_generous_alone(
    make_backend: Callable[..., ThrottleBackend], option: tuple[Any, ...], step_ms: int
) -> None:
    """Options a state does not record (a bucket's size, a debt, a tolerance, a rollover, a
    threshold, a queue's size) differ between the two versions: each decides on the same
    state within its own bounds, so alternating admits no more than the more generous
    version alone, and nothing fails."""
    import traffik.strategies as strategies

    name, one, other = option
    versions = [getattr(strategies, name)(**one), getattr(strategies, name)(**other)]
    rate = [Rate.parse("10/min")]
    mixed = await _admitted(make_backend, versions, rate, step_ms, 600)
    alone = max(
        [await _admitted(make_backend, version, rate, step_ms, 600) for version in versions]
    )
    assert 0 < mixed <= alone, (name, mixed, alone)
