"""Whether a strategy's state fits one memcached item: the largest limit whose worst case does.

`SlidingWindowLog` and `LeakyBucketWithQueue` keep one entry per admitted hit, so their
state grows with the limit; memcached refuses an item larger than its `-I` size (1 MiB by
default) with `SERVER_ERROR object too large`, which would fail every write of the key. The
worst case is a hit of cost 1 per entry (a larger cost takes fewer entries), each entry
written by `encode_state` as comma-separated whole numbers, timestamps in `MS_DIGITS` digits:

- `SlidingWindowLog`, `t1,c1,t2,c2,...`: `MS_DIGITS + 3` bytes per entry, one comma fewer;
- `LeakyBucketWithQueue`, `last,t1,left1,...,limit,-period` where `left` is at most one
  period (in ms, scaled by the cost 1): `MS_DIGITS + 2 + digits(period)` bytes per entry,
  plus `last` and the rate the state was written under;
- `PriorityQueue`, `t1,p1,c1,...`: each priority counts its own entries and those above it,
  so the log holds up to `4 x limit` units, in at most `max_queue_size` entries; a priority
  is one digit, and the costs, spread over the entries, have the digits of
  `4 x limit / entries` (hits in one millisecond at one priority share an entry).

Other strategies keep a few numbers whatever the limit (`CostBasedTokenBucket`'s cost
history is at most `cost_window` costs, kept as runs).
"""

from __future__ import annotations

from typing import Any, Optional

from traffik.backends.memcached._keys import MAX_KEY_BYTES
from traffik.exceptions import ConfigurationError
from traffik.rates import Rate
from traffik.strategies import LeakyBucketWithQueue, PriorityQueue, SlidingWindowLog

__all__ = [
    "ITEM_BYTES_MEANING",
    "ITEM_OVERHEAD",
    "MIN_ITEM_BYTES",
    "MS_DIGITS",
    "check_fits",
    "growth",
    "value_budget",
    "worst_bytes",
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


def entries(strategy: Any, limit: int) -> int:
    """The entries of the worst-case state of a log strategy at `limit`."""
    if isinstance(strategy, PriorityQueue):
        return min(4 * limit, strategy.max_queue_size)
    return limit


def growth(strategy: Any, rate: Rate) -> Optional[tuple[int, int]]:
    """`(fixed, per_entry)`: the worst-case state at `rate` is `fixed + per_entry * n` bytes
    for its `n` entries (`entries`); None for a strategy whose state does not grow with the
    limit."""
    if isinstance(strategy, SlidingWindowLog):
        return -1, MS_DIGITS + 3
    if isinstance(strategy, LeakyBucketWithQueue):
        period = len(str(rate.expire))
        return MS_DIGITS + 3 + len(str(rate.limit)) + period, MS_DIGITS + 2 + period
    if isinstance(strategy, PriorityQueue):
        cost = len(str(max(1, 4 * rate.limit // entries(strategy, rate.limit))))
        return -1, MS_DIGITS + 4 + cost
    return None


def worst_bytes(strategy: Any, rate: Rate) -> Optional[int]:
    """The largest state `strategy` can write at `rate`; None when it does not grow."""
    grows = None if rate.unlimited else growth(strategy, rate)
    if grows is None:
        return None
    return grows[0] + grows[1] * entries(strategy, rate.limit)


def check_fits(strategy: Any, rate: Rate, max_item_bytes: int) -> None:
    """Raise `ConfigurationError` when the worst-case state of `strategy` at `rate` does not
    fit an item of `max_item_bytes`, naming the largest limit that does."""
    worst = worst_bytes(strategy, rate)
    budget = value_budget(max_item_bytes)
    if worst is None or worst <= budget:
        return
    low, high = 1, rate.limit  # the largest limit whose worst case fits
    while low < high:
        middle = (low + high + 1) // 2
        fits = worst_bytes(strategy, Rate(limit=middle, milliseconds=rate.expire))
        if fits is not None and fits <= budget:
            low = middle
        else:
            high = middle - 1
    fitting = Rate(limit=low, milliseconds=rate.expire)
    queue = ""
    if isinstance(strategy, PriorityQueue):
        queue = f" (max_queue_size={strategy.max_queue_size:,} bounds its entries too)"
    raise ConfigurationError(
        f"{type(strategy).__name__} with rate {str(rate)!r} on memcached: its state (one entry "
        f"per hit) can reach {worst:,} bytes, more than the {budget:,} "
        f"a value may take in an item of max_item_bytes={max_item_bytes:,}, so every write of "
        f"the key would fail; the largest limit that fits is {low:,} ({str(fitting)!r}){queue}. "
        "Lower the limit, use SlidingWindowCounter or LeakyBucket (their state does not grow), "
        "or raise memcached's -I and max_item_bytes together"
    )
