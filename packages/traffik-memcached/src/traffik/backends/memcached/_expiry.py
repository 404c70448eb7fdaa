"""Times to live as memcached takes them: whole seconds, and a Unix time beyond 30 days.

Memcached counts time in whole seconds on a clock that ticks once a second, so an item
given `exptime=N` disappears somewhere between N-1 and N+1 seconds later; and it reads
any `exptime` above 30 days (2 592 000 s) as an absolute Unix time. `exptime(seconds)`
therefore rounds up, adds one second, so a key lives *at least* as long as asked (never
less: an early expiry would hand out quota twice) and at most about two seconds more, and
sends the absolute time, from this host's wall clock, beyond 30 days.

Memcached reads `exptime` as a signed 32-bit number, so an absolute time after
`LATEST` (2**31 - 1, 03:14:07 UTC on 19 January 2038) would wrap to 1901 and the item
would expire at once: a limiter that stored its state that way would never throttle.
`exptime` sends `LATEST` instead, so such an item lives until then: on Memcached, a
window longer than the time left until January 2038 ends then.
"""

from __future__ import annotations

import math
import time
from typing import Callable, Optional

__all__ = ["EXPIRED", "LATEST", "NEVER", "RELATIVE_LIMIT", "exptime"]

RELATIVE_LIMIT = 2_592_000
"""The largest `exptime` memcached reads as seconds from now (30 days)."""

LATEST = 2**31 - 1
"""The latest `exptime` memcached accepts: it reads a signed 32-bit number (19 January 2038)."""

NEVER = 0
EXPIRED = RELATIVE_LIMIT + 1
"""An absolute time in January 1970: an item stored with it expires at once."""


def exptime(seconds: Optional[float], wall_clock: Callable[[], float] = time.time) -> int:
    """The `exptime` that keeps an item at least `seconds` (None: forever; <= 0: already expired)."""
    if seconds is None:
        return NEVER
    if seconds <= 0:
        return EXPIRED
    whole = math.ceil(seconds - 1e-9) + 1
    if whole > RELATIVE_LIMIT:
        return min(int(wall_clock()) + whole, LATEST)
    return whole
