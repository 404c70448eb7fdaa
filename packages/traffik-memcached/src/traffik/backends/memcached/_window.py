"""Window counters: a fixed window's count and its end packed into one memcached number.

`increment_with_ttl` stores `end * COUNT_SPAN + count`, where `end` is the millisecond at
which the window closes on the backend's clock (`now_ms`), and marks the item with
`WINDOW_FLAG`. Memcached's `incr` adds to the count and answers the whole number, so one
command returns both the new count and the exact time left, `end - now_ms` (what
`WindowCount.ttl_ms` and `ttl()` report): the window follows the backend's clock to the
millisecond even though memcached keeps time in whole seconds. `incr` is unsigned 64-bit, and
ends below 1.8e13 ms (the year 2554) times `COUNT_SPAN = 10**6` stay below 2**64.

A count that reaches `FOLD_AT` is lowered by `FOLD_BY` (by the one caller that crossed it,
which still reports the count it reached), so it never overflows into the window end: a
count lives below `FOLD_AT + WINDOW_LIMIT`, leaving `COUNT_SPAN - 750_000` for hits racing
the fold. Once folded, every count reported is above `FOLD_AT - FOLD_BY`, so a limit up to
`WINDOW_LIMIT = 250_000` per window is enforced exactly; a larger limit is not.
"""

from __future__ import annotations

__all__ = [
    "COUNT_SPAN",
    "FOLD_AT",
    "FOLD_BY",
    "WINDOW_FLAG",
    "WINDOW_LIMIT",
    "pack",
    "unpack",
    "window_end",
]

WINDOW_FLAG = 1
COUNT_SPAN = 10**6
FOLD_AT = 500_000
FOLD_BY = 250_000
WINDOW_LIMIT = FOLD_AT - FOLD_BY
"""The largest limit per window (and cost per hit) that a window counter keeps exact."""


def window_end(now: int, ttl: float) -> int:
    """The millisecond at which a window opened at `now` for `ttl` seconds closes.

    `ttl` is taken to the nearest millisecond, and at least one, as `InMemoryBackend` does.
    """
    return now + max(round(ttl * 1000), 1)


def pack(end: int, count: int) -> int:
    return end * COUNT_SPAN + count


def unpack(value: int) -> tuple[int, int]:
    """`(end, count)`."""
    end, count = divmod(value, COUNT_SPAN)
    return end, count
