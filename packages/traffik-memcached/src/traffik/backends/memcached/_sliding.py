"""`SlidingWindowCounter` on window counters: one `incr` per round of hits, no compare-and-swap.

Each window of a key (window id `now // period`, as `SlidingWindowCounter` aligns them) has
its own memcached counter, `<key>#w<window id>/<period>`, holding `previous * PREVIOUS_SPAN +
count` (the period in the name: the window ids of two periods may be equal; unlike the
strategy's own state, which carries a window of another period into the new one, these
counters start a new window under a new period, docs/concepts/strategies.md):
its hits, and the previous window's count, read once when the window's first hit opens it
(`add`). One `incr` of a round's total cost then answers both numbers, and the round decides
its hits in order with the strategy's own `transition` on `[window id, count before the
round + what it admitted so far, previous]`, exactly the decisions the in-memory backend
makes. The units of the refused hits go back with one `decr`. Other clients may see them for
that moment (a transient extra refusal); none is admitted on them.

A key that its last round left full (`full`: a hit of cost 1 would be refused, until the
time it would wait) starts its next round with a `get` instead: hits refused on what it
reads cost that one command and write nothing; the first it admits and the rest go on to
the `incr`.

The previous count is taken when a window opens: a hit counted in the previous window after
that (a host whose clock lags, a round crossing the boundary) weighs in it but not in the
open window, so at a window's turn the limit may be passed by the hits racing the turn.
Counts up to `COUNTED_LIMIT` per window are kept this way; a larger limit uses the state
under compare-and-swap.

A clock that stepped back (NTP, a VM restored) finds the counters of the windows it counted
in before the step, ahead of its own. A hit decides on its own window's counter, so counts
ahead do not refuse it; but a refused hit whose wait reaches into the next window would be
retried on that window's counter, which may hold more than its own window does (a wait read
from its own window alone was short by what the next one holds: the client came back on
time and was refused again). So a refused hit whose wait reaches the next window reads that
window's counter (one `get`, only then; a key known full reads it with its own window's, in
its one `get`), and when it has one, the wait is that of a hit decided on it at its start
(`with_windows_ahead`), and so on to the window after while the wait reaches past it too. A
retry after the wait told is admitted, and one a millisecond earlier refused, when no other
hit comes meanwhile. Windows beginning more than two periods and `EXPIRY_SLACK_MS` ahead
are not read: their counters are gone (memcached's clock) before this one gets there.

Opening a window also writes `<key>` itself: a marker (flag `MARKER_FLAG`) holding the
period, living as long as the window's counter. It is what lets `delete(<key>)` (a
throttle's `reset`, `python -m traffik reset`) find and delete the window counters of a
key without knowing its rate, and `scan` list the key: one more command per key per window.

A window counter holding what no counter wrote (not a whole number below 2**64: another
program's value) is no state: read as a missing counter, and replaced when a hit opens the
window, under `cas`, so that of the hits meeting it at once one replaces it and the others
count on top.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Callable, Optional, Union

from traffik.backends.memcached._client import Flagged, NodeClient, NotNumeric, ReplyError
from traffik.backends.memcached._counters import ATTEMPTS, unsigned
from traffik.backends.memcached._expiry import exptime
from traffik.backends.memcached._gate import UNSENT, aligned, sending
from traffik.backends.memcached._keys import MAX_KEY_BYTES
from traffik.backends.memcached._transition import Hit
from traffik.decision import Decision
from traffik.strategies.sliding_window import SlidingWindowCounter

if TYPE_CHECKING:
    from aiomcache.pool import Connection

    from traffik.backends.memcached._node import Operation
    from traffik.rates import Rate

__all__ = [
    "COUNTED_LIMIT",
    "EXPIRY_SLACK_MS",
    "FULL_KEYS",
    "MARKER_FLAG",
    "PREVIOUS_SPAN",
    "Counted",
    "count_windows",
    "counts_windows",
    "describe_marker",
    "forget_windows",
    "previous_and_count",
    "refund_windows",
    "uncount_window",
    "window_key",
    "window_state",
    "with_windows_ahead",
]

PREVIOUS_SPAN = 10**10
"""A window counter holds `previous * PREVIOUS_SPAN + count`; below 2**64 for a previous count
under 1.8e9."""
COUNTED_LIMIT = 10**8
"""The largest limit decided on window counters: a count (with hits racing it) stays far
below `PREVIOUS_SPAN`, and a previous count far below 1.8e9."""
MARKER_FLAG = 2
"""The flags of a key's marker: its value is the period (ms) of its window counters."""
FULL_KEYS = 4096
"""How many keys `count_windows` remembers as full (it starts over when full)."""
EXPIRY_SLACK_MS = 2000
"""The most memcached keeps a counter past its time to live (`exptime` rounds up to whole
seconds, plus one): a window counter lives at most two periods and this."""

Counted = tuple[Decision, bytes]
"""A hit's decision and the window counter it was counted in (given back with `uncount_window`)."""


def counts_windows(strategy: object, rate: Rate) -> bool:
    """Whether `strategy` at `rate` is decided on window counters (`SlidingWindowCounter`
    itself, not a subclass that may decide otherwise, up to `COUNTED_LIMIT`)."""
    return type(strategy) is SlidingWindowCounter and rate.limit <= COUNTED_LIMIT


def window_key(key: bytes, wid: int, period: int) -> bytes:
    """The counter of window `wid` of `period` ms of `key`. Readable keys hold no `#` and
    hashed ones one, followed by hex digits, so `#w` makes it distinct from any other key;
    one that would pass 250 bytes is hashed again."""
    counter = b"%s#w%d/%d" % (key, wid, period)
    if len(counter) <= MAX_KEY_BYTES:
        return counter
    return b"%s#w%s" % (key[:150], hashlib.sha256(counter).hexdigest().encode("ascii"))


def previous_and_count(raw: bytes | Flagged | None) -> tuple[int, int]:
    """`(previous, count)` of a window counter as read (`(0, 0)` when missing or foreign)."""
    value = unsigned(raw)
    if value is None:
        return 0, 0
    previous, count = divmod(value, PREVIOUS_SPAN)
    return previous, count


def window_state(
    current: bytes | Flagged | None, previous: bytes | Flagged | None, wid: int
) -> list[int]:
    """`SlidingWindowCounter`'s state `[wid, count, previous]` from the counters of window
    `wid` and of the one before (read only when `wid`'s is missing or foreign)."""
    if unsigned(current) is not None:
        before, count = previous_and_count(current)
        return [wid, count, before]
    return [wid, 0, previous_and_count(previous)[1]]


Value = Optional[Union[bytes, Flagged]]
"""A window counter as read (None: missing)."""


async def with_windows_ahead(
    decision: Decision, hit: Hit, now: int, read: Callable[[int], Awaitable[Value]]
) -> Decision:
    """`decision` of `hit` at `now` (decided on `now`'s window), told the wait a retry would
    find (module docstring): when it is refused until the next window or later and that
    window has a counter (`read(window id)`), the wait of a hit decided on it at its start
    (refused until its start when admitted then), and so on for the windows after it."""
    strategy, rate, cost = hit
    if decision.allowed or cost > rate.limit:  # (never admitted: no window changes that)
        return decision
    period = rate.expire
    wid, at, told = now // period, now, decision
    while True:
        start = (wid + 1) * period
        if at + told.wait_ms < start or start - now >= 2 * period + EXPIRY_SLACK_MS:
            break
        raw = await read(wid + 1)
        if unsigned(raw) is None:
            break  # (a retry then opens it, with this window's count: the wait told)
        previous, count = previous_and_count(raw)
        wid += 1
        later = strategy.transition([wid, count, previous], start, rate, cost)[0]
        if later.allowed:
            reset = max(at - now + told.reset_ms, start - now)
            return Decision(False, start - now, told.remaining, reset, rate.limit, decision.at)
        at, told = start, later
    if at == now:
        return decision
    shift = at - now
    reset = told.reset_ms + shift if told.reset_ms > 0 else 0
    return Decision(False, told.wait_ms + shift, told.remaining, reset, rate.limit, decision.at)


def _ttl_ms(now: int, period: int) -> int:
    """A window counter lives to the end of the next window, where it weighs as the previous."""
    return 2 * period - now % period


def count_windows(
    key: bytes, hits: list[Hit], now_ms: Callable[[], int], full: dict[bytes, int]
) -> Operation[list[Counted]]:
    """Decide `hits` on `key` in order, as one round on one connection (see the module
    docstring); hits of another period than the one before them start a round of their own."""

    async def run(client: NodeClient, conn: Connection) -> list[Counted]:
        sent = sending(hits)  # (leaves out the hits of abandoned decisions: `_gate`)
        now = now_ms()
        decided: list[Counted] = []
        start = 0
        while start < len(sent):
            period = sent[start][1].expire
            end = start + 1
            while end < len(sent) and sent[end][1].expire == period:
                end += 1
            decided += await _round(client, conn, key, sent[start:end], now, full)
            start = end
        return aligned(hits, sent, decided, (UNSENT, b""))

    return run


async def _round(
    client: NodeClient,
    conn: Connection,
    key: bytes,
    hits: list[Hit],
    now: int,
    full: dict[bytes, int],
) -> list[Counted]:
    period = hits[0][1].expire
    wid = now // period
    counter = window_key(key, wid, period)
    ahead: dict[int, Value] = {}

    async def read(later: int) -> Value:
        if later not in ahead:
            ahead[later] = await client.get_on(conn, window_key(key, later, period))
        return ahead[later]

    async def known(later: int) -> Value:
        return ahead.get(later)

    decided: list[Counted] = []
    state: list[int] = []
    if full.get(key, 0) > now:
        following = window_key(key, wid + 1, period)
        values = await client.get_many_on(conn, [counter, following])
        raw, ahead[wid + 1] = values.get(counter), values.get(following)
        if unsigned(raw) is not None:
            state = window_state(raw, None, wid)
            for strategy, rate, cost in hits:
                decision = strategy.transition(state, now, rate, cost)[0]
                if decision.allowed:
                    break
                decided.append((decision, counter))
    rest = hits[len(decided) :]
    if rest:
        total = sum(cost for _, _, cost in rest)
        previous, count = await _add(client, conn, key, wid, total, now, period)
        current, refused = count - total, 0
        for strategy, rate, cost in rest:
            decision, taken, _ = strategy.transition([wid, current, previous], now, rate, cost)
            if taken is None:
                refused += cost
            else:
                current += cost
            decided.append((decision, counter))
        if refused:
            await client.incr_on(conn, counter, refused, b"decr")
        state = [wid, current, previous]
    for index, ((decision, _), hit) in enumerate(zip(decided, hits)):
        if not decision.allowed:
            decided[index] = (await with_windows_ahead(decision, hit, now, read), counter)
    strategy, rate, _ = hits[-1]
    probe = strategy.transition(state, now, rate, 1)[0]
    probe = await with_windows_ahead(probe, (strategy, rate, 1), now, known)  # (no read)
    if probe.allowed:
        full.pop(key, None)
    else:
        if len(full) >= FULL_KEYS:
            full.clear()
        full[key] = now + int(probe.wait_ms)
    return decided


async def _add(
    client: NodeClient, conn: Connection, key: bytes, wid: int, amount: int, now: int, period: int
) -> tuple[int, int]:
    """`(previous, count)` after adding `amount` to window `wid`: one `incr`; opening the
    window (`get` of the previous one, `add`) when it has no counter yet, or `cas` over a
    value no counter wrote."""
    counter = window_key(key, wid, period)
    for _ in range(ATTEMPTS):
        token = None
        try:
            value = await client.incr_on(conn, counter, amount)
        except NotNumeric:
            raw, token = await client.gets_on(conn, counter)
            if unsigned(raw) is not None:
                continue  # replaced by a count meanwhile: counted by the next `incr`
            value = None
        if value is not None:
            previous, count = divmod(value, PREVIOUS_SPAN)
            return previous, count
        before = await client.get_on(conn, window_key(key, wid - 1, period))
        previous = previous_and_count(before)[1]
        opened = b"%d" % (previous * PREVIOUS_SPAN + amount)
        expiry = exptime(_ttl_ms(now, period) / 1000)
        if token is None:
            stored = await client.store_on(conn, b"add", counter, opened, expiry)
        else:
            stored = await client.store_on(conn, b"cas", counter, opened, expiry, token)
        if stored:
            marker = Flagged(b"%d" % period, MARKER_FLAG)
            await client.store_on(conn, b"set", key, marker, expiry)
            return previous, amount
    raise ReplyError(f"lost {ATTEMPTS} races in a row opening a sliding window")


def _period(raw: bytes | Flagged | None) -> int | None:
    if isinstance(raw, Flagged) and raw.flags == MARKER_FLAG and raw.value.isdigit():
        return int(raw.value) or None
    return None


def forget_windows(key: bytes, now_ms: Callable[[], int]) -> Operation[bool]:
    """Delete `key` and, when it is a window counters' marker, the counters of the open
    window and of the one before (older ones weigh nothing); True when any existed."""

    async def run(client: NodeClient, conn: Connection) -> bool:
        period = _period(await client.get_on(conn, key))
        removed = await client.delete_on(conn, key)
        if period is not None:
            wid = now_ms() // period
            for counter in (window_key(key, wid, period), window_key(key, wid - 1, period)):
                removed = await client.delete_on(conn, counter) or removed
        return removed

    return run


def describe_marker(
    key: bytes, raw: bytes | Flagged | None, now_ms: Callable[[], int]
) -> Operation[str | None]:
    """What a marker stands for, `"window W: C hit(s), P in the one before (period N ms)"`
    (None when `raw` is no marker)."""
    period = _period(raw)

    async def run(client: NodeClient, conn: Connection) -> str | None:
        if period is None:
            return None
        wid = now_ms() // period
        current, before = window_key(key, wid, period), window_key(key, wid - 1, period)
        values = await client.get_many_on(conn, [current, before])
        state = window_state(values.get(current), values.get(before), wid)
        return (
            f"sliding window counter: {state[1]} in window {wid}, {state[2]} in the one "
            f"before (period {period} ms)"
        )

    return run


def uncount_window(counter: bytes, amount: int) -> Operation[None]:
    """Give back `amount` counted in the window counter `counter` (one `decr`); nothing when
    another program's value replaced it meanwhile."""

    async def run(client: NodeClient, conn: Connection) -> None:
        try:
            await client.incr_on(conn, counter, amount, b"decr")
        except NotNumeric:
            return

    return run


def refund_windows(key: bytes, amount: int, rate: Rate, now: int) -> Operation[None]:
    """Give `amount` back as `SlidingWindowCounter.refund` does, under `gets`/`cas`: off the
    open window's count first, then off the previous count it weighs; with no open window,
    off the previous window's own count. Never below 0; nothing to do for missing counters
    (or foreign ones: no state)."""
    period = rate.expire
    wid = now // period

    async def run(client: NodeClient, conn: Connection) -> None:
        for _ in range(ATTEMPTS):
            counter = window_key(key, wid, period)
            raw, token = await client.gets_on(conn, counter)
            ttl_ms = _ttl_ms(now, period)
            if unsigned(raw) is not None:
                previous, count = previous_and_count(raw)
                back = min(amount, count)
                value = max(previous - (amount - back), 0) * PREVIOUS_SPAN + count - back
            else:
                counter = window_key(key, wid - 1, period)
                raw, token = await client.gets_on(conn, counter)
                if unsigned(raw) is None:
                    return
                previous, count = previous_and_count(raw)
                value = previous * PREVIOUS_SPAN + max(count - amount, 0)
                ttl_ms -= period
            data, expiry = b"%d" % value, exptime(ttl_ms / 1000)
            if await client.store_on(conn, b"cas", counter, data, expiry, token):
                return
        raise ReplyError(f"lost {ATTEMPTS} compare-and-swap races in a row refunding a window")

    return run
