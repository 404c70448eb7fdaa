"""The backend conformance suite: what every backend must do, written once.

A backend package runs it on itself by subclassing `BackendConformance` in a test module
and providing a `make_backend` fixture, a factory taking `namespace=` and `clock=`:

```python
class TestMyConformance(BackendConformance):
    @pytest.fixture
    def make_backend(self, my_server_url):
        return lambda **options: MyBackend(my_server_url, **options)
```

Every backend runs the strategies' timelines, walks and answers on a test clock, what a
clock that steps does to them (`traffik.testing.clock_step_conformance`) and their windows
on the calendar (`traffik.testing.calendar_conformance`). A backend whose
instances share one store (a server) also subclasses
`SharedStoreConformance`: a second instance keeps the budget the first spent after the
first shuts down, and instances whose clocks disagree keep the limit within the skew
(`traffik.testing.skew_conformance`). Set `clock_moves_expiry = False` for a backend whose key expiry follows its server even when
strategies follow an injected clock (the `FixedWindow` timeline is then skipped, its window
being a key's time to live); set `supports_clock = False` for a backend that cannot follow an injected
clock; the strategy timelines are then skipped for it. Needs pytest and anyio.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import AsyncIterator
from typing import Any, Callable

import pytest

from traffik.backends.base import ThrottleBackend
from traffik.backends.context import get_throttle_backend
from traffik.clock import ManualClock
from traffik.exceptions import BackendConnectionError, ConfigurationError, LockAcquisitionError
from traffik.rates import MAX_LIMIT, MAX_PERIOD_MS, Rate
from traffik.strategies import BUILTIN_STRATEGIES, FixedWindow, Strategy
from traffik.testing.advanced_conformance import AdvancedConformance
from traffik.testing.calendar_conformance import CalendarConformance
from traffik.testing.clock_step_conformance import ClockStepConformance
from traffik.testing.rate_change_conformance import RateChangeConformance
from traffik.testing.skew_conformance import SkewConformance
from traffik.testing.steps_conformance import StepsConformance
from traffik.testing.truth_conformance import AnswerTruthConformance

__all__ = [
    "EXPECTED_FIRST_WAIT_MS",
    "TIMELINE_RATE",
    "TIMELINE_START",
    "BackendConformance",
    "SharedStoreConformance",
]

_namespaces = itertools.count()
STRATEGY_IDS = [cls.__name__ for cls in BUILTIN_STRATEGIES]

TIMELINE_RATE = Rate.parse("3/min")
TIMELINE_START = 1_700_000_040.0
"""A test-clock start on a minute boundary, so window-aligned strategies are predictable."""

EXPECTED_FIRST_WAIT_MS = {
    # three hits at TIMELINE_START with 3/min, then the fourth is rejected with this wait:
    "FixedWindow": 60_000,  # the window opened at the first hit
    "SlidingWindowCounter": 80_000,  # next window, plus 20 s for the old count to decay to 2
    "SlidingWindowLog": 60_000,  # the oldest entry leaves the log
    "TokenBucket": 20_000,  # one token refills every 20 s
    "TokenBucketWithDebt": 20_000,
    "LeakyBucket": 20_000,  # one unit drains every 20 s
    "LeakyBucketWithQueue": 20_000,
    "GCRA": 20_000,  # one emission interval
}


def _strategies() -> list[Strategy]:
    return [cls() for cls in BUILTIN_STRATEGIES]


@pytest.mark.anyio
class BackendConformance(
    StepsConformance,
    AdvancedConformance,
    RateChangeConformance,
    AnswerTruthConformance,
    ClockStepConformance,
    CalendarConformance,
):
    """Behaviour shared by every backend; subclass it and define `make_backend`."""

    supports_clock = True
    clock_moves_expiry = True
    exact_walks = 150
    """Random walks per strategy in `test_waits_are_exact` (fewer for a backend on a network)."""

    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"

    @pytest.fixture
    def make_backend(self) -> Callable[..., ThrottleBackend]:
        raise NotImplementedError(
            "define a `make_backend` fixture returning a factory(**options) -> backend"
        )

    @pytest.fixture
    async def backend(
        self, make_backend: Callable[..., ThrottleBackend]
    ) -> AsyncIterator[ThrottleBackend]:
        backend = make_backend(namespace=f"conformance-{next(_namespaces)}")
        yield backend
        if backend.closed():
            await backend.initialize()
        await backend.reset()
        await backend.close()

    @pytest.fixture
    async def clocked(
        self, make_backend: Callable[..., ThrottleBackend]
    ) -> AsyncIterator[tuple[ThrottleBackend, ManualClock]]:
        if not self.supports_clock:
            pytest.skip(
                "this backend takes its time from the server, so a test clock cannot drive it"
            )
        clock = ManualClock(TIMELINE_START)
        backend = make_backend(namespace=f"conformance-{next(_namespaces)}", clock=clock)
        yield backend, clock
        await backend.reset()
        await backend.close()

    # -- lifecycle -----------------------------------------------------------------------

    async def test_first_use_initialises(self, backend: ThrottleBackend) -> None:
        assert not await backend.ready()
        assert await backend.increment("k") == 1
        assert await backend.ready()

    async def test_closed_backend_refuses_until_initialised(self, backend: ThrottleBackend) -> None:
        await backend.set("k", "v")
        await backend.close()
        assert backend.closed()
        with pytest.raises(BackendConnectionError):
            await backend.get("k")
        await backend.initialize()
        assert await backend.ready()

    async def test_context_sets_the_default_backend(self, backend: ThrottleBackend) -> None:
        async with backend(persistent=True, close_on_exit=False) as entered:
            assert entered is backend
            assert get_throttle_backend() is backend
        assert get_throttle_backend() is None

    async def test_non_persistent_context_resets_on_exit(self, backend: ThrottleBackend) -> None:
        async with backend(persistent=False, close_on_exit=False):
            await backend.set("k", "v")
        assert await backend.get("k") is None

    async def test_lifespan_resets_and_closes(self, backend: ThrottleBackend) -> None:
        from types import SimpleNamespace

        app = SimpleNamespace(state=SimpleNamespace())

        backend.persistent = False
        async with backend.lifespan(app):
            await backend.set("k", "v")
            assert get_throttle_backend(app) is backend
        assert backend.closed()
        await backend.initialize()
        assert await backend.get("k") is None

    # -- storage -------------------------------------------------------------------------

    async def test_get_set_delete(self, backend: ThrottleBackend) -> None:
        assert await backend.get("missing") is None
        await backend.set("k", "value with spaces é")
        assert await backend.get("k") == "value with spaces é"
        assert await backend.delete("k") is True
        assert await backend.delete("k") is False
        assert await backend.get("k") is None

    async def test_increment_and_decrement(self, backend: ThrottleBackend) -> None:
        assert await backend.increment("n") == 1
        assert await backend.increment("n", 5) == 6
        assert await backend.decrement("n", 2) == 4
        assert await backend.get("n") == "4"

    async def test_increment_with_ttl_sets_ttl_once(self, backend: ThrottleBackend) -> None:
        assert await backend.increment_with_ttl("c", amount=2, ttl=30) == 2
        assert await backend.increment_with_ttl("c", amount=3, ttl=30) == 5
        left = await backend.ttl("c")
        if left is not None:
            assert 0 < left <= 30_000

    async def test_increment_with_ttl_is_atomic(self, backend: ThrottleBackend) -> None:
        counts = await asyncio.gather(
            *(backend.increment_with_ttl("a", amount=1, ttl=60) for _ in range(100))
        )
        assert sorted(int(c) for c in counts) == list(range(1, 101))

    async def test_expire_and_multi_ops(self, backend: ThrottleBackend) -> None:
        assert await backend.expire("nothing", 10) is False
        await backend.multi_set({"x": "1", "y": "2"}, expire=60)
        assert await backend.expire("x", 30) is True
        assert await backend.multi_get("x", "missing", "y") == ["1", None, "2"]
        assert await backend.multi_get() == []

    async def test_keys_are_namespaced(self, backend: ThrottleBackend) -> None:
        assert backend.get_key("a").startswith(backend.namespace + ":")
        assert (
            backend.get_key("a", 1, 2, x=3)
            == backend.get_key("a", 2, 1, x=3)
            != backend.get_key("a", 1, 2)
        )

    async def test_reset_clears_only_its_namespace(
        self, backend: ThrottleBackend, make_backend: Callable[..., ThrottleBackend]
    ) -> None:
        # A namespace that starts with this one's (`app` and `app:v2`) is another namespace.
        other = make_backend(namespace=backend.namespace + ":v2")
        try:
            await backend.set(backend.get_key("mine"), "1")
            await other.set(other.get_key("theirs"), "2")
            await backend.reset()
            assert await backend.get(backend.get_key("mine")) is None
            assert await other.get(other.get_key("theirs")) == "2"
        finally:
            await other.reset()
            await other.close()

    # -- locks ---------------------------------------------------------------------------

    async def test_lock_excludes_and_times_out(self, backend: ThrottleBackend) -> None:
        async with backend.lock("resource", ttl=5):
            with pytest.raises(LockAcquisitionError):
                async with backend.lock("resource", ttl=5, blocking=False):
                    pass
            with pytest.raises(LockAcquisitionError):
                async with backend.lock("resource", ttl=5, blocking_timeout=0.05):
                    pass
        async with backend.lock("resource", ttl=5, blocking=False):
            pass

    async def test_lock_serialises_read_modify_write(self, backend: ThrottleBackend) -> None:
        async def bump() -> None:
            async with backend.lock("rmw", ttl=5, blocking_timeout=10):
                value = int(await backend.get("v") or 0)
                await asyncio.sleep(0)
                await backend.set("v", str(value + 1))

        await asyncio.gather(*(bump() for _ in range(20)))
        assert await backend.get("v") == "20"

    # -- strategies ----------------------------------------------------------------------

    @pytest.mark.parametrize("strategy", _strategies(), ids=STRATEGY_IDS)
    async def test_concurrent_hits_admit_exactly_the_limit(
        self, backend: ThrottleBackend, strategy: Strategy
    ) -> None:
        rate = Rate.parse("100/hour")
        waits = await asyncio.gather(*(strategy("hot", rate, backend, 1) for _ in range(200)))
        assert sum(1 for w in waits if w == 0) == 100
        assert all(w > 0 for w in waits if w != 0)

    @pytest.mark.parametrize("strategy", _strategies(), ids=STRATEGY_IDS)
    async def test_unlimited_rate_costs_nothing(
        self, backend: ThrottleBackend, strategy: Strategy
    ) -> None:
        assert await strategy("free", Rate(), backend, 1) == 0
        assert not await backend.ready()

    @pytest.mark.parametrize("strategy", _strategies(), ids=STRATEGY_IDS)
    async def test_timeline(
        self, clocked: tuple[ThrottleBackend, ManualClock], strategy: Strategy
    ) -> None:
        backend, clock = clocked
        if isinstance(strategy, FixedWindow) and not self.clock_moves_expiry:
            pytest.skip("FixedWindow's window is a key TTL, which follows the server's clock here")
        rate = TIMELINE_RATE
        hits = [await strategy.decide("t", rate, backend, 1) for _ in range(rate.limit)]
        assert all(d.allowed for d in hits)
        assert [d.remaining for d in hits] == [2, 1, 0]
        stat = await strategy.get_stat("t", rate, backend)
        rejected = await strategy.decide("t", rate, backend, 1)
        assert not rejected.allowed
        assert stat.hits_remaining == 0 and stat.wait_ms == rejected.wait_ms
        wait = rejected.wait_ms
        assert wait == EXPECTED_FIRST_WAIT_MS[type(strategy).__name__]
        clock.advance(ms=wait - 1)
        assert not (await strategy.decide("t", rate, backend, 1)).allowed, (
            "the wait was longer than needed"
        )
        clock.advance(ms=1)
        stat = await strategy.get_stat("t", rate, backend)
        assert stat.wait_ms == 0 and stat.hits_remaining >= 1
        assert (await strategy.decide("t", rate, backend, 1)).allowed
        clock.advance(ms=3 * rate.expire)
        again = [await strategy.decide("t", rate, backend, 1) for _ in range(rate.limit)]
        assert all(d.allowed for d in again), "the limit did not recover after the window"

    @pytest.mark.parametrize("strategy", _strategies(), ids=STRATEGY_IDS)
    async def test_waits_are_exact(
        self, make_backend: Callable[..., ThrottleBackend], strategy: Strategy
    ) -> None:
        """A random walk of hits (limits 1-8, periods 1 min to 1 h, costs 1 to the limit) on
        the test clock: every rejected hit retried exactly `wait_ms` later is admitted, and one
        retried a millisecond earlier is not. (A server's keys expire on its own clock, whatever
        the test clock says: the periods are long enough that no key a walk reads expires while
        it runs, however slow the machine.)"""
        if not self.supports_clock:
            pytest.skip(
                "this backend takes its time from the server, so a test clock cannot drive it"
            )
        if isinstance(strategy, FixedWindow) and not self.clock_moves_expiry:
            pytest.skip("FixedWindow's window is a key TTL, which follows the server's clock here")
        rng = random.Random(f"exact-{type(strategy).__name__}")
        for walk in range(self.exact_walks):
            clock = ManualClock(TIMELINE_START + rng.randrange(0, 10**6) / 1000)
            backend = make_backend(namespace=f"conformance-{next(_namespaces)}", clock=clock)
            try:
                limit = rng.randint(1, 8)
                rate = Rate(limit=limit, milliseconds=rng.randint(60_000, 3_600_000))
                for step in range(12):
                    cost = rng.randint(1, limit)
                    decision = await strategy.decide("walk", rate, backend, cost)
                    if not decision.allowed:
                        wait = decision.wait_ms
                        assert wait >= 1 and wait == int(wait), decision
                        if wait > 1:
                            clock.advance(ms=wait - 1)
                            early = await strategy.decide("walk", rate, backend, cost)
                            assert not early.allowed, (
                                f"walk {walk} step {step}: admitted 1 ms before the wait ({wait} ms, "
                                f"{rate}, cost {cost}): the wait was longer than needed"
                            )
                            clock.advance(ms=1)
                        else:
                            clock.advance(ms=wait)
                        retry = await strategy.decide("walk", rate, backend, cost)
                        assert retry.allowed, (
                            f"walk {walk} step {step}: rejected after waiting exactly {wait} ms "
                            f"({rate}, cost {cost}): {retry}"
                        )
                    clock.advance(ms=rng.choice([0, 0, 1, rng.randint(1, rate.expire)]))
            finally:
                await backend.reset()
                await backend.close()

    @pytest.mark.parametrize("text", ["2/36500d", f"{MAX_LIMIT}/s", f"{MAX_LIMIT}/36500d"])
    async def test_the_largest_rates_are_decided_or_refused_up_front(
        self, backend: ThrottleBackend, text: str
    ) -> None:
        """Every strategy decides the largest rates `Rate` admits (a counter's TTL, a deadline
        of now plus the period: within what the store holds), or refuses the rate when a
        throttle is built (`validate`, `check_scale`), naming it: never a store error per
        request. FixedWindow decides them all."""
        rate = Rate.parse(text)
        for cls in BUILTIN_STRATEGIES:
            strategy = cls()
            try:
                backend.validate(strategy, rate)
                check_scale = getattr(strategy, "check_scale", None)
                if check_scale is not None:
                    check_scale(rate)
            except ConfigurationError as refused:
                assert f"rate {str(rate)!r}" in str(refused), refused
                assert cls is not FixedWindow
                continue
            name = f"largest:{cls.__name__}"
            decisions = [await strategy.decide(name, rate, backend) for _ in range(3)]
            assert decisions[0].allowed and decisions[0].remaining == rate.limit - 1
            if rate.limit == 2 and cls is FixedWindow:
                assert [d.allowed for d in decisions] == [True, True, False]
                # (a server's clock may have moved on since the window opened)
                assert MAX_PERIOD_MS - 5_000 <= decisions[2].wait_ms <= MAX_PERIOD_MS

    @pytest.mark.parametrize("strategy", _strategies(), ids=STRATEGY_IDS)
    async def test_costs(
        self, clocked: tuple[ThrottleBackend, ManualClock], strategy: Strategy
    ) -> None:
        backend, _ = clocked
        rate = Rate.parse("3/min")
        assert await strategy("c", rate, backend, 2) == 0
        assert await strategy("c", rate, backend, 1) == 0
        assert await strategy("c", rate, backend, 1) > 0
        never = await strategy.decide("big", rate, backend, 4)
        assert not never.allowed and never.wait_ms == rate.expire
        assert await strategy("big", rate, backend, 1) == 0, (
            "an oversized request must not consume quota"
        )

    async def test_fixed_window_uses_increment_with_ttl(self, backend: ThrottleBackend) -> None:
        calls: list[tuple[Any, ...]] = []
        original = backend.increment_with_ttl

        async def spy(key: str, amount: int = 1, ttl: float = 60) -> int:
            calls.append((key, amount, ttl))
            return await original(key, amount=amount, ttl=ttl)

        backend.increment_with_ttl = spy  # type: ignore[method-assign]
        try:
            assert await FixedWindow()("fw", Rate.parse("2/min"), backend, 1) == 0
        finally:
            del backend.increment_with_ttl
        assert calls == [(backend.get_key("fw") + ":fw", 1, 60)]


@pytest.mark.anyio
class SharedStoreConformance(SkewConformance):
    """What a backend whose instances share one store (a server) must also do: keep a
    budget across instances, and the limit when their clocks disagree (`SkewConformance`)."""

    async def test_one_instance_shutting_down_keeps_the_shared_budget(
        self, make_backend: Callable[..., ThrottleBackend]
    ) -> None:
        namespace = f"conformance-shared-{next(_namespaces)}"
        first, second = make_backend(namespace=namespace), make_backend(namespace=namespace)
        assert first.persistent, "a shared store is persistent by default"
        strategy, rate = FixedWindow(), Rate.parse("2/min")
        try:
            async with first.lifespan(None):
                assert [await strategy("k", rate, first, 1) for _ in range(2)] == [0, 0]
            assert first.closed()
            assert await strategy("k", rate, second, 1) > 0, "the spent budget was reset"
        finally:
            await second.reset()
            await second.close()
