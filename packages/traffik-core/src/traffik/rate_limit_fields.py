"""`RateLimitField`: the values of the IETF draft's and the legacy rate-limit headers, from a client's `StrategyStat`."""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any, Optional

from traffik.decision import whole_seconds
from traffik.exceptions import ConfigurationError
from traffik.keyparts import unescape

if TYPE_CHECKING:
    from traffik.rates import Rate
    from traffik.typing import StrategyStat

__all__ = ["RateLimitField", "policy_value", "quoted_name"]

_UNSAFE = re.compile(r'[^\x20-\x7e]|["\\]')


def quoted_name(name: str) -> str:
    """A policy name as an IETF header's quoted string (unsafe characters as `_`).

    Args:
        name: The policy name.

    Returns:
        The name in double quotes, with every character outside printable ASCII, and every
        `"` and `\\`, replaced by `_`.
    """
    return f'"{_UNSAFE.sub("_", name)}"'


def policy_value(name: str, rate: Rate) -> str:
    """`"name";q=100;w=60`. `w` is given only for a period of whole seconds: the draft counts
    windows in seconds, and `5/500ms` as a window of one second would advertise half the rate.

    Args:
        name: The policy name (quoted with `quoted_name`).
        rate: The rate: `q` is its limit, `w` its period in seconds.

    Returns:
        The `RateLimit-Policy` item.
    """
    window = f";w={rate.expire // 1000}" if rate.expire % 1000 == 0 else ""
    return f"{quoted_name(name)};q={rate.limit}{window}"


class RateLimitField:
    """A value of the IETF and legacy presets: `policy`, `ratelimit`, `limit`, `remaining` or
    `reset`, computed from a `StrategyStat` (the policy is named after the throttle, the
    first part of the stat's key). Throttles encode these ahead of time (`HeaderPlan`).

    Called as `field(connection, stat, context)`, it returns the value, or None for an
    unlimited rate. `reset` is in whole seconds, rounded up.

    Args:
        kind: Which value: `"policy"`, `"ratelimit"`, `"limit"`, `"remaining"` or
            `"reset"`.

    Raises:
        ConfigurationError: When `kind` is none of these.
    """

    __slots__ = ("kind",)
    KINDS = ("policy", "ratelimit", "limit", "remaining", "reset")

    def __init__(self, kind: str) -> None:
        if kind not in self.KINDS:
            raise ConfigurationError(f"RateLimitField({kind!r}): use one of {self.KINDS}")
        self.kind = kind

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RateLimitField) and other.kind == self.kind

    def __hash__(self) -> int:
        return hash((RateLimitField, self.kind))

    def __repr__(self) -> str:
        return f"RateLimitField({self.kind!r})"

    def __call__(self, connection: Any, stat: StrategyStat, context: Any = None) -> Optional[str]:
        rate = stat.rate
        if rate.unlimited or not math.isfinite(stat.hits_remaining):
            return None
        name = unescape(str(stat.key).split(":", 1)[0])
        if self.kind == "policy":
            return policy_value(name, rate)
        if self.kind == "limit":
            return str(rate.limit)
        remaining = max(int(stat.hits_remaining), 0)
        if stat.wait_ms > 0:
            reset = whole_seconds(stat.wait_ms, 1)
        else:
            reset = whole_seconds((stat.metadata or {}).get("reset_ms", 0))
        if self.kind == "ratelimit":
            return f"{quoted_name(name)};r={remaining};t={reset}"
        return str(remaining if self.kind == "remaining" else reset)
