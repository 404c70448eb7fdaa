"""`Rate`: construction, validation and the string grammar."""

from __future__ import annotations

import copy
import math
import pickle

import pytest

from traffik import Rate
from traffik.rates import UNLIMITED


@pytest.mark.parametrize(
    ("text", "limit", "expire"),
    [
        ("100/min", 100, 60_000),
        ("5/s", 5, 1_000),
        ("10/30s", 10, 30_000),
        ("1000/hour", 1000, 3_600_000),
        ("500/day", 500, 86_400_000),
        ("200/500ms", 200, 500),
        ("5 per minute", 5, 60_000),
        ("5 / min", 5, 60_000),
        ("  10  /  5s  ", 10, 5_000),
        ("100/MIN", 100, 60_000),
        ("1/5d", 1, 5 * 86_400_000),
        ("3/2h", 3, 7_200_000),
        ("7/ 10 seconds", 7, 10_000),
    ],
)
def test_parse(text: str, limit: int, expire: int) -> None:
    rate = Rate.parse(text)
    assert (rate.limit, rate.expire) == (limit, expire)


@pytest.mark.parametrize("text", ["unlimited", "Unlimited", " inf "])
def test_unlimited_can_be_written(text: str) -> None:
    assert Rate.parse(text) is UNLIMITED
    assert Rate.parse(text).unlimited


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("5/fortnight", "unknown unit 'fortnight'"),
        ("5/w", "unknown unit 'w'"),
        ("abc", "expected '<limit>/<period>'"),
        ("5/10/s", "expected '<limit>/<period>'"),
        ("5s", "expected '<limit>/<period>'"),
        ("1.5/s", "not a whole number"),
        ("-1/s", "not a whole number"),
        ("0/s", "a limit of 0 admits nothing"),
        ("5/0s", "longer than zero"),
        ("5/5s@", "is not '[n]unit'"),
        ("", "empty"),
    ],
)
def test_bad_strings_quote_themselves_and_say_what_is_valid(text: str, fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        Rate.parse(text)
    message = str(info.value)
    assert fragment in message
    assert repr(text) in message


def test_non_string_is_rejected() -> None:
    with pytest.raises(ValueError, match="expected a string"):
        Rate.parse(123)  # type: ignore[arg-type]


def test_keyword_construction_and_derived_values() -> None:
    rate = Rate(limit=120, minutes=1)
    assert rate.expire == 60_000 and rate.rps == 2 and rate.rpm == 120 and not rate.is_subsecond
    assert Rate(limit=1, days=1).expire == 86_400_000
    assert Rate(limit=5, milliseconds=500).is_subsecond
    assert Rate().unlimited and Rate().rps == math.inf


@pytest.mark.parametrize(
    "kwargs",
    [
        {"limit": True, "seconds": 1},
        {"limit": 1, "seconds": 1.5},
        {"limit": -1, "seconds": 1},
        {"limit": 1, "seconds": -1, "minutes": 1},
        {"limit": 0, "seconds": 1},
        {"limit": 3},
    ],
)
def test_invalid_keywords(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        Rate(**kwargs)


def test_immutable_hashable_and_equal_by_value() -> None:
    rate = Rate.parse("10/min")
    with pytest.raises(AttributeError):
        rate.limit = 3  # type: ignore[misc]
    assert rate == Rate(limit=10, seconds=60)
    assert len({rate, Rate(limit=10, minutes=1), Rate.parse("10 per minute")}) == 1
    assert Rate.parse("10/min") is Rate.parse("10/min")
    assert pickle.loads(pickle.dumps(rate)) == rate
    assert copy.deepcopy(rate) == rate
    assert (
        str(rate) == "10/min"
        and str(Rate.parse("3/500ms")) == "3/500ms"
        and str(Rate()) == "unlimited"
    )
    assert repr(Rate()) == "Rate(unlimited)"
