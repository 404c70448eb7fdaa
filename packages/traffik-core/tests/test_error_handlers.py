"""The `on_error` handlers on real backends and strategies: `fallback`, `retry` and `failover`."""

from __future__ import annotations

import asyncio
from typing import Any
from unittest.mock import patch

import pytest

from traffik import InMemoryBackend, ManualClock, Rate
from traffik.backends.base import ThrottleBackend
from traffik.backoff import ConstantBackoff
from traffik.decision import Decision
from traffik.error_handlers import (
    CircuitBreaker,
    ThrottleExceptionInfo,
    backend_fallback,
    failover,
    fallback,
    retry,
)
from traffik.exceptions import BackendConnectionError, BackendError, ConfigurationError
from traffik.strategies import FixedWindow, TokenBucket

pytestmark = pytest.mark.anyio

RATE = Rate.parse("2/min")
KEY = "client:1"


class FakeThrottle:
    """All a handler needs of a throttle: its strategy."""

    def __init__(self, strategy: Any) -> None:
        self.strategy = strategy


class FlakyBackend(InMemoryBackend):
    """An in-memory backend whose decisions fail `failures` times, each with a new error."""

    def __init__(self, failures: int, error: type[Exception] = BackendError, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.failures = failures
        self.error = error
        self.calls = 0

    def _maybe_fail(self) -> None:
        self.calls += 1
        if self.failures:
            self.failures -= 1
            raise self.error(f"failure {self.calls}")

    async def increment_with_ttl(self, key: str, amount: int = 1, ttl: float = 60) -> int:
        self._maybe_fail()
        return await super().increment_with_ttl(key, amount, ttl)

    async def evaluate(self, *args: Any, **kwargs: Any) -> Decision:
        self._maybe_fail()
        return await super().evaluate(*args, **kwargs)


class Sleeps(list[float]):
    """A `sleep` that records the delays instead of waiting."""

    async def __call__(self, seconds: float) -> None:
        self.append(seconds)


async def failing_exc_info(backend: ThrottleBackend, strategy: Any = None) -> ThrottleExceptionInfo:
    """Run the strategy on `backend` as the throttle would, and describe the error it raised."""
    strategy = FixedWindow() if strategy is None else strategy
    with pytest.raises(Exception) as caught:
        await strategy(KEY, RATE, backend, 1)
    return exc_info_for(caught.value, backend, strategy)


def exc_info_for(
    exc: Exception, backend: ThrottleBackend, strategy: Any = None
) -> ThrottleExceptionInfo:
    return {
        "exception": exc,
        "connection": None,
        "key": KEY,
        "cost": 1,
        "rate": RATE,
        "backend": backend,
        "context": {},
        "throttle": FakeThrottle(FixedWindow() if strategy is None else strategy),
    }


async def remaining(backend: ThrottleBackend, strategy: Any = None) -> float:
    stat = await (FixedWindow() if strategy is None else strategy).get_stat(KEY, RATE, backend)
    return stat.hits_remaining


# -- fallback ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "strategy", [FixedWindow(), TokenBucket()], ids=["fixed_window", "token_bucket"]
)
async def test_fallback_decides_on_the_fallback_backend(strategy: Any) -> None:
    primary, spare = (
        FlakyBackend(failures=100, namespace="primary"),
        InMemoryBackend(namespace="spare"),
    )
    handler = fallback(spare)
    info = await failing_exc_info(primary, strategy)
    first = await handler(None, info)
    second = await handler(None, info)
    third = await handler(None, info)
    assert isinstance(first, Decision) and first.allowed and first.remaining == 1
    assert isinstance(second, Decision) and second.allowed and second.remaining == 0
    assert isinstance(third, Decision) and not third.allowed and third.wait_ms > 0
    assert await remaining(spare, strategy) == 0
    primary.failures = 0
    assert await remaining(primary, strategy) == 2


async def test_fallback_with_a_patched_primary_and_a_never_initialised_spare() -> None:
    primary, spare = InMemoryBackend(namespace="primary"), InMemoryBackend(namespace="spare")
    handler = backend_fallback(backend=spare, fallback_on=(BackendError,))
    assert backend_fallback is fallback
    assert not spare.initialized
    with patch.object(primary, "increment_with_ttl", side_effect=BackendError("Redis down")):
        decision = await handler(None, await failing_exc_info(primary))
    assert isinstance(decision, Decision) and decision.allowed
    assert spare.initialized


async def test_fallback_reraises_the_original_for_unlisted_errors() -> None:
    primary, spare = InMemoryBackend(namespace="primary"), InMemoryBackend(namespace="spare")
    with patch.object(primary, "increment_with_ttl", side_effect=ValueError("a bug")):
        info = await failing_exc_info(primary)
    with pytest.raises(ValueError, match="a bug") as caught:
        await fallback(spare)(None, info)
    assert caught.value is info["exception"]
    assert not spare.initialized
    assert isinstance(await fallback(spare, on=ValueError)(None, info), Decision)


async def test_fallback_failure_is_chained_to_the_original() -> None:
    primary, spare = (
        FlakyBackend(failures=1, namespace="primary"),
        InMemoryBackend(namespace="spare"),
    )
    await spare.initialize()
    await spare.close()
    info = await failing_exc_info(primary)
    with pytest.raises(BackendConnectionError, match="was closed") as caught:
        await fallback(spare)(None, info)
    assert caught.value.__cause__ is info["exception"]


async def test_fallback_initialized_false_reopens_a_closed_spare() -> None:
    primary, spare = (
        FlakyBackend(failures=1, namespace="primary"),
        InMemoryBackend(namespace="spare"),
    )
    await spare.initialize()
    await spare.close()
    decision = await fallback(spare, initialized=False)(None, await failing_exc_info(primary))
    assert isinstance(decision, Decision) and decision.allowed
    assert spare.initialized


async def test_fallback_runs_a_strategy_without_decide_and_returns_its_wait() -> None:
    seen: list[tuple[Any, ...]] = []

    async def strategy(key: Any, rate: Rate, backend: ThrottleBackend, cost: float = 1) -> float:
        seen.append((key, rate, backend, cost))
        if backend.namespace == "primary":
            raise BackendError("down")
        return 250.0

    primary, spare = InMemoryBackend(namespace="primary"), InMemoryBackend(namespace="spare")
    info = await failing_exc_info(primary, strategy)
    assert await fallback(spare)(None, info) == 250.0
    assert seen[-1] == (KEY, RATE, spare, 1)


def test_fallback_settings_are_validated() -> None:
    spare = InMemoryBackend()
    with pytest.raises(
        ConfigurationError, match=r"fallback\(backend='memory://'\): must be a ThrottleBackend"
    ):
        fallback("memory://")  # type: ignore[arg-type]
    with pytest.raises(
        ConfigurationError, match=r"fallback\(on=\(\)\): must be an exception class"
    ):
        fallback(spare, on=())
    with pytest.raises(ConfigurationError, match=r"fallback_on='BackendError'\)"):
        fallback(spare, fallback_on="BackendError")  # type: ignore[arg-type]
    with pytest.raises(
        ConfigurationError, match=r"`fallback_on` is the old name of `on`; give only one"
    ):
        fallback(spare, on=ValueError, fallback_on=(BackendError,))
    with pytest.raises(
        ConfigurationError, match=r"initialized='yes'\): must be None, True or False"
    ):
        fallback(spare, initialized="yes")  # type: ignore[arg-type]
    fallback(spare, on=(BackendError,), fallback_on=[BackendError])  # type: ignore[arg-type]


# -- retry ------------------------------------------------------------------------------


async def test_retry_succeeds_after_failures_waiting_the_documented_delays() -> None:
    backend = FlakyBackend(failures=3)
    sleeps = Sleeps()
    info = await failing_exc_info(backend)
    decision = await retry(max_retries=3, retry_delay=0.1, sleep=sleeps)(None, info)
    assert isinstance(decision, Decision) and decision.allowed
    assert sleeps == pytest.approx([0.1, 0.2, 0.4])
    assert backend.calls == 4


async def test_retry_exhausted_raises_the_last_error() -> None:
    backend = FlakyBackend(failures=100)
    sleeps = Sleeps()
    info = await failing_exc_info(backend)
    with pytest.raises(BackendError, match="failure 4"):
        await retry(max_retries=3, retry_delay=0.1, sleep=sleeps)(None, info)
    assert sleeps == pytest.approx([0.1, 0.2, 0.4])


async def test_retry_with_real_sleep_and_tiny_delays() -> None:
    backend = FlakyBackend(failures=2)
    info = await failing_exc_info(backend)
    decision = await retry(max_retries=2, retry_delay=0.001)(None, info)
    assert isinstance(decision, Decision) and decision.allowed


async def test_retry_zero_retries_reraises_the_original() -> None:
    backend = FlakyBackend(failures=1)
    info = await failing_exc_info(backend)
    with pytest.raises(BackendError) as caught:
        await retry(max_retries=0, sleep=Sleeps())(None, info)
    assert caught.value is info["exception"]
    assert backend.calls == 1


async def test_retry_leaves_unlisted_errors_alone() -> None:
    backend = FlakyBackend(failures=1, error=ValueError)
    sleeps = Sleeps()
    info = await failing_exc_info(backend)
    with pytest.raises(ValueError) as caught:
        await retry(retry_on=(BackendError,), sleep=sleeps)(None, info)
    assert caught.value is info["exception"] and sleeps == [] and backend.calls == 1


async def test_retry_stops_at_an_unlisted_error_during_retries() -> None:
    backend = FlakyBackend(failures=1)
    info = await failing_exc_info(backend)
    backend.failures, backend.error = 5, ValueError
    with pytest.raises(ValueError, match="failure 2"):
        await retry(retry_on=BackendError, sleep=Sleeps())(None, info)
    assert backend.calls == 2


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"backoff_multiplier": 3.0}, [0.1, 0.3, 0.9]),
        ({"backoff": ConstantBackoff}, [0.1, 0.1, 0.1]),
    ],
)
async def test_retry_backoff_choices(kwargs: dict[str, Any], expected: list[float]) -> None:
    sleeps = Sleeps()
    info = await failing_exc_info(FlakyBackend(failures=100))
    with pytest.raises(BackendError):
        await retry(retry_delay=0.1, sleep=sleeps, **kwargs)(None, info)
    assert sleeps == pytest.approx(expected)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"max_retries": -1}, r"retry\(max_retries=-1\): must be a whole number >= 0"),
        ({"max_retries": True}, r"max_retries=True"),
        ({"retry_delay": -0.1}, r"retry\(retry_delay=-0.1\): must be a finite number >= 0"),
        ({"retry_delay": float("nan")}, r"retry_delay=nan"),
        ({"backoff_multiplier": 0.5}, r"backoff_multiplier=0.5\): must be a finite number >= 1"),
        ({"backoff": 2}, r"backoff=2\): must be a callable \(attempt, base_delay\)"),
        ({"backoff": ConstantBackoff, "backoff_multiplier": 2.0}, r"give one or the other"),
        ({"retry_on": "BackendError"}, r"retry_on='BackendError'\): must be an exception class"),
    ],
)
def test_retry_settings_are_validated(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigurationError, match=fragment):
        retry(**kwargs)


# -- failover ---------------------------------------------------------------------------


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(0.0)


async def test_failover_opens_the_breaker_then_skips_the_primary(clock: ManualClock) -> None:
    primary, spare = InMemoryBackend(namespace="primary"), InMemoryBackend(namespace="spare")
    breaker = CircuitBreaker(
        failure_threshold=2, recovery_timeout=30.0, success_threshold=1, clock=clock
    )
    sleeps = Sleeps()
    handler = failover(spare, breaker=breaker, max_retries=2, retry_delay=0.05, sleep=sleeps)
    with patch.object(primary, "increment_with_ttl", side_effect=BackendError("down")) as broken:
        info = await failing_exc_info(primary)
        for expected_calls in (3, 5):
            decision = await handler(None, info)
            assert isinstance(decision, Decision) and decision.allowed
            assert broken.call_count == expected_calls
        assert sleeps == pytest.approx([0.05, 0.1, 0.05, 0.1])
        assert breaker.is_open

        third = await handler(None, info)
        assert isinstance(third, Decision) and not third.allowed
        assert broken.call_count == 5 and len(sleeps) == 4

    clock.advance(30)
    recovered = await handler(None, info)
    assert isinstance(recovered, Decision) and recovered.allowed
    assert breaker.is_closed
    assert await remaining(primary) == 1 and await remaining(spare) == 0


async def test_failover_records_a_success_on_the_first_good_retry(clock: ManualClock) -> None:
    primary, spare = FlakyBackend(failures=2), InMemoryBackend(namespace="spare")
    breaker = CircuitBreaker(failure_threshold=2, clock=clock)
    await breaker.record_failure()
    info = await failing_exc_info(primary)
    decision = await failover(spare, breaker=breaker, max_retries=2, sleep=Sleeps())(None, info)
    assert isinstance(decision, Decision) and decision.allowed
    assert (await breaker.info())["failure_count"] == 0
    assert await remaining(primary) == 1 and await remaining(spare) == 2


async def test_failover_without_retries_records_a_failure_and_falls_back(
    clock: ManualClock,
) -> None:
    primary, spare = FlakyBackend(failures=100), InMemoryBackend(namespace="spare")
    breaker = CircuitBreaker(failure_threshold=1, clock=clock)
    info = await failing_exc_info(primary)
    decision = await failover(spare, breaker=breaker, max_retries=0)(None, info)
    assert isinstance(decision, Decision) and decision.allowed
    assert breaker.is_open and primary.calls == 1


async def test_failover_while_probing_sends_other_callers_to_the_spare(clock: ManualClock) -> None:
    primary, spare = FlakyBackend(failures=100), InMemoryBackend(namespace="spare")
    breaker = CircuitBreaker(
        failure_threshold=1, recovery_timeout=5.0, success_threshold=1, clock=clock
    )
    await breaker.force_open()
    clock.advance(5)
    release = asyncio.Event()

    async def held_sleep(seconds: float) -> None:
        await release.wait()

    handler = failover(spare, breaker=breaker, max_retries=1, sleep=held_sleep)
    info = await failing_exc_info(primary)
    primary.failures = 0
    probe = asyncio.ensure_future(handler(None, info))
    await asyncio.sleep(0)
    assert breaker.is_half_open
    calls = primary.calls
    other = await handler(None, info)
    assert isinstance(other, Decision) and other.allowed
    assert primary.calls == calls and await remaining(spare) == 1
    release.set()
    probed = await probe
    assert isinstance(probed, Decision) and probed.allowed
    assert breaker.is_closed


async def test_failover_cancelled_while_retrying_counts_as_a_failure(clock: ManualClock) -> None:
    primary, spare = FlakyBackend(failures=100), InMemoryBackend(namespace="spare")
    breaker = CircuitBreaker(failure_threshold=1, recovery_timeout=5.0, clock=clock)

    async def cancelled_sleep(seconds: float) -> None:
        raise asyncio.CancelledError

    info = await failing_exc_info(primary)
    with pytest.raises(asyncio.CancelledError):
        await failover(spare, breaker=breaker, sleep=cancelled_sleep)(None, info)
    assert breaker.is_open and (await breaker.info())["probe_in_progress"] is False


async def test_failover_fallback_failure_is_chained(clock: ManualClock) -> None:
    primary, spare = FlakyBackend(failures=100), InMemoryBackend(namespace="spare")
    await spare.initialize()
    await spare.close()
    info = await failing_exc_info(primary)
    with pytest.raises(BackendConnectionError) as caught:
        await failover(spare, breaker=CircuitBreaker(clock=clock), sleep=Sleeps())(None, info)
    assert caught.value.__cause__ is info["exception"]


def test_failover_makes_its_own_breaker_and_validates_settings() -> None:
    spare = InMemoryBackend()
    failover(spare)
    with pytest.raises(
        ConfigurationError, match=r"failover\(backend=None\): must be a ThrottleBackend"
    ):
        failover(None)  # type: ignore[arg-type]
    with pytest.raises(
        ConfigurationError, match=r"failover\(breaker='open'\): must be a CircuitBreaker or None"
    ):
        failover(spare, breaker="open")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"failover\(max_retries=-2\)"):
        failover(spare, max_retries=-2)
    with pytest.raises(ConfigurationError, match=r"failover\(retry_delay=-1\)"):
        failover(spare, retry_delay=-1)
    with pytest.raises(ConfigurationError, match=r"failover\(backoff='fast'\)"):
        failover(spare, backoff="fast")  # type: ignore[arg-type]
