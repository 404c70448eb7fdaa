"""Counters on one connection: `incr` with an `add` fallback, signed values, and fixed-window counters
(counted, read, given back and refunded)."""

from __future__ import annotations

from typing import Optional

from aiomcache.pool import Connection

from traffik.backends.base import WindowCount
from traffik.backends.memcached._client import (
    Flagged,
    NodeClient,
    NotNumeric,
    ReplyError,
    incr_reply,
)
from traffik.backends.memcached._expiry import EXPIRED, NEVER, exptime
from traffik.backends.memcached._node import Operation
from traffik.backends.memcached._window import (
    FOLD_AT,
    FOLD_BY,
    WINDOW_FLAG,
    pack,
    unpack,
    window_end,
)
from traffik.strategies.fixed_window import too_late

__all__ = [
    "ATTEMPTS",
    "increment",
    "number",
    "refund_count",
    "uncount",
    "unsigned",
    "whole_number",
    "window_count",
    "window_hit",
    "window_of",
]

ATTEMPTS = 50
"""How many times a read-modify-write is retried after losing a race before giving up."""


def whole_number(raw: bytes | Flagged) -> Optional[int]:
    """The whole number a value holds (`-` and ASCII digits, maybe padded with spaces as
    `decr` leaves it), or None for a value no counter wrote."""
    text = (raw.value if isinstance(raw, Flagged) else raw).strip(b" ")
    digits = text[1:] if text.startswith(b"-") else text
    return int(text) if digits.isdigit() else None


def unsigned(raw: bytes | Flagged | None) -> Optional[int]:
    """The number memcached's `incr` adds to (0 to 2**64 - 1), or None for a missing key and
    any other value."""
    value = None if raw is None else whole_number(raw)
    return value if value is not None and 0 <= value < 2**64 else None


def number(raw: bytes | Flagged) -> int:
    value = whole_number(raw)
    if value is None:
        text = raw.value if isinstance(raw, Flagged) else raw
        raise ReplyError("the key holds a value that is not a whole number", text[:40])
    return value


def window_of(raw: bytes | Flagged) -> Optional[tuple[int, int]]:
    """`(end, count)` of a window counter as read; None for any other value."""
    if not (isinstance(raw, Flagged) and raw.flags == WINDOW_FLAG):
        return None
    value = unsigned(raw)
    return None if value is None else unpack(value)


def increment(key: bytes, amount: int) -> Operation[int]:
    """Add `amount` (may be negative): `incr`/`decr`, else `add`; a lost `add` race retries.

    Memcached counters are unsigned: a `decr` stops at 0, and a value that went negative
    (a decrement of a missing key stores `-amount`) is updated with `gets`/`cas` instead.
    """

    async def run(client: NodeClient, conn: Connection) -> int:
        verb = b"incr" if amount >= 0 else b"decr"
        try:
            for _ in range(ATTEMPTS):
                value = await client.incr_on(conn, key, abs(amount), verb)
                if value is not None:
                    return value
                if await client.store_on(conn, b"add", key, b"%d" % amount, NEVER):
                    return amount
        except NotNumeric:
            return await _signed_add(client, conn, key, amount)
        raise ReplyError(f"the key kept vanishing during {ATTEMPTS} increments")

    return run


async def _signed_add(client: NodeClient, conn: Connection, key: bytes, amount: int) -> int:
    for _ in range(ATTEMPTS):
        raw, token = await client.gets_on(conn, key)
        if raw is None:
            if await client.store_on(conn, b"add", key, b"%d" % amount, NEVER):
                return amount
            continue
        value = number(raw) + amount
        if await client.store_on(conn, b"cas", key, b"%d" % value, NEVER, token):
            return value
    raise ReplyError(f"lost {ATTEMPTS} compare-and-swap races in a row on a counter")


def window_hit(
    key: bytes, amount: int, ttl: float, now: int, first: Optional[bytes] = None
) -> Operation[int]:
    """Count `amount` in the fixed window at `key` at `now` (in ms of the backend's clock),
    opening one of `ttl` seconds when there is none.

    One `incr` for a window that is open; `add` (or `gets`+`cas` when the window closed on
    the backend's clock before memcached dropped it) to open the next. Returns a
    `WindowCount` carrying the time left, or a plain int for a key that holds a plain number.
    `first` is the reply to an `incr` of `amount` already sent (the backend's fast path
    hands over the cases it does not finish itself): the operation goes on from there. A
    window that ends more than `ttl` and `AHEAD_MS` from now (`fixed_window.too_late`: opened
    before the backend's clock stepped back, or with a longer `ttl`) is cut to end `ttl` from
    now, its count kept (`_cut`).

    A value no counter wrote (not a whole number: another program's) is no state: it is
    replaced by a new window, under `cas`, so of the hits that meet it at once one replaces
    it and the others count in the window it opened.
    """

    async def run(client: NodeClient, conn: Connection) -> int:
        reply = first
        for _ in range(ATTEMPTS):
            token = None
            try:
                if reply is None:
                    value = await client.incr_on(conn, key, amount)
                else:
                    sent, reply = reply, None
                    value = incr_reply(sent, key)
            except NotNumeric:
                raw, token = await client.gets_on(conn, key)
                held = None if raw is None else whole_number(raw)
                if held is not None and held < 0:
                    return await _signed_add(client, conn, key, amount)
                if unsigned(raw) is not None:
                    continue  # replaced by a count meanwhile: counted by the next `incr`
                value = None
            if value is None:
                opened = await _open_window(client, conn, key, amount, ttl, now, token)
                if opened is not None:
                    return opened
                continue
            end, count = unpack(value)
            if end == 0:
                return value  # a plain counter (from `set` or `increment`): no window to report
            if end > now:
                if count >= FOLD_AT > count - amount:
                    await client.incr_on(conn, key, FOLD_BY, b"decr")
                if too_late(end - now, ttl * 1000):
                    return await _cut(client, conn, key, count, end, ttl, now)
                return WindowCount(count, end - now)
            raw, token = await client.gets_on(conn, key)
            if raw is None:
                continue
            window = window_of(raw)
            if window is None:
                held = whole_number(raw)
                if held is not None:
                    return held  # replaced by a plain counter meanwhile
            elif window[0] > now:
                continue  # another caller opened the next window meanwhile: count in it
            opened = await _open_window(client, conn, key, amount, ttl, now, token)
            if opened is not None:
                return opened
        raise ReplyError(f"lost {ATTEMPTS} races in a row opening a fixed window")

    return run


async def _cut(
    client: NodeClient, conn: Connection, key: bytes, count: int, end: int, ttl: float, now: int
) -> WindowCount:
    """The window closing at `end`, in which this caller counted up to `count`, made to close
    `ttl` from now under `cas`, its count kept; unless another caller cut or replaced it
    meanwhile (or it is gone), which then stands."""
    cut = window_end(now, ttl)
    for _ in range(ATTEMPTS):
        raw, token = await client.gets_on(conn, key)
        window = None if raw is None else window_of(raw)
        if window is None or window[0] != end:
            left = window[0] - now if window is not None and window[0] > now else cut - now
            return WindowCount(count, left)
        value = Flagged(b"%d" % pack(cut, window[1]), WINDOW_FLAG)
        if await client.store_on(conn, b"cas", key, value, exptime(ttl), token):
            return WindowCount(count, cut - now)
    raise ReplyError(f"lost {ATTEMPTS} compare-and-swap races in a row cutting a fixed window")


async def _open_window(
    client: NodeClient,
    conn: Connection,
    key: bytes,
    amount: int,
    ttl: float,
    now: int,
    token: int | None,
) -> WindowCount | None:
    end = window_end(now, ttl)
    value = Flagged(b"%d" % pack(end, amount), WINDOW_FLAG)
    if token is None:
        stored = await client.store_on(conn, b"add", key, value, exptime(ttl))
    else:
        stored = await client.store_on(conn, b"cas", key, value, exptime(ttl), token)
    return WindowCount(amount, end - now) if stored else None


def window_count(raw: bytes | Flagged | None, now: int) -> tuple[int, Optional[int]]:
    """`(count, ms until its window closes)` of a counter read at `now`: `(0, None)` for a
    missing key, a closed window or a value no counter wrote, `(count, None)` for a plain
    counter."""
    if raw is None:
        return 0, None
    window = window_of(raw)
    if window is not None:
        end, count = window
        return (count, end - now) if end > now else (0, None)
    value = whole_number(raw)
    return (0, None) if value is None else (value, None)


def uncount(key: bytes, amount: int, end: int) -> Operation[None]:
    """Give back `amount` that this caller counted in the window closing at `end` (0: a plain
    counter): one `decr`, which keeps the window. Should the key hold another window by then
    (the counted one closed and the next opened), the `incr` that puts its count back. A
    window left holding nothing was opened by the units given back (no hit counts in it), so
    it is removed, as if never opened (the next counted hit opens its own), unless a hit
    counted in it meanwhile: `gets`, then a `cas` that expires it."""

    async def run(client: NodeClient, conn: Connection) -> None:
        try:
            value = await client.incr_on(conn, key, amount, b"decr")
        except NotNumeric:
            return  # replaced by a value no counter wrote: nothing of this caller's is left
        if value is None:
            return
        held, count = unpack(value)
        if held != end:
            await client.incr_on(conn, key, amount)
        elif count == 0 and end != 0:
            raw, token = await client.gets_on(conn, key)
            if isinstance(raw, Flagged) and raw.value == b"%d" % value and token is not None:
                await client.store_on(conn, b"cas", key, raw, EXPIRED, token)

    return run


def refund_count(key: bytes, amount: int, now: int) -> Operation[None]:
    """Take up to `amount` off the counter at `key`, never below 0: a window counter under
    `gets`/`cas`, keeping its window (a closed one is left alone); a plain counter with
    `decr`, which stops at 0."""

    async def run(client: NodeClient, conn: Connection) -> None:
        for _ in range(ATTEMPTS):
            raw, token = await client.gets_on(conn, key)
            count, left = window_count(raw, now)
            if count <= 0:
                return
            if left is None:
                await client.incr_on(conn, key, amount, b"decr")
                return
            value = Flagged(b"%d" % pack(now + left, max(count - amount, 0)), WINDOW_FLAG)
            if await client.store_on(conn, b"cas", key, value, exptime(left / 1000), token):
                return
        raise ReplyError(f"lost {ATTEMPTS} compare-and-swap races in a row refunding a counter")

    return run
