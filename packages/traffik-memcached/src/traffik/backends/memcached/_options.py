"""Checks of the backend's settings and amounts: each says what was wrong and what is valid."""

from __future__ import annotations

import math
from typing import Any

from traffik.exceptions import ConfigurationError

__all__ = ["at_least", "seconds", "whole"]


def seconds(owner: str, name: str, value: Any, *, zero: bool = False) -> float:
    """`value` as a finite number of seconds, > 0 (or >= 0 with `zero=True`)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
        or (value == 0 and not zero)
    ):
        bound = ">= 0" if zero else "> 0"
        raise ConfigurationError(f"{owner}({name}={value!r}): must be a number of seconds {bound}")
    return float(value)


def at_least(owner: str, name: str, value: Any, minimum: int, meaning: str = "") -> int:
    """`value` as a whole number >= `minimum`; `meaning` says what the number is."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigurationError(
            f"{owner}({name}={value!r}): must be a whole number >= {minimum}{meaning}"
        )
    return value


def whole(amount: Any) -> int:
    """An amount to add to a counter, which must be a whole number."""
    if isinstance(amount, int):
        return amount
    if isinstance(amount, float) and amount.is_integer():
        return int(amount)
    raise ConfigurationError(
        f"memcached counters hold whole numbers; amount={amount!r} cannot be added (use a whole cost)"
    )
