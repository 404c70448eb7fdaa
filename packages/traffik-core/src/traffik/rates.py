"""`Rate`: how many units a client may spend per period, and the string grammar that builds one."""

from __future__ import annotations

import functools
import math
import numbers
import re
from collections.abc import Sequence
from fractions import Fraction
from typing import Any, Union

from traffik.exceptions import ConfigurationError

__all__ = [
    "MAX_LIMIT",
    "MAX_PERIOD_MS",
    "MAX_RATES",
    "MAX_RATE_TEXT",
    "UNLIMITED",
    "Rate",
    "RateLike",
    "RatesLike",
    "parse_rates",
]

_MS_PER = {
    "ms": 1,
    "millisecond": 1,
    "milliseconds": 1,
    "s": 1_000,
    "sec": 1_000,
    "second": 1_000,
    "seconds": 1_000,
    "m": 60_000,
    "min": 60_000,
    "minute": 60_000,
    "minutes": 60_000,
    "h": 3_600_000,
    "hr": 3_600_000,
    "hour": 3_600_000,
    "hours": 3_600_000,
    "d": 86_400_000,
    "day": 86_400_000,
    "days": 86_400_000,
}
_UNITS_HINT = "ms, s, min, h, d (or their long forms: second, minute, hour, day)"
_LONGER = {
    **dict.fromkeys(("w", "wk", "week", "weeks"), "; a week is '7d'"),
    **dict.fromkeys(
        ("mo", "month", "months", "y", "yr", "year", "years"),
        "; months and years differ in length, so write days: '30d', '365d'",
    ),
}
"""Units some other limiters take, and how to write their periods here."""
_EXAMPLES = "'100/min', '5/s', '10/30s', '200/500ms', '5 per minute' or 'unlimited'"
_SPLIT = re.compile(r"\s*(?:/|per)\s*")
_LIMIT = re.compile(r"[+-]?[0-9]+(?:_[0-9]+)*")
_PERIOD = re.compile(r"([0-9]+)?\s*([a-z]+)")
_WHOLE_UNITS = (("d", 86_400_000), ("h", 3_600_000), ("min", 60_000), ("s", 1000), ("ms", 1))
_FRACTION = re.compile(r"([0-9]*)\.([0-9]+)\s*([a-z]+)")
_SEVERAL_HINT = "; several rates are joined by ';' in a throttle's rate= (like '10/s;1000/day')"
_UNLIMITED_WORDS = frozenset({"unlimited", "inf", "none"})

MAX_LIMIT = 2**53 - 1
"""The largest limit of a rate: every store keeps it exactly (Lua numbers are doubles)."""

MAX_PERIOD_MS = 36_500 * 86_400_000
"""The longest period of a rate, in milliseconds: 36500 days (about 100 years). A deadline of
now plus the period stays exact in every store (a double, a signed 64-bit SQLite INTEGER)."""

_MAX_PERIOD_TEXT = f"36500 days ({MAX_PERIOD_MS} ms, MAX_PERIOD_MS)"


_KEYWORD_MS = {
    "milliseconds": 1,
    "seconds": 1_000,
    "minutes": 60_000,
    "hours": 3_600_000,
    "days": 86_400_000,
}
"""`Rate`'s period keywords, in milliseconds."""


def _check_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationError(
            f"Rate {name}={value!r}: must be a whole number (int), not "
            f"{type(value).__name__}{_whole_hint(name, value)}"
        )
    if value < 0:
        raise ConfigurationError(f"Rate {name}={value!r}: must be zero or positive")
    return value


def _whole_hint(name: str, value: object) -> str:
    """For a number that is not an int (`seconds=1.5`): the same amount as a whole number
    (`milliseconds=1500`), or what is valid when there is none. A float counts as written:
    `seconds=0.1` is 100 ms."""
    if isinstance(value, bool) or not isinstance(value, numbers.Number):
        return ""
    valid = (
        "a limit is a whole number of units"
        if name == "limit"
        else "a period is a whole number of milliseconds"
    )
    try:
        exact = Fraction(value) if isinstance(value, numbers.Rational) else Fraction(str(value))
    except (ValueError, OverflowError):  # nan, inf, complex
        return f"; {valid}"
    if exact < 0:
        return "; it must also be zero or positive"
    if exact.denominator == 1:
        return f"; write {name}={exact.numerator}"
    if name == "limit":
        return f"; {valid}"
    ms = exact * _KEYWORD_MS[name]
    if ms.denominator == 1:
        return f"; {name}={value!r} is milliseconds={ms.numerator}"
    return f"; {valid}, and {name}={value!r} is {float(ms):g} ms"


def _out_of_bounds(limit: int, expire: int) -> str:
    """What is wrong with a limit or a period past `MAX_LIMIT` or `MAX_PERIOD_MS` ("": nothing)."""
    if limit > MAX_LIMIT:
        return (
            f"the limit {limit} is above {MAX_LIMIT} (2**53 - 1, MAX_LIMIT), the largest every "
            "store keeps exactly"
        )
    if expire > MAX_PERIOD_MS:
        return (
            f"the period of {expire} ms is longer than {_MAX_PERIOD_TEXT}, the longest a rate "
            "may have"
        )
    return ""


class Rate:
    """`limit` units per `expire` milliseconds; `Rate()` is unlimited.

    Build one with keywords (`Rate(limit=100, minutes=1)`) or from a string
    (`Rate.parse("100/min")`). Rates are immutable, hashable and compare by value.

    The period is the sum of `milliseconds`, `seconds`, `minutes`, `hours` and `days`
    (`Rate(limit=5, minutes=1, seconds=30)` is 5 per 90 seconds).

    Args:
        limit: How many units a client may spend per period (a whole number, zero or
            more). `0` with no period is unlimited.
        milliseconds: Milliseconds added to the period.
        seconds: Seconds added to the period.
        minutes: Minutes added to the period.
        hours: Hours added to the period.
        days: Days added to the period.

    Attributes:
        limit: How many units a client may spend per period (`0` when unlimited).
        expire: The period, in milliseconds (`0` when unlimited).
        unlimited: Whether the rate admits everything (`Rate()`).
        is_subsecond: Whether the period is shorter than one second.
        rps: The limit per second (`math.inf` when unlimited).
        rpm: The limit per minute (`math.inf` when unlimited).
        rph: The limit per hour (`math.inf` when unlimited).
        rpd: The limit per day (`math.inf` when unlimited).

    Raises:
        ConfigurationError: When an argument is not a whole number (`bool` included) or
            is negative, when `limit` is `0` but a period is given, when `limit` is
            positive but the period is zero, or when `limit` is above `MAX_LIMIT` or the
            period longer than `MAX_PERIOD_MS`.
        RuntimeError: When a class derives from `Rate` (it is final: throttles, stores and
            caches rely on its value semantics).
    """

    __slots__ = ("expire", "is_subsecond", "limit", "rpd", "rph", "rpm", "rps", "unlimited")

    limit: int
    expire: int
    unlimited: bool
    is_subsecond: bool
    rps: float
    rpm: float
    rph: float
    rpd: float

    def __init__(
        self,
        *,
        limit: int = 0,
        milliseconds: int = 0,
        seconds: int = 0,
        minutes: int = 0,
        hours: int = 0,
        days: int = 0,
    ) -> None:
        limit = _check_int("limit", limit)
        expire = (
            _check_int("milliseconds", milliseconds)
            + 1_000 * _check_int("seconds", seconds)
            + 60_000 * _check_int("minutes", minutes)
            + 3_600_000 * _check_int("hours", hours)
            + 86_400_000 * _check_int("days", days)
        )
        if limit == 0 and expire != 0:
            raise ConfigurationError(
                f"Rate(limit=0, period={expire}ms): a zero limit with a period is ambiguous; "
                "use Rate() for unlimited, or a limit of at least 1"
            )
        if limit != 0 and expire == 0:
            raise ConfigurationError(
                f"Rate(limit={limit}): a limit needs a period; "
                "pass milliseconds=, seconds=, minutes=, hours= or days="
            )
        wrong = _out_of_bounds(limit, expire)
        if wrong:
            raise ConfigurationError(f"Rate(limit={limit}, period={expire}ms): {wrong}")
        unlimited = limit == 0
        set_ = object.__setattr__
        set_(self, "limit", limit)
        set_(self, "expire", expire)
        set_(self, "unlimited", unlimited)
        set_(self, "is_subsecond", 0 < expire < 1_000)
        for name, unit_ms in (
            ("rps", 1_000),
            ("rpm", 60_000),
            ("rph", 3_600_000),
            ("rpd", 86_400_000),
        ):
            set_(self, name, math.inf if unlimited else limit * unit_ms / expire)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        raise RuntimeError(
            f"class {cls.__name__}: Rate cannot be subclassed; build a Rate, or wrap one in "
            "your own class"
        )

    @classmethod
    def parse(cls, rate: str | Rate) -> Rate:
        """Parse `"<limit>/<period>"` or `"<limit> per <period>"`; period = `[n]unit`.

        The grammar is traffik 1.2's: the limit is a whole number in ASCII digits, with an
        optional `+` and `_` between digit groups (`"+5/s"`, `"1_000/min"`); the period is an
        optional count of ASCII digits, then a unit: `ms`, `s`, `min`, `h`, `d` or a long
        form (`second`, `minutes`, ...). Spaces around `/` and `per` are optional
        (`"5per min"`, `"2 persecond"`). `"unlimited"`, `"inf"` and `"none"` give
        `UNLIMITED`. Case and surrounding spaces are ignored, and parsed strings are cached.

        Args:
            rate: The text to parse (at most `MAX_RATE_TEXT` characters), such as
                `"100/min"`, `"10/30s"` or `"5 per minute"`; a `Rate` is returned as is.

        Returns:
            The parsed `Rate`.

        Raises:
            ConfigurationError: When `rate` is neither a string nor a `Rate`, is longer than
                `MAX_RATE_TEXT`, is empty or malformed, has an unknown unit, a zero period, a
                limit of `0`, a limit above `MAX_LIMIT` or a period longer than
                `MAX_PERIOD_MS`.
        """
        if isinstance(rate, Rate):
            return rate
        if isinstance(rate, str) and len(rate) > MAX_RATE_TEXT:
            raise _too_long(rate)
        if not isinstance(rate, str):
            raise ConfigurationError(
                f"rate {rate!r}: expected a string like {_EXAMPLES}, or a Rate"
            )
        return _parse(rate.strip().lower(), rate)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"Rate is immutable; cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"Rate is immutable; cannot delete {name!r}")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Rate):
            return NotImplemented
        return self.limit == other.limit and self.expire == other.expire

    def __hash__(self) -> int:
        return hash((Rate, self.limit, self.expire))

    def __repr__(self) -> str:
        if self.unlimited:
            return "Rate(unlimited)"
        return f"Rate(limit={self.limit}, milliseconds={self.expire})"

    def __str__(self) -> str:
        if self.unlimited:
            return "unlimited"
        for unit, unit_ms in (("d", 86_400_000), ("h", 3_600_000), ("min", 60_000), ("s", 1_000)):
            if self.expire % unit_ms == 0:
                count = self.expire // unit_ms
                return f"{self.limit}/{count if count > 1 else ''}{unit}"
        return f"{self.limit}/{self.expire}ms"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (self.limit, self.expire))

    def __copy__(self) -> Rate:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Rate:
        return self


def _rebuild(limit: int, expire: int) -> Rate:
    return Rate(limit=limit, milliseconds=expire)


MAX_RATE_TEXT = 64
"""The longest rate string parsed (a longer one is refused before any parsing)."""

MAX_RATES = 16
"""The most rates one throttle takes."""


def _too_long(original: str) -> ConfigurationError:
    return ConfigurationError(
        f"rate {original[:24]!r}... is {len(original)} characters long; a rate is at most "
        f"{MAX_RATE_TEXT}, like {_EXAMPLES}"
    )


@functools.lru_cache(maxsize=512)
def _parse(text: str, original: str) -> Rate:
    if not text:
        raise ConfigurationError(f"rate {original!r}: empty; write it like {_EXAMPLES}")
    if len(text) > MAX_RATE_TEXT:
        raise _too_long(original)
    if text in _UNLIMITED_WORDS:
        return UNLIMITED
    parts = _SPLIT.split(text)
    if len(parts) != 2:
        # (`,`, `|`: other limiters' joins; more than one `/` or `per`: rates side by side)
        several = _SEVERAL_HINT if len(parts) > 2 or any(sep in text for sep in ",;|") else ""
        raise ConfigurationError(
            f"rate {original!r}: expected '<limit>/<period>' or '<limit> per <period>', like "
            f"{_EXAMPLES}{several}"
        )
    left, right = parts
    if not _LIMIT.fullmatch(left):
        raise ConfigurationError(
            f"rate {original!r}: limit {left!r} is not a whole number (ASCII digits); write it "
            f"like {_EXAMPLES}"
        )
    limit = int(left)
    if limit < 0:
        raise ConfigurationError(
            f"rate {original!r}: limit {left!r} is negative; a limit is at least 1"
        )
    match = _PERIOD.fullmatch(right)
    if match is None:
        raise ConfigurationError(
            f"rate {original!r}: period {right!r} is not '[n]unit' (n in ASCII digits); use "
            f"units {_UNITS_HINT}{_fraction_hint(right)}"
        )
    count_text, unit = match.groups()
    unit_ms = _MS_PER.get(unit)
    if unit_ms is None:
        raise ConfigurationError(
            f"rate {original!r}: unknown unit {unit!r}; use {_UNITS_HINT}{_LONGER.get(unit, '')}"
        )
    count = int(count_text) if count_text else 1
    if count == 0:
        raise ConfigurationError(f"rate {original!r}: the period must be longer than zero")
    if limit == 0:
        raise ConfigurationError(
            f"rate {original!r}: a limit of 0 admits nothing; write 'unlimited' for no limit"
        )
    wrong = _out_of_bounds(limit, count * unit_ms)
    if wrong:
        raise ConfigurationError(f"rate {original!r}: {wrong}")
    return Rate(limit=limit, milliseconds=count * unit_ms)


def _fraction_hint(period: str) -> str:
    """For a period with a fraction (`1.5s`, `0.5min`): how to write it in whole units."""
    match = _FRACTION.fullmatch(period)
    unit_ms = _MS_PER.get(match.group(3)) if match else None
    if match is None or unit_ms is None or len(match.group(1)) + len(match.group(2)) > 30:
        return ""
    whole, part = match.group(1) or "0", match.group(2)
    ms = Fraction(int(whole + part), 10 ** len(part)) * unit_ms
    if ms.denominator != 1 or ms < 1:
        return "; a period is a whole number of ms, at least 1"
    count, unit = next((ms // size, unit) for unit, size in _WHOLE_UNITS if ms % size == 0)
    return f"; write {period!r} as '{count}{unit}'"


UNLIMITED = Rate()
"""The unlimited rate, `Rate()`: it admits every hit."""

RateLike = Union[str, Rate]
"""A `Rate`, or a string that `Rate.parse` reads (`"100/min"`)."""

RatesLike = Union[RateLike, Sequence[RateLike]]
"""One rate or several: a `RateLike`, a `;`-joined string or a sequence of `RateLike`."""


def parse_rates(value: RatesLike) -> tuple[Rate, ...]:
    """Parse one or several rates into a tuple of `Rate`s.

    The value is a `Rate`, a string (`"10/s"`, or several joined by `;`:
    `"10/s;1000/day"`), or a list of strings and `Rate`s. A hit is admitted only when every
    rate admits it. Unlimited rates add no limit and are dropped, unless all are unlimited.

    Args:
        value: The rate or rates: a `Rate`, a string, or a list or tuple of strings and
            `Rate`s (at most `MAX_RATES`).

    Returns:
        The limited rates, in the order given; `(UNLIMITED,)` when every rate is unlimited.

    Raises:
        ConfigurationError: When `value` is of another type, a rate cannot be parsed, no
            rate is given, more than `MAX_RATES` are given or the same rate is given twice.
    """
    if isinstance(value, Rate):
        return (value,)
    if isinstance(value, str):
        if ";" not in value:
            return (Rate.parse(value),)
        return _parse_many(value)
    if isinstance(value, (list, tuple)):
        return _rates_of(list(value), value)
    raise ConfigurationError(
        f"rate {value!r}: expected a string like '100/min' or '10/s;1000/day', a Rate, "
        "or a list of them"
    )


@functools.lru_cache(maxsize=256)
def _parse_many(text: str) -> tuple[Rate, ...]:
    if len(text) > MAX_RATES * (MAX_RATE_TEXT + 1):
        raise _too_long(text)
    return _rates_of([part for part in text.split(";") if part.strip()], text)


def _rates_of(items: list[Any], value: Any) -> tuple[Rate, ...]:
    if not items:
        raise ConfigurationError(f"rate {value!r}: no rate given; write it like {_EXAMPLES}")
    if len(items) > MAX_RATES:
        raise ConfigurationError(
            f"rate {value!r}: {len(items)} rates; a throttle takes at most {MAX_RATES}"
        )
    rates = tuple(Rate.parse(item) for item in items)
    limited = tuple(rate for rate in rates if not rate.unlimited)
    if len(set(limited)) != len(limited):
        raise ConfigurationError(f"rate {value!r}: the same rate is given twice")
    return limited or (UNLIMITED,)
