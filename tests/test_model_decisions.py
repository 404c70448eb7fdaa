"""Randomised, model-based checks of decisions: every backend against `InMemoryBackend`, and
`InMemoryBackend` against small reference models written here from the docs.

The docs (docs/concepts/strategies.md, docs/multiple-limits.md, docs/guides/costs.md) say
every built-in strategy is exact to the millisecond and decides the same on every backend,
several rates as one all-or-nothing step, a refused hit costing nothing (except that a
fixed-window counter deciding alone counts it), a cost above what a rate can admit refused with
a wait of one full period. Hypothesis drives random sequences of hits (costs 0, 1, >1, above
the limit), clock moves (sub-millisecond, exactly a wait, exactly to a window boundary),
refunds, stats and resets, over several keys and one to three rates.

- `TestReferenceModels`: the reference models (exact fractions, no scaling) against
  `InMemoryBackend`, for the strategies whose semantics the docs define precisely.
- `TestDifferential`: SQLite (file and :memory:), Redis and Memcached against
  `InMemoryBackend`, on the same `ManualClock` timeline. Redis keys expire on the server's
  clock, so a fake clock cannot move a `FixedWindow` window there; that pair runs on real
  time with windows of an hour instead (`TestRealTimeDifferential`).
- `TestConcurrency`: N concurrent hits of random costs on one key admit exactly what the hits
  would admit one after another in some order (the store serialises them).
- The deterministic examples at the end are the minimised discrepancies.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import os
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Optional

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from traffik import InMemoryBackend, ManualClock
from traffik.backends.base import ThrottleBackend
from traffik.decision import Decision
from traffik.rates import Rate
from traffik.strategies import (
    GCRA,
    FixedWindow,
    LeakyBucket,
    LeakyBucketWithQueue,
    SlidingWindowCounter,
    SlidingWindowLog,
    Strategy,
    TokenBucket,
    TokenBucketWithDebt,
)
from traffik.strategies.steps import items as step_items

START = 1_700_000_040.0  # on a minute boundary
_namespaces = itertools.count()

EXAMPLES = int(os.environ.get("TRAFFIK_MODEL_EXAMPLES", "40"))
"""Examples per hypothesis test; raise it (`TRAFFIK_MODEL_EXAMPLES=500`) to search longer."""

SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
    database=None,
)


def _fresh(prefix: str) -> str:
    return f"model-{prefix}-{next(_namespaces)}"


# -- operations ---------------------------------------------------------------------------

KEYS = ("a", "b")


def _rates() -> st.SearchStrategy[list[Rate]]:
    """One to three distinct rates, small limits, periods from 1 ms (sub-window noise) to 20 s."""
    rate = st.builds(
        lambda limit, ms: Rate(limit=limit, milliseconds=ms),
        st.integers(1, 6),
        st.sampled_from([7, 100, 1000, 1500, 2500, 10_000, 20_000]),
    )
    return st.lists(rate, min_size=1, max_size=3, unique_by=lambda r: (r.limit, r.expire))


def _ops() -> st.SearchStrategy[list[tuple[Any, ...]]]:
    key = st.sampled_from(KEYS)
    cost = st.one_of(st.just(1), st.integers(0, 3), st.integers(4, 9))
    op = st.one_of(
        st.tuples(st.just("hit"), key, cost),
        st.tuples(st.just("hit"), key, cost),
        st.tuples(st.just("hit"), key, cost),
        st.tuples(
            st.just("advance"),
            st.one_of(
                st.sampled_from([0.0, 0.4, 0.6, 1.0, 999.0, 1000.0]),
                st.integers(1, 25_000).map(float),
            ),
        ),
        st.tuples(st.just("wait"), st.sampled_from([-1, 0])),  # the last refusal's wait (-1 ms)
        st.tuples(st.just("boundary"), st.sampled_from([-1, 0])),  # to a period multiple (-1 ms)
        st.tuples(st.just("refund"), key, st.integers(1, 4)),
        st.tuples(st.just("stat"), key),
        st.tuples(st.just("reset"), key),
    )
    return st.lists(op, min_size=1, max_size=30)


def _decision(d: Decision) -> tuple[Any, ...]:
    return (bool(d.allowed), float(d.wait_ms), d.remaining, float(d.reset_ms), d.limit)


class Driver:
    """Runs one operation sequence on one backend and records every answer."""

    def __init__(
        self, backend: ThrottleBackend, clock: ManualClock, strategy: Any, rates: list[Rate]
    ) -> None:
        self.backend, self.clock, self.strategy, self.rates = backend, clock, strategy, rates
        self.last_wait = 0.0

    def _items(self, key: str, cost: int) -> list[Any]:
        return step_items(self.strategy, key, self.rates, cost, self.backend)

    async def run(self, ops: Sequence[tuple[Any, ...]]) -> list[Any]:
        out: list[Any] = []
        for op in ops:
            out.append(await self.step(op))
        return out

    async def step(self, op: tuple[Any, ...]) -> Any:
        kind = op[0]
        backend, rates = self.backend, self.rates
        if kind == "hit":
            _, key, cost = op
            if len(rates) == 1:
                decision = await self.strategy.decide(key, rates[0], backend, cost)
            else:
                decision = await backend.evaluate_all(self._items(key, cost))
            if not decision.allowed:
                self.last_wait = decision.wait_ms
            return ("hit", key, cost, _decision(decision))
        if kind == "advance":
            self.clock.advance(ms=op[1])
            return ("advance", op[1])
        if kind == "wait":
            step = max(self.last_wait + op[1], 0)
            self.clock.advance(ms=step)
            return ("wait", step)
        if kind == "boundary":
            period = rates[0].expire
            now = self.clock.ms()
            step = max(period - now % period + op[1], 0)
            self.clock.advance(ms=step)
            return ("boundary", step)
        if kind == "refund":
            _, key, cost = op
            await backend.refund_all(self._items(key, cost))
            return ("refund", key, cost)
        if kind == "stat":
            key = op[1]
            if len(rates) == 1:
                stat = await self.strategy.get_stat(key, rates[0], backend)
                return ("stat", key, stat.hits_remaining, float(stat.wait_ms))
            decision = await backend.evaluate_all(self._items(key, 1), commit=False)
            return ("stat", key, _decision(decision))
        if kind == "reset":
            key = op[1]
            for item in self._items(key, 1):
                await backend.delete(item.key)
            return ("reset", key)
        raise AssertionError(op)


STRATEGIES: list[Strategy] = [
    FixedWindow(),
    SlidingWindowCounter(),
    SlidingWindowLog(),
    TokenBucket(),
    TokenBucket(burst_size=3),
    TokenBucketWithDebt(max_debt=2),
    LeakyBucket(),
    LeakyBucketWithQueue(),
    GCRA(),
    GCRA(burst_tolerance_ms=1500),
]
STRATEGY_IDS = [repr(s) for s in STRATEGIES]


# -- reference models ---------------------------------------------------------------------


def ceil(x: Fraction) -> int:
    return math.ceil(x)


def floor(x: Fraction) -> int:
    return math.floor(x)


class Model:
    """One strategy's state per key, in exact fractions; `decide(now, cost, commit)` answers
    `(allowed, wait, remaining, reset, limit)` and the new state, `refund` gives back."""

    def __init__(self, rate: Rate) -> None:
        self.rate = rate
        self.limit, self.period = rate.limit, rate.expire

    def capacity(self) -> int:
        return self.limit

    def never(self) -> tuple[Any, ...]:
        return (False, float(self.period), 0, float(self.period), self.limit)


class FixedWindowModel(Model):
    """The window opens at a hit with no live window and lasts one period; every hit counts,
    refused ones too (docs/concepts/strategies.md), when it is the only rate (a refused hit of
    several rates counts on none, docs/multiple-limits.md); a cost above the limit counts
    nothing (docs/guides/costs.md)."""

    counter = True

    def __init__(self, rate: Rate) -> None:
        super().__init__(rate)
        self.state: dict[str, list[int]] = {}  # key -> [count, end]

    def _live(self, key: str, now: int) -> Optional[list[int]]:
        found = self.state.get(key)
        if found is not None and now >= found[1]:
            del self.state[key]
            return None
        return found

    def peek(self, key: str, now: int, cost: int, several: bool = False) -> tuple[Any, ...]:
        live = self._live(key, now)
        count, left = (live[0], live[1] - now) if live else (0, self.period)
        if several and not count:
            # Tolerance: deciding several rates, a window whose count is 0 (refunded, or
            # opened by a cost of 0) is answered as a new one, a full period (the wait
            # docs/guides/costs.md gives a cost above the limit); only `reset` could tell.
            left = self.period
        if count + cost > self.limit:
            return (False, float(left), 0, float(left), self.limit)
        return (True, 0.0, self.limit - count - cost, float(left), self.limit)

    def charge(self, key: str, now: int, cost: int) -> None:
        live = self._live(key, now)
        if live is None:
            live = self.state[key] = [0, now + self.period]
        live[0] += cost

    def refund(self, key: str, now: int, cost: int) -> None:
        live = self._live(key, now)
        if live is not None:
            live[0] = max(live[0] - cost, 0)

    def stat(self, key: str, now: int) -> tuple[Any, ...]:
        live = self._live(key, now)
        count, left = (live[0], live[1] - now) if live else (0, 0)
        return (max(self.limit - count, 0), float(left if count >= self.limit else 0))

    def reset(self, key: str) -> None:
        self.state.pop(key, None)


class StateModel(Model):
    counter = False

    def __init__(self, rate: Rate) -> None:
        super().__init__(rate)
        self.state: dict[str, Any] = {}

    def peek(self, key: str, now: int, cost: int, several: bool = False) -> tuple[Any, ...]:
        return self.decide(key, now, cost, commit=False)

    def charge(self, key: str, now: int, cost: int) -> None:
        assert self.decide(key, now, cost, commit=True)[0]

    def decide(self, key: str, now: int, cost: int, commit: bool) -> tuple[Any, ...]:
        raise NotImplementedError

    def stat(self, key: str, now: int) -> tuple[Any, ...]:
        allowed, wait, remaining, _, _ = self.decide(key, now, 1, commit=False)
        return (remaining + 1 if allowed else remaining, wait)

    def reset(self, key: str) -> None:
        self.state.pop(key, None)


class TokenBucketModel(StateModel):
    """Tokens refill at limit/period per ms up to the burst, may go down to -debt."""

    def __init__(self, rate: Rate, burst: Optional[int], debt: int = 0) -> None:
        super().__init__(rate)
        self.burst = burst if burst is not None else rate.limit
        self.debt = debt
        self.speed = Fraction(rate.limit, rate.expire)

    def capacity(self) -> int:
        return self.burst + self.debt

    def _tokens(self, key: str, now: int) -> Fraction:
        if key not in self.state:
            return Fraction(self.burst)
        tokens, last = self.state[key]
        return min(Fraction(self.burst), tokens + max(now - last, 0) * self.speed)

    def decide(self, key: str, now: int, cost: int, commit: bool) -> tuple[Any, ...]:
        tokens = self._tokens(key, now)
        reset_of = lambda t: ceil((self.burst - t) / self.speed)  # noqa: E731
        if tokens - cost >= -self.debt:
            tokens -= cost
            if commit:
                self.state[key] = (tokens, now)
            return (True, 0.0, floor(tokens + self.debt), float(reset_of(tokens)), self.limit)
        wait = ceil((cost - tokens - self.debt) / self.speed)
        remaining = max(floor(tokens + self.debt), 0)
        return (False, float(wait), remaining, float(reset_of(tokens)), self.limit)

    def refund(self, key: str, now: int, cost: int) -> None:
        if key in self.state:
            self.state[key] = (min(Fraction(self.burst), self._tokens(key, now) + cost), now)


class GCRAModel(StateModel):
    """A theoretical arrival time; emission interval T = period/limit, tolerance tau. The
    budget is whole again once the backlog is down to the part of tau + T short of a whole
    interval (no unit fits in it), not when it is gone: that moment is the reset."""

    def __init__(self, rate: Rate, tolerance_ms: Optional[int]) -> None:
        super().__init__(rate)
        self.T = Fraction(rate.expire, rate.limit)
        self.tau = (rate.limit - 1) * self.T if tolerance_ms is None else Fraction(tolerance_ms)

    def capacity(self) -> int:
        return floor((self.tau + self.T) / self.T)

    def _backlog(self, key: str, now: int) -> Fraction:
        return max(self.state.get(key, Fraction(now)) - now, Fraction(0))

    def decide(self, key: str, now: int, cost: int, commit: bool) -> tuple[Any, ...]:
        backlog = self._backlog(key, now)
        after = backlog + cost * self.T
        span = self.tau + self.T
        slack = span - self.capacity() * self.T
        if after <= span:
            if commit:
                self.state[key] = now + after
            reset = ceil(max(after - slack, Fraction(0)))
            return (True, 0.0, floor((span - after) / self.T), float(reset), self.limit)
        remaining = max(floor((span - backlog) / self.T), 0)
        reset = ceil(max(backlog - slack, Fraction(0)))
        return (False, float(ceil(after - span)), remaining, float(reset), self.limit)

    def refund(self, key: str, now: int, cost: int) -> None:
        if key in self.state:
            self.state[key] = now + max(self._backlog(key, now) - cost * self.T, Fraction(0))


class LeakyBucketModel(StateModel):
    """A level that drains at limit/period per ms, up to limit."""

    def __init__(self, rate: Rate) -> None:
        super().__init__(rate)
        self.speed = Fraction(rate.limit, rate.expire)

    def _level(self, key: str, now: int) -> Fraction:
        if key not in self.state:
            return Fraction(0)
        level, last = self.state[key]
        return max(level - max(now - last, 0) * self.speed, Fraction(0))

    def decide(self, key: str, now: int, cost: int, commit: bool) -> tuple[Any, ...]:
        level = self._level(key, now)
        if level + cost <= self.limit:
            level += cost
            if commit:
                self.state[key] = (level, now)
            remaining = floor(self.limit - level)
            return (True, 0.0, remaining, float(ceil(level / self.speed)), self.limit)
        wait = ceil((level + cost - self.limit) / self.speed)
        remaining = floor(max(self.limit - level, Fraction(0)))
        return (False, float(wait), remaining, float(ceil(level / self.speed)), self.limit)

    def refund(self, key: str, now: int, cost: int) -> None:
        if key in self.state:
            self.state[key] = (max(self._level(key, now) - cost, Fraction(0)), now)


class SlidingWindowLogModel(StateModel):
    """Never more than limit units admitted in any trailing period."""

    def _log(self, key: str, now: int) -> list[list[int]]:
        log = [entry for entry in self.state.get(key, []) if entry[0] > now - self.period]
        self.state[key] = log
        return log

    def decide(self, key: str, now: int, cost: int, commit: bool) -> tuple[Any, ...]:
        log = self._log(key, now)
        total = sum(c for _, c in log)
        if total + cost <= self.limit:
            if commit:
                log.append([now, cost])
            return (True, 0.0, self.limit - total - cost, float(self.period), self.limit)
        # the first moment enough of the oldest units have left
        excess, freed, wait = total + cost - self.limit, 0, self.period
        for t, c in log:
            freed += c
            if freed >= excess:
                wait = t + self.period - now
                break
        reset = log[-1][0] + self.period - now if log else 0
        remaining = max(self.limit - total, 0)
        return (False, float(wait), remaining, float(reset), self.limit)

    def refund(self, key: str, now: int, cost: int) -> None:
        log = self._log(key, now)
        while log and cost:
            taken = min(log[-1][1], cost)
            log[-1][1] -= taken
            cost -= taken
            if not log[-1][1]:
                log.pop()


def model_for(strategy: Strategy, rate: Rate) -> Optional[Model]:
    if type(strategy) is FixedWindow:
        return FixedWindowModel(rate)
    if type(strategy) is TokenBucket:
        return TokenBucketModel(rate, strategy.burst_size)
    if type(strategy) is TokenBucketWithDebt:
        return TokenBucketModel(rate, strategy.burst_size, strategy.max_debt)
    if type(strategy) is GCRA:
        tolerance = strategy.burst_tolerance_ms
        return GCRAModel(rate, None if tolerance is None else int(tolerance))
    if type(strategy) in (LeakyBucket, LeakyBucketWithQueue):
        return LeakyBucketModel(rate)
    if type(strategy) is SlidingWindowLog:
        return SlidingWindowLogModel(rate)
    return None


class ModelDriver:
    """The reference: several rates decided all or nothing (docs/multiple-limits.md)."""

    def __init__(self, clock: ManualClock, models: list[Model]) -> None:
        self.clock, self.models = clock, models
        self.last_wait: Any = 0.0

    def hit(self, key: str, cost: int) -> tuple[Any, ...]:
        now = self.clock.ms()
        models = self.models
        if len(models) == 1:
            model = models[0]
            if cost > model.capacity():
                return model.never()
        # docs/guides/costs.md: a cost above what a rate can admit is refused with a wait of
        # one full period of that rate and nothing left, as with one rate
        parts = [model.peek(key, now, cost, several=len(models) > 1) for model in models]
        oversized = [cost > model.capacity() and not model.counter for model in models]
        parts = [
            model.never() if over else part for model, part, over in zip(models, parts, oversized)
        ]
        if all(part[0] for part in parts) or (len(models) == 1 and models[0].counter):
            for model in models:
                model.charge(key, now, cost)  # all admit, or a fixed window alone refuses
        if len(parts) == 1:
            return parts[0]
        refused = [part for part in parts if not part[0]]
        remaining = min(part[2] for part in parts)
        if refused:
            return (False, max(part[1] for part in refused), remaining)
        return (True, 0.0, remaining)

    def refund(self, key: str, cost: int) -> None:
        for model in self.models:
            model.refund(key, self.clock.ms(), cost)


def _short(answer: Any, rates: int) -> Any:
    """What the model predicts of an answer: with several rates, allowed, wait, remaining."""
    if rates > 1 and answer[0] in ("hit", "stat") and isinstance(answer[-1], tuple):
        return (*answer[:-1], answer[-1][:3])
    return answer


async def _model_run(
    ops: Sequence[tuple[Any, ...]],
    strategy: Strategy,
    rates: list[Rate],
    clock: ManualClock,
    actual: list[Any],
) -> Optional[list[Any]]:
    models = [model_for(strategy, rate) for rate in rates]
    if any(model is None for model in models):
        return None
    driver = ModelDriver(clock, [m for m in models if m is not None])
    out: list[Any] = []
    for op in ops:
        kind = op[0]
        if kind == "hit":
            answer = driver.hit(op[1], op[2])
            if not answer[0]:
                driver.last_wait = answer[1]
            out.append(("hit", op[1], op[2], answer))
        elif kind == "advance":
            clock.advance(ms=op[1])
            out.append(("advance", op[1]))
        elif kind == "wait":
            step = max(driver.last_wait + op[1], 0)
            clock.advance(ms=step)
            out.append(("wait", step))
        elif kind == "boundary":
            period, now = rates[0].expire, clock.ms()
            step = max(period - now % period + op[1], 0)
            clock.advance(ms=step)
            out.append(("boundary", step))
        elif kind == "refund":
            driver.refund(op[1], op[2])
            out.append(("refund", op[1], op[2]))
        elif kind == "stat":
            now = clock.ms()
            if len(rates) == 1:
                out.append(("stat", op[1], *driver.models[0].stat(op[1], now)))
            else:
                parts = [m.peek(op[1], now, 1, several=True) for m in driver.models]
                refused = [p for p in parts if not p[0]]
                remaining = min(p[2] for p in parts)
                answer = (
                    (False, max(p[1] for p in refused), remaining)
                    if refused
                    else (
                        True,
                        0.0,
                        remaining,
                    )
                )
                out.append(("stat", op[1], answer))
        elif kind == "reset":
            for model in driver.models:
                model.reset(op[1])
            out.append(("reset", op[1]))
    return out


def _first_difference(expected: list[Any], actual: list[Any], ops: Sequence[Any]) -> str:
    for index, (want, got) in enumerate(zip(expected, actual)):
        if want != got:
            return f"op {index} {ops[index]!r}: expected {want!r}, got {got!r}\nops so far: {list(ops[: index + 1])!r}"
    return ""


# -- 2. InMemoryBackend against the reference models ---------------------------------------

MODELLED = [s for s in STRATEGIES if model_for(s, Rate.parse("1/s")) is not None]
MODELLED_IDS = [repr(s) for s in MODELLED]


class TestReferenceModels:
    @pytest.mark.parametrize("strategy", MODELLED, ids=MODELLED_IDS)
    @SETTINGS
    @given(rates=_rates(), ops=_ops(), offset=st.integers(0, 59_999))
    def test_memory_matches_the_model(
        self, strategy: Strategy, rates: list[Rate], ops: list[Any], offset: int
    ) -> None:
        start = START + offset / 1000

        async def run() -> tuple[list[Any], Optional[list[Any]]]:
            clock = ManualClock(start)
            backend = InMemoryBackend(namespace=_fresh("ref"), clock=clock)
            actual = await Driver(backend, clock, strategy, rates).run(ops)
            expected = await _model_run(ops, strategy, rates, ManualClock(start), actual)
            return actual, expected

        actual, expected = asyncio.run(run())
        assert expected is not None
        actual = [_short(a, len(rates)) for a in actual]
        assert actual == expected, _first_difference(expected, actual, ops)


# -- 1. every backend against InMemoryBackend ----------------------------------------------

BACKENDS = ["sqlite-file", "sqlite-memory", "redis", "memcached"]


def _backend_factory(
    request: pytest.FixtureRequest, name: str, tmp_path: Path
) -> Callable[..., ThrottleBackend]:
    if name.startswith("sqlite"):
        from traffik.backends.sqlite import SQLiteBackend

        url = (
            f"sqlite:///{tmp_path / 'model.db'}" if name == "sqlite-file" else "sqlite:///:memory:"
        )
        return lambda **options: SQLiteBackend(url, **options)
    if name == "redis":
        from traffik.backends.redis import RedisBackend

        redis_url = request.getfixturevalue("redis_url")
        maker: Callable[..., ThrottleBackend] = lambda **options: RedisBackend(redis_url, **options)  # noqa: E731
        maker.server_ttl = True  # type: ignore[attr-defined]
        return maker
    from traffik.backends.memcached import MemcachedBackend

    memcached_url = request.getfixturevalue("memcached_url")
    return lambda **options: MemcachedBackend(memcached_url, **options)


@pytest.fixture(params=BACKENDS)
def make_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., ThrottleBackend]:
    """A factory of the backend under test: `make(namespace=..., clock=...)`."""
    return _backend_factory(request, request.param, tmp_path)


async def _both(
    make: Callable[..., ThrottleBackend],
    strategy: Strategy,
    rates: list[Rate],
    ops: Sequence[tuple[Any, ...]],
    start: float,
) -> tuple[list[Any], list[Any]]:
    """The answers of InMemoryBackend and of the backend under test to the same timeline."""
    answers = []
    for backend_of in (InMemoryBackend, make):
        clock = ManualClock(start)
        backend = backend_of(namespace=_fresh("diff"), clock=clock)
        try:
            answers.append(await Driver(backend, clock, strategy, rates).run(ops))
        finally:
            await backend.reset()
            await backend.close()
    return answers[0], answers[1]


class TestDifferential:
    @pytest.mark.parametrize("strategy", STRATEGIES, ids=STRATEGY_IDS)
    @SETTINGS
    @given(rates=_rates(), ops=_ops(), offset=st.integers(0, 59_999))
    def test_backend_matches_memory(
        self,
        make_backend: Callable[..., ThrottleBackend],
        strategy: Strategy,
        rates: list[Rate],
        ops: list[Any],
        offset: int,
    ) -> None:
        if getattr(make_backend, "server_ttl", False):
            if isinstance(strategy, FixedWindow):
                pytest.skip("a FixedWindow window is a key TTL on the server's clock here")
            # Keys expire on the server's clock, which the test clock does not move: a state
            # that would live a few ms can vanish while the test clock stands still. So the
            # timeline runs 60 times slower: periods of a minute and more, where the shortest
            # state (one unit of a bucket of 6) lives 10 s of real time.
            assume(all(rate.expire >= 1000 for rate in rates))
            rates = [Rate(limit=rate.limit, milliseconds=rate.expire * 60) for rate in rates]
            ops = [("advance", op[1] * 60) if op[0] == "advance" else op for op in ops]
        memory, other = asyncio.run(
            _both(make_backend, strategy, rates, ops, START + offset / 1000)
        )
        assert other == memory, _first_difference(memory, other, ops)


# -- concurrency -------------------------------------------------------------------------------

HOUR = 3_600_000


def _sequential_order_exists(
    costs: Sequence[int], admitted: Sequence[bool], capacity: int, counter: bool
) -> bool:
    """Whether some order of the hits, decided one after another at one instant on a fresh
    key, admits exactly `admitted`. A fixed window counts every hit it can ever admit (refused
    ones too); another strategy spends only what it admits, out of `capacity` units."""
    n = len(costs)
    seen: set[tuple[int, int]] = set()

    def walk(mask: int, spent: int) -> bool:
        if mask == (1 << n) - 1:
            return True
        if (mask, spent) in seen:
            return False
        seen.add((mask, spent))
        for i in range(n):
            if mask & (1 << i):
                continue
            fits = spent + costs[i] <= capacity
            if fits != admitted[i]:
                continue
            if counter:
                after = spent + (costs[i] if costs[i] <= capacity else 0)
            else:
                after = spent + (costs[i] if fits else 0)
            if walk(mask | (1 << i), after):
                return True
        return False

    return walk(0, 0)


@pytest.fixture(params=["memory", *BACKENDS])
def any_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., ThrottleBackend]:
    if request.param == "memory":
        return InMemoryBackend
    return _backend_factory(request, request.param, tmp_path)


CONCURRENT = settings(SETTINGS, max_examples=max(EXAMPLES // 3, 10))


class TestConcurrency:
    @pytest.mark.parametrize("strategy", STRATEGIES, ids=STRATEGY_IDS)
    @CONCURRENT
    @given(limit=st.integers(1, 6), data=st.data())
    def test_concurrent_hits_admit_what_some_sequential_order_would(
        self, any_backend: Callable[..., ThrottleBackend], strategy: Strategy, limit: int, data: Any
    ) -> None:
        rate = Rate(limit=limit, milliseconds=HOUR)
        capacity = strategy.capacity(rate)
        costs = data.draw(st.lists(st.integers(1, capacity + 1), min_size=2, max_size=8))

        async def run() -> tuple[list[Decision], Any]:
            import anyio

            backend = any_backend(namespace=_fresh("conc"))
            decisions: list[Optional[Decision]] = [None] * len(costs)

            async def one(i: int) -> None:
                decisions[i] = await strategy.decide("hot", rate, backend, costs[i])

            try:
                async with anyio.create_task_group() as group:
                    for i in range(len(costs)):
                        group.start_soon(one, i)
                stat = await strategy.get_stat("hot", rate, backend)
            finally:
                await backend.reset()
                await backend.close()
            return [d for d in decisions if d is not None], stat

        decisions, stat = asyncio.run(run())
        admitted = [d.allowed for d in decisions]
        counter = isinstance(strategy, FixedWindow)
        assert _sequential_order_exists(costs, admitted, capacity, counter), (costs, admitted)
        spent = sum(c for c, ok in zip(costs, admitted) if ok or (counter and c <= capacity))
        assert stat.hits_remaining == max(capacity - spent, 0), (costs, admitted, stat)

    @pytest.mark.parametrize("strategy", STRATEGIES, ids=STRATEGY_IDS)
    @CONCURRENT
    @given(limit=st.integers(1, 6), data=st.data())
    def test_concurrent_throttle_hits_admit_what_some_sequential_order_would(
        self, any_backend: Callable[..., ThrottleBackend], strategy: Strategy, limit: int, data: Any
    ) -> None:
        """The throttles' hot paths (in place in memory, coalesced on Redis and Memcached):
        throttles sharing a uid share counters, each with its own fixed cost."""
        from starlette.requests import Request

        from traffik import HTTPThrottle
        from traffik.exceptions import ConnectionThrottled

        rate = Rate(limit=limit, milliseconds=HOUR)
        capacity = strategy.capacity(rate)
        costs = data.draw(st.lists(st.integers(1, capacity), min_size=2, max_size=8))

        async def run() -> list[bool]:
            import anyio

            backend = any_backend(namespace=_fresh("hot"))
            uid = _fresh("uid")
            throttles = {
                cost: HTTPThrottle(
                    uid, rate=rate, strategy=strategy, backend=backend, cost=cost, per_route=False
                )
                for cost in set(costs)
            }
            admitted: list[Optional[bool]] = [None] * len(costs)

            async def one(i: int) -> None:
                scope = {
                    "type": "http",
                    "method": "GET",
                    "path": "/",
                    "headers": [],
                    "client": ("203.0.113.7", 1234),
                }
                try:
                    await throttles[costs[i]].hit(Request(scope))
                    admitted[i] = True
                except ConnectionThrottled:
                    admitted[i] = False

            try:
                async with anyio.create_task_group() as group:
                    for i in range(len(costs)):
                        group.start_soon(one, i)
            finally:
                await backend.reset()
                await backend.close()
            return [bool(a) for a in admitted]

        admitted = asyncio.run(run())
        counter = isinstance(strategy, FixedWindow)
        assert _sequential_order_exists(costs, admitted, capacity, counter), (costs, admitted)


# -- minimised discrepancies -------------------------------------------------------------------


@pytest.mark.parametrize(
    "strategy",
    [
        FixedWindow(),
        SlidingWindowCounter(),
        SlidingWindowLog(),
        TokenBucket(),
        TokenBucketWithDebt(),
        LeakyBucket(),
        LeakyBucketWithQueue(),
        GCRA(),
    ],
    ids=repr,
)
@pytest.mark.parametrize("name", ["memory", *BACKENDS])
def test_an_oversized_cost_waits_one_period_with_several_rates(
    request: pytest.FixtureRequest, tmp_path: Path, name: str, strategy: Strategy
) -> None:
    """docs/guides/costs.md: a cost above what a rate can admit is refused with a wait of one
    full period of that rate, as it is with one rate (Retry-After: 60 at 2/min), on every
    backend. Minimised from `TestReferenceModels`: the buckets and GCRA answered their
    arithmetic wait (90 s at 2/min, cost 5), which a retry could never honour."""
    from starlette.requests import Request

    from traffik import HTTPThrottle
    from traffik.exceptions import ConnectionThrottled

    make = InMemoryBackend if name == "memory" else _backend_factory(request, name, tmp_path)

    def five_units(request: Any, context: Any) -> int:
        return 5

    async def run() -> dict[str, str]:
        backend = make(namespace=_fresh("units"), clock=ManualClock(START))
        answers = {}
        try:
            for rate in ("2/min", "2/min;10/hour"):
                throttle = HTTPThrottle(
                    _fresh("units"), rate=rate, strategy=strategy, backend=backend, cost=five_units
                )
                scope = {
                    "type": "http",
                    "method": "GET",
                    "path": "/",
                    "headers": [],
                    "client": ("h", 1),
                }
                with pytest.raises(ConnectionThrottled) as refused:
                    await throttle.hit(Request(scope))
                answers[rate] = refused.value.headers["Retry-After"]
        finally:
            await backend.reset()
            await backend.close()
        return answers

    assert asyncio.run(run()) == {"2/min": "60", "2/min;10/hour": "60"}


@pytest.mark.parametrize(
    "name",
    [
        "memory",
        "sqlite-memory",
        "memcached",
    ],
)
def test_a_refused_hit_opens_no_fixed_window_of_another_rate(
    request: pytest.FixtureRequest, tmp_path: Path, name: str
) -> None:
    """docs/multiple-limits.md: a refused request takes nothing from any rate (a fixed-window
    counter that refuses included); the counter of a rate that admitted it is untouched,
    so its window opens at the next hit it counts. Minimised from `TestDifferential`."""
    make = InMemoryBackend if name == "memory" else _backend_factory(request, name, tmp_path)
    rates = [Rate(limit=1, milliseconds=100), Rate(limit=2, milliseconds=1000)]
    strategy = FixedWindow()

    async def run() -> list[bool]:
        clock = ManualClock(START)
        backend = make(namespace=_fresh("window"), clock=clock)
        answers = []
        try:
            for at in (0, 100, 999, 1000, 1099):  # ms after START
                clock.set(START + at / 1000)
                decision = await backend.evaluate_all(step_items(strategy, "a", rates, 1, backend))
                answers.append(decision.allowed)
        finally:
            await backend.reset()
            await backend.close()
        return answers

    # 999: 2/s is spent (refused); 1000: a new second, and 1/100ms opens its window at 1000,
    # so at 1099 that window still holds the hit of 1000.
    assert asyncio.run(run()) == [True, True, False, True, False]
