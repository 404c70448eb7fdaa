"""Window counters: a fixed window's count and its end packed into one memcached number.

`increment_with_ttl` stores `end * COUNT_SPAN + count`, where `end` is the millisecond at
which the window closes on the backend's clock (`now_ms`), and marks the item with
`WINDOW_FLAG`. Memcached's `incr` adds to the count and answers the whole number, so one
command returns both the new count and the exact time left, `end - now_ms` (what
`WindowCount.ttl_ms` and `ttl()` report): the window follows the backend's clock to the
millisecond even though memcached keeps time in whole seconds. `incr` is unsigned 64-bit,
but a number of 2**63 or more is not reliably one: memcached looks for a minus sign past the
digits, in whatever its memory holds after the item, and may answer that the value is not a
number (on a server that has recycled memory; a fresh one passes). So a window ends at
`LAST_END` at the latest (2262-04-11 23:47:16.853 UTC), where `end * COUNT_SPAN` plus a count
stays below 2**63: a window that would close later (a clock set past it) is a `BackendError`
naming the clock, not a counter that fails now and then.

A count that reaches `FOLD_AT` is lowered by `FOLD_BY` (by the one caller that crossed it,
which still reports the count it reached), so it never overflows into the window end: a
count lives below `FOLD_AT + WINDOW_LIMIT`, leaving `COUNT_SPAN - 750_000` for hits racing
the fold. Once folded, every count reported is above `FOLD_AT - FOLD_BY`, so a limit up to
`WINDOW_LIMIT = 250_000` per window is enforced exactly; a larger limit is not.
"""

from __future__ import annotations

from traffik.exceptions import BackendError

__all__ = [
    "COUNT_SPAN",
    "FOLD_AT",
    "FOLD_BY",
    "LAST_END",
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
LAST_END = (2**63 - COUNT_SPAN) // COUNT_SPAN
"""The latest millisecond a window may close at: packed with any count, below 2**63."""


def window_end(now: int, ttl: float) -> int:
    """The millisecond at which a window opened at `now` for `ttl` seconds closes.

    `ttl` is taken to the nearest millisecond, and at least one, as `InMemoryBackend` does.
    A window closing after `LAST_END` is a `BackendError`.
    """
    end = now + max(round(ttl * 1000), 1)
    if end > LAST_END:
        raise BackendError(
            f"memcached: a fixed window of {ttl:g} s opened at {now} ms (this backend's clock) "
            f"would close past {LAST_END} ms (2262-04-11 23:47:16 UTC), the last time a window "
            "counter holds (memcached does not reliably increment a number of 2**63 or more); "
            "check the host's clock"
        )
    return end


def pack(end: int, count: int) -> int:
    return end * COUNT_SPAN + count


def unpack(value: int) -> tuple[int, int]:
    """`(end, count)`."""
    end, count = divmod(value, COUNT_SPAN)
    return end, count
