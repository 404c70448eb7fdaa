"""Rate-limit response headers: the IETF draft (`RateLimit-Policy`, `RateLimit`) and legacy `X-RateLimit-*`."""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Optional, Union

from traffik.exceptions import ConfigurationError

if TYPE_CHECKING:
    from traffik.decision import Decision
    from traffik.rates import Rate

__all__ = ["HEADER_STYLES", "HeaderStyle", "check_style", "policy_header", "rate_limit_headers"]

HeaderStyle = Optional[str]
HEADER_STYLES = ("ietf", "legacy", "both")
_UNSAFE = re.compile(r'[^\x20-\x7e]|["\\]')


def check_style(style: Union[str, bool, None], owner: str) -> HeaderStyle:
    """Normalise a `headers=` setting: one of `HEADER_STYLES`, or None/False for no headers."""
    if style is None or style is False:
        return None
    if style is True:
        return "ietf"
    if style in HEADER_STYLES:
        return str(style)
    raise ConfigurationError(
        f"{owner}: headers={style!r} is not valid; use 'ietf', 'legacy', 'both' or None"
    )


def policy_header(name: str, rate: Rate) -> str:
    """`"name";q=<limit>;w=<period seconds>` (draft-ietf-httpapi-ratelimit-headers-11)."""
    window = max(1, math.ceil(rate.expire / 1000))
    return f'"{_UNSAFE.sub("_", name)}";q={rate.limit};w={window}'


def rate_limit_headers(
    name: str, policy: str, decision: Decision, style: str
) -> list[tuple[str, str]]:
    """The headers describing `decision`; `policy` is `policy_header(name, rate)`, computed once."""
    remaining = max(int(decision.remaining), 0) if math.isfinite(decision.remaining) else 0
    reset = (
        decision.retry_after
        if not decision.allowed
        else max(0, math.ceil(decision.reset_ms / 1000))
    )
    headers: list[tuple[str, str]] = []
    if style != "legacy":
        headers.append(("RateLimit-Policy", policy))
        headers.append(("RateLimit", f'"{_UNSAFE.sub("_", name)}";r={remaining};t={reset}'))
    if style != "ietf":
        limit = decision.limit
        headers.append(("X-RateLimit-Limit", str(int(limit)) if math.isfinite(limit) else "0"))
        headers.append(("X-RateLimit-Remaining", str(remaining)))
        headers.append(("X-RateLimit-Reset", str(reset)))
    return headers
