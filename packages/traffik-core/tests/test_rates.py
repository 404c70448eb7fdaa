"""`Rate`: construction, validation and the string grammar."""

from __future__ import annotations

import copy
import math
import pickle

import pytest

from traffik import Rate
from traffik.exceptions import ConfigurationError
from traffik.rates import MAX_LIMIT, MAX_PERIOD_MS, UNLIMITED, parse_rates


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
        # traffik 1.2's grammar (spec/core.md §1.2): spaces around `per` are optional, and
        # the limit is read as Python's `int` reads it: a `+`, `_` between digit groups.
        ("2 persecond", 2, 1_000),
        ("5per min", 5, 60_000),
        ("5per5s", 5, 5_000),
        ("+5/s", 5, 1_000),
        ("1_000/s", 1000, 1_000),
        ("1_000_000 per 2 hours", 1_000_000, 7_200_000),
        ("007/0001s", 7, 1_000),
        # spec/core.md §1.2's accepted examples, and every unit token of its table.
        ("5/m", 5, 60_000),
        ("10/30 seconds", 10, 30_000),
        ("1000/500ms", 1000, 500),
        ("50/d", 50, 86_400_000),
        ("1000/30days", 1000, 30 * 86_400_000),
        ("5/millisecond", 5, 1),
        ("5/2milliseconds", 5, 2),
        ("5/sec", 5, 1_000),
        ("5/second", 5, 1_000),
        ("5/minute", 5, 60_000),
        ("5/minutes", 5, 60_000),
        ("5/hr", 5, 3_600_000),
        ("5/hours", 5, 3_600_000),
        ("5/day", 5, 86_400_000),
        ("5 PER MINUTE", 5, 60_000),
        ("9007199254740991/s", MAX_LIMIT, 1_000),
        ("1/36500d", 1, MAX_PERIOD_MS),
    ],
)
def test_parse(text: str, limit: int, expire: int) -> None:
    rate = Rate.parse(text)
    assert (rate.limit, rate.expire) == (limit, expire)


@pytest.mark.parametrize("text", ["unlimited", "Unlimited", " inf ", "none"])
def test_unlimited_can_be_written(text: str) -> None:
    assert Rate.parse(text) is UNLIMITED
    assert Rate.parse(text).unlimited


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("5/fortnight", "unknown unit 'fortnight'"),
        ("5/w", "unknown unit 'w'"),
        # traffik 1.2's grammar has no weeks, months, years or these plurals: the message
        # says how to write the periods other limiters take.
        ("5/week", "unknown unit 'week'; use ms, s, min, h, d"),
        ("5/week", "a week is '7d'"),
        ("5/mo", "unknown unit 'mo'"),
        ("5/month", "write days: '30d', '365d'"),
        ("5/y", "unknown unit 'y'"),
        ("5/year", "write days: '30d', '365d'"),
        ("5/secs", "unknown unit 'secs'; use ms, s, min, h, d"),
        ("5/mins", "unknown unit 'mins'"),
        ("5/hrs", "unknown unit 'hrs'"),
        ("0/0s", "longer than zero"),
        ("abc", "expected '<limit>/<period>'"),
        ("5/10/s", "expected '<limit>/<period>'"),
        ("5s", "expected '<limit>/<period>'"),
        ("1.5/s", "not a whole number"),
        ("-1/s", "limit '-1' is negative"),
        ("1__000/s", "not a whole number"),
        ("_1/s", "not a whole number"),
        ("1_/s", "not a whole number"),
        ("+-1/s", "not a whole number"),
        ("5/+5s", "is not '[n]unit'"),
        ("5/1_0s", "is not '[n]unit'"),
        ("5/per min", "expected '<limit>/<period>'"),
        # Unicode digits are refused in the limit and in the period alike.
        ("\uff11\uff10/s", "limit '\uff11\uff10' is not a whole number (ASCII digits)"),
        ("\u0661\u0660/s", "is not a whole number (ASCII digits)"),
        ("10/\uff12s", "period '\uff12s' is not '[n]unit' (n in ASCII digits)"),
        ("10/\u0662 min", "is not '[n]unit' (n in ASCII digits)"),
        # The bounds of `Rate` itself: named, with the value.
        ("10/999999999999d", "the period of 86399999999913600000 ms is longer than 36500 days"),
        ("1/36501d", "3153686400000 ms is longer than 36500 days (3153600000000 ms"),
        ("9007199254740992/s", "the limit 9007199254740992 is above 9007199254740991"),
        ("10000000000000000000000000/min", "is above 9007199254740991 (2**53 - 1, MAX_LIMIT)"),
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


def test_unicode_digits_never_parse() -> None:
    assert parse_rates("10/s") == (Rate(limit=10, seconds=1),)
    for text in ("10/\uff12s", "\uff11\uff10/s", "10/\uff12s;5/min"):
        with pytest.raises(ConfigurationError, match="ASCII digits"):
            parse_rates(text)


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


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"limit": 10**30, "seconds": 1}, f"the limit {10**30} is above {MAX_LIMIT}"),
        ({"limit": MAX_LIMIT + 1, "seconds": 1}, "(2**53 - 1, MAX_LIMIT)"),
        ({"limit": 10, "days": 999_999_999_999}, "is longer than 36500 days"),
        ({"limit": 1, "milliseconds": MAX_PERIOD_MS + 1}, f"({MAX_PERIOD_MS} ms, MAX_PERIOD_MS)"),
    ],
)
def test_one_bound_for_limit_and_period_whoever_builds_the_rate(
    kwargs: dict, fragment: str
) -> None:
    with pytest.raises(ConfigurationError) as info:
        Rate(**kwargs)
    assert fragment in str(info.value)
    assert f"Rate(limit={kwargs['limit']}" in str(info.value)
    if kwargs["limit"] > MAX_LIMIT:  # the string grammar says the same
        with pytest.raises(ConfigurationError, match="MAX_LIMIT"):
            Rate.parse(f"{kwargs['limit']}/1ms")
    biggest = Rate(limit=MAX_LIMIT, milliseconds=MAX_PERIOD_MS)
    assert Rate.parse(f"{MAX_LIMIT}/36500d") == biggest


def test_rate_cannot_be_subclassed() -> None:
    with pytest.raises(RuntimeError, match="Rate cannot be subclassed"):

        class Sloppy(Rate):
            pass


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


@pytest.mark.parametrize(
    "text",
    [
        "10/s,1000/day",
        "10 per second, 1000 per day",
        "10/s|1000/d",
        "10/s;1000/day",
        "10/s 1000/day",
        "10 per second 1000 per day",
    ],
)
def test_several_rates_in_another_syntax_say_how_to_join_them(text: str) -> None:
    """limits and slowapi join several rates with `,` or `|`; Traffik with `;`. A space
    alone between two rates is a newcomer's guess too."""
    with pytest.raises(ConfigurationError) as info:
        parse_rates(text) if ";" not in text else Rate.parse(text)
    assert "several rates are joined by ';'" in str(info.value)
    assert repr(text) in str(info.value)


def test_traffik12_attributes_and_equality() -> None:
    assert not Rate(limit=1, milliseconds=1000).is_subsecond  # 1000 ms is not sub-second
    assert Rate(limit=1, milliseconds=999).is_subsecond
    rate = Rate.parse("1440/d")
    assert (rate.rpd, rate.rph, rate.rpm) == (1440, 60, 1)
    assert (Rate().rpm, Rate().rph, Rate().rpd) == (math.inf, math.inf, math.inf)
    assert rate != "1440/d" and rate != 1440 and Rate() != None  # noqa: E711
    assert repr(rate) == "Rate(limit=1440, milliseconds=86400000)"
    assert copy.copy(rate) is rate
    with pytest.raises(TypeError):
        Rate(5, seconds=1)  # type: ignore[misc]  # keyword-only, as in traffik 1.2


@pytest.mark.parametrize(
    ("text", "hint"),
    [
        ("10/1.5s", "write '1.5s' as '1500ms'"),
        ("10/0.5min", "write '0.5min' as '30s'"),
        ("10/.25h", "write '.25h' as '15min'"),
        ("10/1.5d", "write '1.5d' as '36h'"),
        ("10/0.0001s", "a period is a whole number of ms, at least 1"),
    ],
)
def test_a_period_with_a_fraction_is_told_in_whole_units(text: str, hint: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        Rate.parse(text)
    assert hint in str(info.value) and repr(text) in str(info.value)


def test_a_period_with_a_huge_fraction_is_still_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError):  # (not int()'s digit limit: a ValueError)
        Rate.parse("5/1." + "1" * 5000 + "s")
