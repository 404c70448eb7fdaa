"""Whether a strategy's state fits one memcached item: the largest limit whose worst case does.

`SlidingWindowLog` and `LeakyBucketWithQueue` keep one entry per admitted hit, so their
state grows with the limit; memcached refuses an item larger than its `-I` size (1 MiB by
default) with `SERVER_ERROR object too large`, which would fail every write of the key. The
worst case is a hit of cost 1 per entry (a larger cost takes fewer entries), each entry
written by `encode_state` as comma-separated whole numbers, timestamps in `MS_DIGITS` digits:

- `SlidingWindowLog`, `t1,c1,t2,c2,...`: `MS_DIGITS + 3` bytes per entry, one comma fewer;
- `LeakyBucketWithQueue`, `last,t1,left1,...,limit,-period` where `left` is at most one
  period (in ms, scaled by the cost 1): `MS_DIGITS + 2 + digits(period)` bytes per entry,
  plus `last` and the rate the state was written under.

Other strategies keep a few numbers whatever the limit.
"""

from __future__ import annotations

from typing import Any, Optional

from traffik.backends.memcached._keys import MAX_KEY_BYTES
from traffik.exceptions import ConfigurationError
from traffik.rates import Rate
from traffik.strategies import LeakyBucketWithQueue, SlidingWindowLog

__all__ = [
    "ITEM_BYTES_MEANING",
    "ITEM_OVERHEAD",
    "MIN_ITEM_BYTES",
    "MS_DIGITS",
    "check_fits",
    "growth",
    "value_budget",
]

MIN_ITEM_BYTES = 1024
"""memcached's smallest item size limit (`-I`)."""
ITEM_BYTES_MEANING = ", the servers' item size limit in bytes (memcached -I, 1048576 by default)"

ITEM_OVERHEAD = 128
"""Bytes of an item that are not its key or value: memcached 1.6 takes 63 (the item header,
CAS, flags, the key's terminator and the value's CRLF); rounded up for other versions."""

MS_DIGITS = 13
"""Digits of a millisecond timestamp, from September 2001 to November 2286."""


def value_budget(max_item_bytes: int) -> int:
    """The largest value that fits an item of `max_item_bytes` under any key."""
    return max_item_bytes - ITEM_OVERHEAD - MAX_KEY_BYTES


def growth(strategy: Any, rate: Rate) -> Optional[tuple[int, int]]:
    """`(fixed, per_entry)`: the worst-case state at a limit `n` is `fixed + per_entry * n`
    bytes; None for a strategy whose state does not grow with the limit."""
    if isinstance(strategy, SlidingWindowLog):
        return -1, MS_DIGITS + 3
    if isinstance(strategy, LeakyBucketWithQueue):
        period = len(str(rate.expire))
        return MS_DIGITS + 3 + len(str(rate.limit)) + period, MS_DIGITS + 2 + period
    return None


def check_fits(strategy: Any, rate: Rate, max_item_bytes: int) -> None:
    """Raise `ConfigurationError` when the worst-case state of `strategy` at `rate` does not
    fit an item of `max_item_bytes`, naming the largest limit that does."""
    grows = None if rate.unlimited else growth(strategy, rate)
    if grows is None:
        return
    fixed, per_entry = grows
    budget = value_budget(max_item_bytes)
    largest = (budget - fixed) // per_entry
    if rate.limit <= largest:
        return
    fitting = Rate(limit=largest, milliseconds=rate.expire)
    raise ConfigurationError(
        f"{type(strategy).__name__} with rate {str(rate)!r} on memcached: its state (one entry "
        f"per hit) can reach {fixed + per_entry * rate.limit:,} bytes, more than the {budget:,} "
        f"a value may take in an item of max_item_bytes={max_item_bytes:,}, so every write of "
        f"the key would fail; the largest limit that fits is {largest:,} ({str(fitting)!r}). "
        "Lower the limit, use SlidingWindowCounter or LeakyBucket (their state does not grow), "
        "or raise memcached's -I and max_item_bytes together"
    )
