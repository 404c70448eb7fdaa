"""`traffik.backoff`: the delay formulas, the cap, the jitter, and validation."""

from __future__ import annotations

import math

import pytest

from traffik import backoff
from traffik.backoff import (
    DEFAULT_BACKOFF,
    ConstantBackoff,
    ExponentialBackoff,
    JitterType,
    LinearBackoff,
    LogarithmicBackoff,
)
from traffik.exceptions import ConfigurationError


def test_all_is_sorted_and_complete() -> None:
    assert backoff.__all__ == [
        "DEFAULT_BACKOFF",
        "BackoffStrategy",
        "ConstantBackoff",
        "ExponentialBackoff",
        "JitterType",
        "LinearBackoff",
        "LogarithmicBackoff",
    ]


def test_constant() -> None:
    assert [ConstantBackoff(n, 0.5) for n in (1, 2, 10)] == [0.5, 0.5, 0.5]


def test_linear() -> None:
    assert [LinearBackoff()(n, 0.5) for n in (1, 2, 3)] == [0.5, 1.5, 2.5]
    assert [LinearBackoff(increment=0.25)(n, 0.0) for n in (1, 2, 3)] == [0.0, 0.25, 0.5]


def test_exponential_grows_then_caps() -> None:
    assert [ExponentialBackoff()(n, 0.1) for n in (1, 2, 3)] == pytest.approx([0.1, 0.2, 0.4])
    assert [ExponentialBackoff(3.0)(n, 1.0) for n in (1, 2, 3)] == [1.0, 3.0, 9.0]
    capped = ExponentialBackoff(2.0, max_delay=5.0)
    assert [capped(n, 1.0) for n in (3, 4, 5)] == [4.0, 5.0, 5.0]


def test_exponential_far_attempts_do_not_overflow() -> None:
    assert ExponentialBackoff(max_delay=60.0)(100_000, 1.0) == 60.0
    assert ExponentialBackoff()(100_000, 1.0) == math.inf


def test_logarithmic() -> None:
    assert [LogarithmicBackoff()(n, 1.0) for n in (1, 3, 7)] == pytest.approx([1.0, 2.0, 3.0])
    assert LogarithmicBackoff(base=10.0)(9, 2.0) == pytest.approx(2.0)


def test_every_backoff_waits_the_base_delay_before_the_first_delayed_attempt() -> None:
    for strategy in (ConstantBackoff, LinearBackoff(), ExponentialBackoff(), LogarithmicBackoff()):
        assert strategy(1, 0.1) == pytest.approx(0.1)


def test_full_jitter_stays_within_zero_and_the_capped_delay() -> None:
    strategy = ExponentialBackoff(2.0, max_delay=1.0, jitter=JitterType.FULL)
    samples = [strategy(10, 1.0) for _ in range(200)]
    assert all(0.0 <= s <= 1.0 for s in samples)
    assert len(set(samples)) > 1


def test_equal_jitter_keeps_at_least_half_the_delay() -> None:
    strategy = LinearBackoff(increment=1.0, jitter=JitterType.EQUAL)
    samples = [strategy(3, 2.0) for _ in range(200)]
    assert all(2.0 <= s <= 4.0 for s in samples)
    assert len(set(samples)) > 1


@pytest.mark.parametrize(
    ("jitter", "expected"),
    [
        (True, JitterType.EQUAL),
        (False, JitterType.NONE),
        ("full", JitterType.FULL),
        (JitterType.EQUAL, JitterType.EQUAL),
    ],
)
def test_jitter_spellings(jitter: object, expected: JitterType) -> None:
    assert LogarithmicBackoff(jitter=jitter).jitter is expected  # type: ignore[arg-type]


def test_default_backoff_doubles_up_to_a_minute_with_full_jitter() -> None:
    assert ExponentialBackoff(2.0, max_delay=60.0, jitter=JitterType.FULL) == DEFAULT_BACKOFF
    assert all(0.0 <= DEFAULT_BACKOFF(50, 1.0) <= 60.0 for _ in range(50))


def test_repr_and_equality() -> None:
    assert (
        repr(LinearBackoff(2.0)) == "LinearBackoff(increment=2.0, jitter=<JitterType.NONE: 'none'>)"
    )
    assert ExponentialBackoff(3) == ExponentialBackoff(3.0)
    assert ExponentialBackoff(3) != ExponentialBackoff(2)
    assert len({ExponentialBackoff(3), ExponentialBackoff(3.0)}) == 1


@pytest.mark.parametrize(
    ("factory", "fragment"),
    [
        (
            lambda: LinearBackoff(increment=-1),
            r"LinearBackoff\(increment=-1\): must be a finite number >= 0",
        ),
        (lambda: LinearBackoff(increment=math.nan), r"increment=nan"),
        (
            lambda: ExponentialBackoff(multiplier=0.5),
            r"multiplier=0.5\): must be a finite number >= 1",
        ),
        (lambda: ExponentialBackoff(multiplier=True), r"multiplier=True"),
        (lambda: ExponentialBackoff(max_delay=0), r"max_delay=0\): must be a finite number > 0"),
        (lambda: ExponentialBackoff(max_delay=math.inf), r"max_delay=inf"),
        (lambda: LogarithmicBackoff(base=1), r"base=1\): must be a finite number > 1"),
        (lambda: LogarithmicBackoff(base="2"), r"base='2'"),  # type: ignore[arg-type]
        (
            lambda: LinearBackoff(jitter="some"),
            r"jitter='some'\): use a JitterType, one of 'none', 'full', 'equal'",
        ),
    ],
)
def test_bad_parameters_fail_at_construction(factory: object, fragment: str) -> None:
    with pytest.raises(ConfigurationError, match=fragment):
        factory()  # type: ignore[operator]


@pytest.mark.parametrize(
    "strategy", [ConstantBackoff, LinearBackoff(), ExponentialBackoff(), LogarithmicBackoff()]
)
def test_bad_call_arguments_are_refused(strategy: backoff.BackoffStrategy) -> None:
    with pytest.raises(ConfigurationError, match=r"attempt=0 must be a whole number >= 1"):
        strategy(0, 1.0)
    with pytest.raises(
        ConfigurationError, match=r"base_delay=-1.0\): must be a finite number >= 0"
    ):
        strategy(1, -1.0)
