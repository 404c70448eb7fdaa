"""`CircuitBreaker`: its three states and their transitions, on a clock the tests move."""

from __future__ import annotations

import asyncio
import math

import pytest

import traffik
from traffik import error_handlers
from traffik.circuit_breaker import CircuitBreaker, CircuitState
from traffik.clock import ManualClock
from traffik.exceptions import ConfigurationError

pytestmark = pytest.mark.anyio


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1000.0)


@pytest.fixture
def breaker(clock: ManualClock) -> CircuitBreaker:
    return CircuitBreaker(
        failure_threshold=3, recovery_timeout=30.0, success_threshold=2, clock=clock
    )


async def open_it(breaker: CircuitBreaker) -> None:
    for _ in range(breaker.failure_threshold):
        await breaker.record_failure()


def test_state_values_are_strings_and_exports_agree() -> None:
    assert [s.value for s in CircuitState] == ["closed", "open", "half_open"]
    assert traffik.CircuitBreaker is error_handlers.CircuitBreaker is CircuitBreaker
    assert traffik.CircuitState is error_handlers.CircuitState is CircuitState


async def test_starts_closed_and_allows(breaker: CircuitBreaker) -> None:
    assert breaker.is_closed and breaker.state is CircuitState.CLOSED
    assert await breaker.allow_execution()
    assert await breaker.info() == {
        "state": "closed",
        "failures": 0,
        "successes": 0,
        "failure_count": 0,
        "success_count": 0,
        "opened_at": None,
        "probe_in_progress": False,
    }


async def test_a_success_resets_the_failures_while_closed(breaker: CircuitBreaker) -> None:
    await breaker.record_failure()
    await breaker.record_failure()
    await breaker.record_success()
    await breaker.record_failure()
    await breaker.record_failure()
    assert breaker.is_closed
    assert (await breaker.info())["failure_count"] == 2


async def test_opens_at_the_threshold_and_refuses_until_the_timeout(
    breaker: CircuitBreaker, clock: ManualClock
) -> None:
    await open_it(breaker)
    assert breaker.is_open
    info = await breaker.info()
    assert info["state"] == "open" and info["opened_at"] == 1000.0 and info["failures"] == 3
    clock.advance(29.9)
    assert not await breaker.allow_execution()
    assert breaker.is_open


async def test_after_the_timeout_one_probe_runs_at_a_time(
    breaker: CircuitBreaker, clock: ManualClock
) -> None:
    await open_it(breaker)
    clock.advance(30)
    assert breaker.is_open  # the state moves only when a caller asks
    assert await breaker.allow_execution()
    assert breaker.is_half_open
    assert (await breaker.info())["probe_in_progress"] is True
    assert not await breaker.allow_execution()
    assert not await breaker.allow_execution()


async def test_enough_successful_probes_close_it(
    breaker: CircuitBreaker, clock: ManualClock
) -> None:
    await open_it(breaker)
    clock.advance(30)
    assert await breaker.allow_execution()
    await breaker.record_success()
    assert breaker.is_half_open
    info = await breaker.info()
    assert info["success_count"] == 1 and info["probe_in_progress"] is False
    assert await breaker.allow_execution()  # the next caller is the next probe
    await breaker.record_success()
    assert breaker.is_closed
    assert await breaker.info() == {
        "state": "closed",
        "failures": 0,
        "successes": 0,
        "failure_count": 0,
        "success_count": 0,
        "opened_at": None,
        "probe_in_progress": False,
    }


async def test_a_failed_probe_opens_it_again(breaker: CircuitBreaker, clock: ManualClock) -> None:
    await open_it(breaker)
    clock.advance(30)
    assert await breaker.allow_execution()
    await breaker.record_success()
    assert await breaker.allow_execution()
    await breaker.record_failure()
    assert breaker.is_open
    info = await breaker.info()
    assert (
        info["opened_at"] == 1030.0 and info["success_count"] == 0 and not info["probe_in_progress"]
    )
    clock.advance(29)
    assert not await breaker.allow_execution()
    clock.advance(1)
    assert await breaker.allow_execution()


async def test_force_open_and_force_close(breaker: CircuitBreaker, clock: ManualClock) -> None:
    await breaker.force_open()
    assert breaker.is_open and not await breaker.allow_execution()
    assert (await breaker.info())["opened_at"] == 1000.0
    await breaker.force_close()
    assert breaker.is_closed and await breaker.allow_execution()
    await open_it(breaker)
    clock.advance(30)
    await breaker.allow_execution()
    await breaker.force_close()
    assert breaker.is_closed and (await breaker.info())["probe_in_progress"] is False


async def test_a_success_reported_while_open_changes_nothing(breaker: CircuitBreaker) -> None:
    await open_it(breaker)
    await breaker.record_success()
    assert breaker.is_open


def test_one_breaker_serves_several_event_loops(clock: ManualClock) -> None:
    breaker = CircuitBreaker(failure_threshold=1, recovery_timeout=1.0, clock=clock)
    asyncio.run(breaker.record_failure())
    clock.advance(1)
    assert asyncio.run(breaker.allow_execution())
    assert not asyncio.run(breaker.allow_execution())


def test_defaults_and_repr() -> None:
    breaker = CircuitBreaker()
    assert (breaker.failure_threshold, breaker.recovery_timeout, breaker.success_threshold) == (
        5,
        60.0,
        2,
    )
    assert repr(breaker) == (
        "CircuitBreaker(state='closed', failures=0, failure_threshold=5, recovery_timeout=60.0, "
        "success_threshold=2)"
    )


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"failure_threshold": 0}, r"failure_threshold=0\): must be a whole number >= 1"),
        ({"failure_threshold": 2.5}, r"failure_threshold=2.5\)"),
        ({"success_threshold": True}, r"success_threshold=True\)"),
        ({"recovery_timeout": 0}, r"recovery_timeout=0\): must be a finite number of seconds > 0"),
        ({"recovery_timeout": math.inf}, r"recovery_timeout=inf\)"),
        ({"recovery_timeout": "60"}, r"recovery_timeout='60'\)"),
        ({"clock": 5}, r"clock=5\): must be a callable"),
    ],
)
def test_bad_settings_fail_at_construction(kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigurationError, match=fragment):
        CircuitBreaker(**kwargs)  # type: ignore[arg-type]
