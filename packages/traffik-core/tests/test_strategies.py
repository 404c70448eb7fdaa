"""Strategy behaviour beyond the shared timelines: formulas, parameters and the traffik 1.2 contract."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from traffik import HTTPThrottle, InMemoryBackend, ManualClock, Rate
from traffik.backends.base import ThrottleBackend
from traffik.backends.sqlite import SQLiteBackend
from traffik.exceptions import ConfigurationError
from traffik.rates import MAX_LIMIT, MAX_PERIOD_MS
from traffik.registry import ThrottleRegistry
from traffik.strategies import (
    ADVANCED_STRATEGIES,
    BUILTIN_STRATEGIES,
    DEFAULT_STRATEGY,
    GCRA,
    CostBasedTokenBucket,
    FixedWindow,
    FixedWindowStrategy,
    LeakyBucket,
    LeakyBucketWithQueue,
    SlidingWindowCounter,
    SlidingWindowLog,
    TimeOfDay,
    TokenBucket,
    TokenBucketWithDebt,
)
from traffik.strategies.steps import items
from traffik.testing.conformance import TIMELINE_START

pytestmark = pytest.mark.anyio


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(TIMELINE_START)


@pytest.fixture
def backend(clock: ManualClock) -> InMemoryBackend:
    return InMemoryBackend(namespace="strategies", clock=clock)


def test_aliases_and_default() -> None:
    assert FixedWindowStrategy is FixedWindow
    assert isinstance(DEFAULT_STRATEGY, FixedWindow)
    from traffik.strategies import fixed_window, leaky_bucket, sliding_window, token_bucket

    assert token_bucket.TokenBucketStrategy is TokenBucket
    assert sliding_window.SlidingWindowLog and leaky_bucket.LeakyBucket and fixed_window.FixedWindow


@pytest.mark.parametrize(
    ("factory", "fragment"),
    [
        (lambda: TokenBucket(burst_size=0), "burst_size=0"),
        (lambda: TokenBucket(burst_size=True), "burst_size=True"),
        (lambda: TokenBucketWithDebt(max_debt=-1), "max_debt=-1"),
        (lambda: GCRA(burst_tolerance_ms=-5), "burst_tolerance_ms=-5"),
        (lambda: GCRA(burst_tolerance_ms=float("inf")), "burst_tolerance_ms=inf"),
        (lambda: GCRA(burst_tolerance_ms=MAX_PERIOD_MS + 1), "from 0 to 3153600000000"),
        (lambda: TokenBucket(burst_size=10**20), r"from 1 to 9007199254740991 \(MAX_LIMIT"),
        (lambda: TokenBucketWithDebt(max_debt=MAX_LIMIT + 1), "max_debt=9007199254740992"),
    ],
)
def test_bad_parameters_fail_at_construction(factory, fragment: str) -> None:
    with pytest.raises(ConfigurationError, match=fragment):
        factory()


async def test_one_second_window_is_one_second(
    backend: InMemoryBackend, clock: ManualClock
) -> None:
    rate = Rate.parse("2/s")
    strategy = FixedWindow()
    assert [await strategy("k", rate, backend) for _ in range(3)][:2] == [0, 0]
    clock.advance(1.0)
    assert await strategy("k", rate, backend) == 0


async def test_sub_second_window(backend: InMemoryBackend, clock: ManualClock) -> None:
    rate = Rate.parse("2/500ms")
    strategy = FixedWindow()
    assert [await strategy("k", rate, backend) for _ in range(3)] == [0, 0, 500]
    clock.advance(ms=500)
    assert await strategy("k", rate, backend) == 0


async def test_fixed_window_wait_is_time_left_in_window(
    backend: InMemoryBackend, clock: ManualClock
) -> None:
    rate = Rate.parse("1/min")
    assert await FixedWindow()("k", rate, backend) == 0
    clock.advance(25)
    assert await FixedWindow()("k", rate, backend) == 35_000


async def test_sliding_window_counter_wait_within_window(
    backend: InMemoryBackend, clock: ManualClock
) -> None:
    rate = Rate.parse("10/min")
    strategy = SlidingWindowCounter()
    for _ in range(10):
        assert await strategy("k", rate, backend) == 0
    clock.advance(60)  # next window: previous = 10, weight 1.0
    # weighted = 10 * (60-0)/60 = 10 -> one more needs 1 unit of decay = 6 s
    assert await strategy("k", rate, backend) == 6_000
    clock.advance(6)
    assert await strategy("k", rate, backend) == 0
    assert await strategy("k", rate, backend) > 0


async def test_sliding_window_log_wait_accounts_for_cost(
    backend: InMemoryBackend, clock: ManualClock
) -> None:
    rate = Rate.parse("4/min")
    strategy = SlidingWindowLog()
    assert await strategy("k", rate, backend, 1) == 0
    clock.advance(10)
    assert await strategy("k", rate, backend, 1) == 0
    clock.advance(10)
    assert await strategy("k", rate, backend, 2) == 0
    # full; cost 2 needs the first two entries (t=0 and t=10) to leave: at t=70, 50 s from now
    assert await strategy("k", rate, backend, 2) == 50_000


async def test_token_bucket_burst_and_refill(backend: InMemoryBackend, clock: ManualClock) -> None:
    rate = Rate.parse("60/min")
    strategy = TokenBucket(burst_size=5)
    assert [await strategy("k", rate, backend) for _ in range(6)] == [0, 0, 0, 0, 0, 1000]
    clock.advance(3)
    assert [await strategy("k", rate, backend) for _ in range(4)] == [0, 0, 0, 1000]


async def test_token_bucket_with_debt(backend: InMemoryBackend, clock: ManualClock) -> None:
    rate = Rate.parse("60/min")
    strategy = TokenBucketWithDebt(max_debt=2)
    waits = [await strategy("k", rate, backend) for _ in range(63)]
    assert waits[:62] == [0] * 62 and waits[62] == 1000
    clock.advance(1)  # one token repaid: the balance is back at the debt floor after this hit
    assert await strategy("k", rate, backend) == 0
    assert await strategy("k", rate, backend) == 1000


async def test_gcra_tolerance(backend: InMemoryBackend, clock: ManualClock) -> None:
    rate = Rate.parse("2/min")
    smooth = GCRA(burst_tolerance_ms=0)
    assert [await smooth("s", rate, backend) for _ in range(2)] == [0, 30_000]
    bursty = GCRA(burst_tolerance_ms=30_000)
    assert [await bursty("b", rate, backend) for _ in range(3)] == [0, 0, 30_000]
    stat = await smooth.get_stat("fresh", rate, backend)
    assert stat.hits_remaining == 1 and stat.wait_ms == 0


async def test_leaky_bucket_queue_drains_from_the_head(
    backend: InMemoryBackend, clock: ManualClock
) -> None:
    rate = Rate.parse("3/min")
    strategy = LeakyBucketWithQueue()
    for _ in range(3):
        assert await strategy("k", rate, backend) == 0
    clock.advance(30)  # 1.5 units drained
    assert await strategy("k", rate, backend) == 0
    assert await strategy("k", rate, backend) == 10_000


async def test_state_survives_text_round_trip(clock: ManualClock) -> None:
    """A state written as text (as a string-only backend stores it) decodes to the same decisions."""
    backend = InMemoryBackend(namespace="text", clock=clock)
    rate = Rate.parse("3/min")
    strategy = TokenBucket()
    await strategy("k", rate, backend)
    key = backend.get_key("k") + strategy.suffix
    raw = await backend.get(key)
    assert raw is not None and "," in raw
    await backend.set(key, raw, expire=60)
    assert [await strategy("k", rate, backend) for _ in range(3)] == [0, 0, 20_000]
    await backend.set(key, "garbage", expire=60)
    assert await strategy("k", rate, backend) == 0


async def test_user_strategy_on_generic_primitives(backend: InMemoryBackend) -> None:
    """A traffik 1.2 style strategy: a bare async function using get/set under a lock."""

    async def at_most_twice(key: str, rate: Rate, backend: ThrottleBackend, cost: int = 1) -> float:
        store_key = backend.get_key(key) + ":mine"
        async with backend.lock(store_key + ":lock", ttl=5, blocking_timeout=5):
            used = int(await backend.get(store_key) or 0)
            if used + cost > 2:
                return 1000.0
            await backend.set(store_key, str(used + cost), expire=60)
            return 0.0

    waits = await asyncio.gather(
        *(at_most_twice("k", Rate.parse("2/min"), backend) for _ in range(5))
    )
    assert sorted(waits) == [0, 0, 1000, 1000, 1000]


class _DictBackend(ThrottleBackend):
    """A third-party style backend implementing only the generic primitives."""

    def __init__(self, clock: ManualClock) -> None:
        super().__init__(namespace="dict", clock=clock)
        self.data: dict[str, str] = {}
        self._inner = InMemoryBackend(namespace="dict-locks", clock=clock)

    async def get(self, key: str) -> str | None:
        await asyncio.sleep(0)
        return self.data.get(key)

    async def set(self, key: str, value: str, expire: float | None = None) -> None:
        await asyncio.sleep(0)
        self.data[key] = value

    def get_lock(self, name: str, ttl: float | None = None, reentrant: bool = False):  # type: ignore[no-untyped-def]
        return self._inner.get_lock(name, ttl, reentrant)


async def test_builtin_strategies_run_on_a_generic_backend(clock: ManualClock) -> None:
    backend = _DictBackend(clock)
    rate = Rate.parse("100/hour")
    strategy = SlidingWindowLog()
    waits = await asyncio.gather(*(strategy("k", rate, backend) for _ in range(150)))
    assert sum(1 for w in waits if w == 0) == 100


# -- the largest rates: decided, or refused when the throttle is built ------------------------


@pytest.mark.parametrize("store", ["memory", "sqlite"])
async def test_a_period_too_long_for_any_store_fails_at_construction(tmp_path, store: str) -> None:
    backend = InMemoryBackend() if store == "memory" else SQLiteBackend(tmp_path / "t.db")
    for strategy in [FixedWindow(), GCRA()]:
        with pytest.raises(ConfigurationError) as info:
            HTTPThrottle(
                "huge",
                "10/999999999999d",
                backend=backend,
                strategy=strategy,
                registry=ThrottleRegistry(),
            )
        message = str(info.value)
        assert "'10/999999999999d'" in message and "86399999999913600000 ms" in message
        assert "longer than 36500 days (3153600000000 ms, MAX_PERIOD_MS)" in message


def test_a_rate_too_large_names_the_largest_limit_that_fits() -> None:
    with pytest.raises(ConfigurationError) as info:
        GCRA().check_scale(Rate.parse("10000/36500d"))
    message = str(info.value)
    assert "rate '10000/36500d' is too large to decide exactly" in message
    assert "past 2**53 (9,007,199,254,740,992)" in message
    assert "the limit can be at most 1,428" in message
    fits = Rate(limit=1_428, days=36_500)
    GCRA().check_scale(fits)
    with pytest.raises(ConfigurationError):
        GCRA().check_scale(Rate(limit=1_429, days=36_500))


def test_a_bucket_too_large_names_its_setting_not_the_rate() -> None:
    with pytest.raises(ConfigurationError) as info:
        HTTPThrottle(
            "bucket",
            "5/s",
            strategy=TokenBucket(burst_size=10**13),
            backend=InMemoryBackend(),
            registry=ThrottleRegistry(),
        )
    message = str(info.value)
    assert "cannot decide rate '5/s' exactly, even at a limit of 1" in message
    assert "lower burst_size=10000000000000" in message
    assert "at this period at most 4,503,599,627,370 fit" in message
    TokenBucket(burst_size=4_503_599_627_370).check_scale(Rate.parse("5/s"))


@pytest.mark.parametrize(
    ("strategy", "first", "second", "admitted"),
    [
        (TokenBucket(), "100/h", "1000/d", 998),  # a plan upgrade keeps the 2 spent
        (TokenBucket(), "10/s", "10/min", 8),
        (TokenBucketWithDebt(max_debt=2), "10/s", "10/min", 10),  # 2 spent: 8, then 2 of debt
        (GCRA(), "10/min", "10/s", 8),
        (LeakyBucket(), "10/min", "10/s", 8),
        (LeakyBucketWithQueue(), "10/min", "10/s", 8),
        (CostBasedTokenBucket(), "10/s", "10/min", 8),
    ],
    ids=repr,
)
async def test_update_rate_carries_what_the_client_spent(
    backend: InMemoryBackend, strategy: Any, first: str, second: str, admitted: int
) -> None:
    """Two hits, `update_rate`, then hits under the new rate (the in-memory hot path): the
    client keeps the 2 units it holds, whatever the old rate's scale."""
    from starlette.requests import Request

    request = Request({"type": "http", "method": "GET", "path": "/", "headers": []})
    throttle = HTTPThrottle(
        f"carry {strategy!r} {first}",
        rate=first,
        backend=backend,
        strategy=strategy,
        identifier=lambda connection: "client",
        registry=ThrottleRegistry(),
    )
    passed = []
    for _ in range(2):
        passed.append(await throttle.check(request))
        await throttle.hit(request)
    throttle.update_rate(second)
    for _ in range(admitted + 2):
        passed.append(await throttle.check(request))
        if passed[-1]:
            await throttle.hit(request)
    assert passed == [True] * (2 + admitted) + [False] * 2


_STATE_STRATEGIES = [
    cls() for cls in (*BUILTIN_STRATEGIES, *ADVANCED_STRATEGIES) if cls is not FixedWindow
] + [GCRA(burst_tolerance_ms=1500)]


@pytest.mark.parametrize("strategy", _STATE_STRATEGIES, ids=repr)
@pytest.mark.parametrize("ahead_ms", [30_000, 60_000, 65_000, 3_600_000])
def test_a_state_from_further_ahead_than_a_minute_is_no_state(strategy: Any, ahead_ms: int) -> None:
    """A budget spent by a clock up to a minute ahead (`AHEAD_MS`) is decided at its time:
    refused, for at least as long as the clock is behind. From further ahead (a clock gone
    wrong, or this one stepped back) it is no state: decided, and written, as a key never
    seen, so no client waits for the clock to catch up. (`GCRA` believes an arrival time up
    to its period, its tolerance and a minute ahead: a few seconds more than the others.)"""
    from traffik.strategies import base

    rate, now = Rate.parse("10/s"), 1_700_000_000_000
    assert base.AHEAD_MS == 60_000
    state = None
    for _ in range(strategy.capacity(rate) + 1):  # (a host ahead spends the budget)
        decision, written, _ = strategy.transition(state, now + ahead_ms, rate, 1)
        state = written if written is not None else state
    assert not decision.allowed
    decided = strategy.transition(state, now, rate, 1)
    if ahead_ms <= base.AHEAD_MS:
        assert not decided[0].allowed and decided[0].wait_ms >= ahead_ms, decided
    else:
        assert decided == strategy.transition(None, now, rate, 1)
        assert strategy.refund(state, now, rate, 1) == strategy.refund(None, now, rate, 1)


async def test_a_backend_s_own_counter_has_a_window_that_ends_too_late_cut() -> None:
    """A backend that keeps `ThrottleBackend`'s generic `increment_with_ttl` (an increment,
    then an expiry for a new key) has a `FixedWindow` window that ends more than a period and
    `AHEAD_MS` from now cut by the hit it refuses, as every built-in store cuts it: the wait
    it tells is then true."""

    class Generic(InMemoryBackend):
        increment_with_ttl = ThrottleBackend.increment_with_ttl
        evaluate_all = ThrottleBackend.evaluate_all

    clock = ManualClock(TIMELINE_START)
    backend, strategy, rate = Generic(clock=clock), FixedWindow(), Rate.parse("4/min")
    counter = backend.get_key("client") + strategy.suffix
    await backend.increment_with_ttl(counter, amount=4, ttl=3600)
    refused = await strategy.decide("client", rate, backend, 1)
    assert not refused.allowed and refused.wait_ms == 60_000
    assert await backend.ttl(counter) == 60_000
    clock.advance(60)
    assert (await strategy.decide("client", rate, backend, 1)).allowed
    await backend.expire(counter, 3600)  # (its generic step of several rates, refused)
    both = items(strategy, "client", [rate, Rate.parse("1000/d")], 1, backend)
    for _ in range(4):
        await backend.evaluate_all(both)
    refused = await backend.evaluate_all(both)
    assert not refused.allowed and refused.wait_ms == 60_000
    assert await backend.ttl(counter) == 60_000


_EVERY_STRATEGY = [
    cls() for cls in BUILTIN_STRATEGIES + ADVANCED_STRATEGIES if cls is not TimeOfDay
] + [TimeOfDay([(0, 24, 1)])]


@pytest.mark.parametrize("strategy", _EVERY_STRATEGY, ids=lambda s: type(s).__name__)
async def test_a_stat_s_reset_is_the_one_a_hit_of_cost_1_would_be_told(
    backend: InMemoryBackend, clock: ManualClock, strategy: Any
) -> None:
    """`get_stat(...).metadata["reset_ms"]` (`traffik.strategies.stat_metadata`): the reset
    of the decision a hit of cost 1 would get now (the budget whole again after it when
    admitted, whole again when refused), not when the key's state is gone; a fixed window's
    is the time its window has left (0: none open). Three of 10/min spent, then at several
    moments (the last ones refused) a stat and the hit it describes."""
    rate = Rate.parse("10/min")
    assert (await strategy.decide("k", rate, backend, 3)).allowed
    start = clock()
    for at in (0, 18, 30, 47.999, 61, *([61.5] * 12)):
        clock.set(start + at)
        stat = await strategy.get_stat("k", rate, backend)
        hit = await strategy.decide("k", rate, backend, 1)
        if isinstance(strategy, FixedWindow) and stat.metadata["current_count"] == 0:
            assert stat.metadata["reset_ms"] == 0, at
        else:
            assert stat.metadata["reset_ms"] == hit.reset_ms, (at, hit)
