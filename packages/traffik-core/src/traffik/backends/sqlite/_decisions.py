"""The decision steps, run inside one transaction: one strategy transition, hits on one key in turn, or several items all or nothing.

Each takes the backend's `Rows`, the transaction's cursor and `now` read once the
transaction began; with `commit=False` it is a plain read that writes nothing (`get_stat`).
A decision that charges says when it was made (`Decision.at`: what a refund gives back
depends on it, see `traffik.outcomes`).
`state_change` and `counter_change` make the first two a row's change instead, once per
throttle's strategy, rate and cost, for the one `UPDATE` that decides on a row that exists
(`RewritingCursor.rewrite`): the change takes the row's value and expiry and reads the
backend's clock itself, as it is then (it may be set after the change was made), the write
lock held.
"""

from __future__ import annotations

from collections.abc import Sequence
from time import time_ns
from typing import TYPE_CHECKING

from traffik.backends.sqlite._rows import Rows, live, number
from traffik.clock import system_ms
from traffik.decision import Decision
from traffik.strategies.base import AHEAD_MS
from traffik.strategies.fixed_window import counted_decision, counter_decision, too_late
from traffik.strategies.state import decode_state, encode_state
from traffik.strategies.steps import IN_PLACE_COUNTER, charged, combine, is_counter

if TYPE_CHECKING:
    import sqlite3

    from traffik.backends.base import ThrottleBackend
    from traffik.backends.sqlite._rewrite import Change
    from traffik.rates import Rate
    from traffik.strategies.base import StateStrategy
    from traffik.strategies.steps import Item

__all__ = [
    "Hit",
    "count_hit",
    "counter_change",
    "decide",
    "decide_all",
    "decide_in_turn",
    "refund_all",
    "state_change",
]

Hit = tuple[str, "StateStrategy", "Rate", int, int]
"""One throttle hit, as `decide_in_turn` takes it: its namespaced key, the built-in strategy,
the rate, the cost, and how it is decided (`IN_PLACE_COUNTER` or `IN_PLACE_STATE`)."""


def decide(
    rows: Rows,
    cursor: sqlite3.Cursor,
    now: int,
    key: str,
    strategy: StateStrategy,
    rate: Rate,
    cost: int,
    commit: bool,
) -> Decision:
    """Read the state, run `strategy.transition`, write the new state."""
    row = Rows.read(cursor, key)
    value = live(row, now)
    state = None if value is None else decode_state(value)
    decision, new_state, ttl_ms = strategy.transition(state, now, rate, cost)
    if commit and new_state is not None:
        rows.write(cursor, key, encode_state(new_state), now + ttl_ms, row is not None, now)
        decision.at = now
    return decision


def count_hit(
    rows: Rows, cursor: sqlite3.Cursor, now: int, key: str, rate: Rate, cost: int
) -> Decision:
    """A counter's hit: `Rows.count` and `counted_decision`."""
    total, gone_in = rows.count(cursor, now, key, cost, rate.expire)
    decision = counted_decision(total, gone_in, rate)
    decision.at = now
    return decision


def state_change(
    backend: ThrottleBackend, strategy: StateStrategy, rate: Rate, cost: int
) -> Change:
    """`decide` as a row's change (`RewritingCursor.rewrite`), for one strategy, rate and
    cost: the row's new value and expiry (as they were, for a hit that changes nothing), and
    the decision. The time is read in the change from `backend.now_ms` as it is then (a
    clock set later counts), with the write lock held."""

    def change(value: str, expires_at: int | None) -> tuple[str, int | None, Decision]:
        now_ms = backend.now_ms
        now = time_ns() // 1_000_000 if now_ms is system_ms else now_ms()
        state = decode_state(value) if expires_at is None or expires_at > now else None
        decision, new_state, ttl_ms = strategy.transition(state, now, rate, cost)
        if new_state is None:
            return value, expires_at, decision
        decision.at = now
        return encode_state(new_state), now + ttl_ms, decision

    return change


def counter_change(backend: ThrottleBackend, rate: Rate, amount: int) -> Change:
    """`Rows.count` and `counted_decision` as a row's change (`RewritingCursor.rewrite`),
    for one rate and cost: the counter's new value and expiry, and the decision. The time
    is read in the change from `backend.now_ms` as it is then, with the write lock held."""
    limit, period = rate.limit, rate.expire
    far = period + AHEAD_MS  # (a window ending later is cut to one period: `too_late`)

    def change(value: str, expires_at: int | None) -> tuple[str, int | None, Decision]:
        now_ms = backend.now_ms
        now = time_ns() // 1_000_000 if now_ms is system_ms else now_ms()
        if expires_at is not None and expires_at <= now:  # gone: it starts over
            count, expires_at = amount, now + period
        else:
            try:
                count = int(value) + amount
            except ValueError:  # (text that is not a whole number counts as 0: `number`)
                count = amount
            if expires_at is None or expires_at - now > far:
                expires_at = now + period
        left = expires_at - now  # (`counted_decision`'s wait, inlined: the hot path)
        if left <= 0:
            left = period
        if count > limit:
            return str(count), expires_at, Decision(False, left, 0, left, limit, now)
        return str(count), expires_at, Decision(True, 0, limit - count, left, limit, now)

    return change


def decide_in_turn(
    rows: Rows, cursor: sqlite3.Cursor, now: int, hits: Sequence[Hit]
) -> list[Decision]:
    """Hits on one key (all on the first hit's key, of its kind), decided in order as if
    each had its own transaction at `now`, with one read and one write.

    A counter adds every cost at once, each hit getting the count it would have reached
    alone; a state goes through each hit's `transition` on the state the hits before it
    left (a refused hit leaves it as it was, but for a state it converted from another
    rate's: `traffik.strategies.base.Transition`), and the last new state is written, with
    its time to live."""
    key, kind = hits[0][0], hits[0][4]
    if kind == IN_PLACE_COUNTER:
        total, gone_in = rows.count(
            cursor, now, key, sum(hit[3] for hit in hits), hits[0][2].expire
        )
        decisions: list[Decision] = []
        after = total
        for _, _, rate, cost, _ in reversed(hits):
            decision = counted_decision(after, gone_in, rate)
            decision.at = now
            decisions.append(decision)
            after -= cost
        decisions.reverse()
        return decisions
    row = Rows.read(cursor, key)
    value = live(row, now)
    state = None if value is None else decode_state(value)
    decisions = []
    written, ttl = None, 0
    for _, strategy, rate, cost, _ in hits:
        decision, new_state, ttl_ms = strategy.transition(state, now, rate, cost)
        decisions.append(decision)
        if new_state is not None:
            state = written = new_state
            ttl = ttl_ms
            decision.at = now
    if written is not None:
        rows.write(cursor, key, encode_state(written), now + ttl, row is not None, now)
    return decisions


def decide_all(
    rows: Rows,
    cursor: sqlite3.Cursor,
    now: int,
    items: Sequence[Item],
    keys: Sequence[str],
    commit: bool,
) -> Decision:
    """Every item decided (its state under the same index of `keys`), then charged all or
    nothing (`traffik.strategies.steps`); a refusing item's state is written when it
    converted another rate's (`traffik.strategies.base.Transition`), charging nothing."""
    parts: list[Decision] = []
    counters: list[bool] = []
    pending: list[tuple[bool, list[int] | None, int]] = []
    for item, key in zip(items, keys):
        row = Rows.read(cursor, key)
        value = live(row, now)
        counter = is_counter(item.strategy)
        counters.append(counter)
        if counter:
            count = 0 if value is None else number(value)
            left = None if value is None or row is None or row[1] is None else row[1] - now
            if commit and value is not None and too_late(left, item.rate.expire):
                left = item.rate.expire  # (cut to one period, charged or not)
                rows.write(cursor, key, value, now + left, True, now)
            parts.append(counter_decision(count, left, item.rate, item.cost))
            pending.append((row is not None, None, 0))
        else:
            state = None if value is None else decode_state(value)
            decision, new_state, ttl_ms = item.strategy.transition(state, now, item.rate, item.cost)
            parts.append(decision)
            pending.append((row is not None, new_state, ttl_ms))
    if commit:
        written: set[str] = set()
        for item, key, charge, part, counter, (exists, new_state, ttl_ms) in zip(
            items, keys, charged(parts, items), parts, counters, pending
        ):
            if not charge and (part.allowed or new_state is None):
                continue  # (a refusing item writes a state converted from another rate's)
            if counter:
                rows.add(cursor, key, item.cost, item.rate.expire, now)
            elif new_state is not None:
                exists = exists or key in written  # two items on one key: the row is there now
                rows.write(cursor, key, encode_state(new_state), now + ttl_ms, exists, now)
            written.add(key)
    decision = combine(parts, [item.cost for item in items])
    decision.at = now
    return decision


def refund_all(
    rows: Rows, cursor: sqlite3.Cursor, now: int, items: Sequence[Item], keys: Sequence[str]
) -> None:
    """Every item's cost given back, never past a full budget."""
    for item, key in zip(items, keys):
        row = Rows.read(cursor, key)
        value = live(row, now)
        if value is None or row is None:
            continue
        if is_counter(item.strategy):
            rows.write(cursor, key, str(max(number(value) - item.cost, 0)), row[1], True, now)
            continue
        state = decode_state(value)
        if state is not None:
            new_state, ttl_ms = item.strategy.refund(state, now, item.rate, item.cost)
            rows.write(cursor, key, encode_state(new_state), now + ttl_ms, True, now)
