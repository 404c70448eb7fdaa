"""Rate-limit response headers: the IETF draft (`RateLimit-Policy`, `RateLimit`) and legacy `X-RateLimit-*`."""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Optional, Union

from traffik.exceptions import ConfigurationError

if TYPE_CHECKING:
    from traffik.decision import Decision
    from traffik.rates import Rate

__all__ = ["HEADER_STYLES", "HeaderStyle", "RateLimitHeaders", "check_style"]

HeaderStyle = Optional[str]
HEADER_STYLES = ("ietf", "legacy", "both")
_UNSAFE = re.compile(r'[^\x20-\x7e]|["\\]')
_NAMES = {
    b"ratelimit-policy": "RateLimit-Policy",
    b"ratelimit": "RateLimit",
    b"x-ratelimit-limit": "X-RateLimit-Limit",
    b"x-ratelimit-remaining": "X-RateLimit-Remaining",
    b"x-ratelimit-reset": "X-RateLimit-Reset",
}


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


class RateLimitHeaders:
    """The rate-limit headers of one policy (a name and a rate), constant parts encoded once.

    IETF form (draft-ietf-httpapi-ratelimit-headers-11): `RateLimit-Policy: "name";q=100;w=60`
    and `RateLimit: "name";r=42;t=17`; legacy form: `X-RateLimit-Limit`, `-Remaining`,
    `-Reset` (seconds). `t`/`Reset` is the time until the limit is whole again, or, when
    throttled, the wait the client is told (the same as `Retry-After`). `w` is given only for
    a period of whole seconds: the draft counts windows in seconds, and `5/500ms` rounded to a
    window of one second would advertise half the real rate. A decision that knows nothing of
    the quota (an `on_error` answer) gets no headers at all.
    """

    __slots__ = ("_ietf", "_legacy", "_limit", "_policy", "_policy_raw", "_quoted", "_quoted_raw")

    def __init__(self, name: str, rate: Rate, style: str) -> None:
        self._quoted = f'"{_UNSAFE.sub("_", name)}"'
        window = f";w={rate.expire // 1000}" if rate.expire % 1000 == 0 else ""
        self._policy = f"{self._quoted};q={rate.limit}{window}"
        self._policy_raw = (b"ratelimit-policy", self._policy.encode())
        self._quoted_raw = self._quoted.encode()
        self._limit = str(rate.limit).encode()
        self._ietf = style != "legacy"
        self._legacy = style != "ietf"

    @staticmethod
    def _numbers(decision: Decision, wait_ms: Optional[float]) -> tuple[int, int]:
        remaining = decision.remaining
        remaining = (
            max(int(remaining), 0) if remaining is not None and math.isfinite(remaining) else 0
        )
        if decision.allowed:
            return remaining, max(0, math.ceil(decision.reset_ms / 1000))
        wait = decision.wait_ms if wait_ms is None else wait_ms
        return remaining, max(1, math.ceil(wait / 1000))

    def raw(self, decision: Decision, wait_ms: Optional[float] = None) -> list[tuple[bytes, bytes]]:
        """ASGI header pairs (lower-case names) for `decision`; `wait_ms` is the wait the
        client is told when throttled (default: the decision's)."""
        if decision.remaining is None:
            return []
        remaining, reset = self._numbers(decision, wait_ms)
        headers: list[tuple[bytes, bytes]] = []
        if self._ietf:
            headers.append(self._policy_raw)
            headers.append((b"ratelimit", b"%s;r=%d;t=%d" % (self._quoted_raw, remaining, reset)))
        if self._legacy:
            headers.append((b"x-ratelimit-limit", self._limit))
            headers.append((b"x-ratelimit-remaining", b"%d" % remaining))
            headers.append((b"x-ratelimit-reset", b"%d" % reset))
        return headers

    def text(self, decision: Decision, wait_ms: Optional[float] = None) -> dict[str, str]:
        """The same headers as a mapping, for an exception's `headers=`."""
        return {_NAMES[name]: value.decode() for name, value in self.raw(decision, wait_ms)}
