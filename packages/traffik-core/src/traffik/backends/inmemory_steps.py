"""In-place steps for `InMemoryBackend`: each built-in strategy's decision, one closure per (strategy, rate, cost).

A step decides one hit on a live store entry (`[state, expires_at_ms, ...]`; the state is
None for a key that does not exist yet) at `now`, and when it charges it writes the new state
and expiry into the entry, changing the state list in place. It is the strategy's own
decision (`FixedWindow.decide`, `transition`) with the numbers that depend only on the rate
and the cost worked out once and no call inside: this is the in-memory hot path, and a call
or an allocation is a good part of its cost. A ceiling `ceil(x / d)` is `(x + d - 1) // d`,
with `d - 1` folded into a constant. A strategy without a step of its own runs its
`transition`, and so does a step for the cases it leaves to it: a state stored in another
form (text, another rate's, written before the rate was kept), and one whose time is later
than `now` (written by a host whose clock is ahead; see `traffik.strategies.base`), which
costs the usual case at most one comparison. A transition's state is written, refused or
not: a refused hit's is the state it read converted from another rate's
(`traffik.strategies.base.Transition`), so a refusal on a state of its own rate writes
nothing. `tests/test_inmemory_steps.py` holds every step to its strategy's decisions and
states on random timelines.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Optional

from traffik.decision import Decision
from traffik.strategies.base import AHEAD_MS, never_admitted
from traffik.strategies.gcra import GCRA
from traffik.strategies.leaky_bucket import LeakyBucket
from traffik.strategies.sliding_window import SlidingWindowCounter
from traffik.strategies.state import decode_state
from traffik.strategies.steps import IN_PLACE_COUNTER, IN_PLACE_STATE
from traffik.strategies.token_bucket import TokenBucket, TokenBucketWithDebt

if TYPE_CHECKING:
    from traffik.rates import Rate

__all__ = ["Counted", "Step", "counted_step", "in_place_step", "transition_step", "whole_number"]

Step = Callable[[list[Any], int], Decision]
"""`step(entry, now_ms) -> Decision`, charging the entry in place."""


def whole_number(value: Any) -> int:
    """A stored counter as an int: a number kept as text is read, anything else is 0."""
    if isinstance(value, int):
        return value
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def in_place_step(strategy: Any, rate: Rate, cost: int, kind: int) -> Optional[Step]:
    """The step deciding `strategy` at `rate` for hits of `cost` (`kind` from
    `traffik.strategies.steps.in_place_kind`), or None when it cannot be made in place."""
    if kind == IN_PLACE_COUNTER:
        return _counter(rate, cost)
    if kind != IN_PLACE_STATE:
        return None
    make = _STEPS.get(type(strategy))
    return (make or transition_step)(strategy, rate, cost)


def _read(raw: Any) -> Optional[list[int]]:
    """A stored state as a list (decoded when kept as text; None when missing or corrupt)."""
    return raw if raw is None or type(raw) is list else decode_state(raw)


def _counter(rate: Rate, cost: int) -> Step:
    """`FixedWindow`: `increment_with_ttl` and the decision on the count (a window that
    ends too late cut to one period, `fixed_window.too_late`)."""
    limit, period = rate.limit, rate.expire
    far = period + AHEAD_MS

    def step(entry: list[Any], now: int) -> Decision:
        count, expires = entry[0], entry[1]
        if type(count) is int and expires is not None:
            count += cost
        else:  # a new key, a count kept as text, or one with no expiry yet (as `increment`)
            count = cost if count is None else whole_number(count) + cost
            if expires is None:
                expires = entry[1] = now + period
        entry[0] = count
        left = expires - now
        if left > far:
            left = period
            entry[1] = now + period
        if count > limit:
            return Decision(False, left, 0, left, limit)
        return Decision(True, 0, limit - count, left, limit, now)

    return step


Counted = Callable[[Optional[list[Any]], int, bool], Decision]
"""`counted(entry, now_ms, cut) -> Decision`: a window counter's decision, nothing charged."""


def counted_step(rate: Rate, cost: int) -> Counted:
    """`FixedWindow` decided as `evaluate_all` decides it, for several items all or nothing:
    on the live entry's count before the hit (None: no window yet), charging nothing. The
    time left is the window's, one period for a window with no count (a count refunded to
    zero, say) or none yet. With `cut`, a window that ends too late is cut to one period
    from now in the entry (`fixed_window.too_late`), charged or not; a cost above the limit
    is never admitted (`settled`)."""
    limit, period = rate.limit, rate.expire
    far = period + AHEAD_MS

    def counted(entry: Optional[list[Any]], now: int, cut: bool) -> Decision:
        count, left = 0, period
        if entry is not None:
            count, expires = entry[0], entry[1]
            if type(count) is not int:
                count = whole_number(count)
            if expires is not None:
                ttl = expires - now
                if ttl > far:
                    if cut:
                        entry[1] = now + period
                elif count and ttl > 0:
                    left = max(int(-(-ttl // 1)), 1)
        if cost > limit:
            return never_admitted(rate)
        count += cost
        if count > limit:
            return Decision(False, left, 0, left, limit)
        return Decision(True, 0, limit - count, left, limit)

    return counted


def _token_bucket(strategy: TokenBucket, rate: Rate, cost: int) -> Step:
    """`TokenBucket.transition` (and `TokenBucketWithDebt`'s): `[tokens, last_ms, limit,
    period_ms]`, scaled; any other state (text, one written under another rate) is decided
    by its `transition`."""
    period, refill, limit = rate.expire, rate.limit, rate.limit
    full = strategy._bucket(rate) * period
    floor = -strategy._debt() * period
    need = cost * period
    full_up = full + refill - 1
    decided = transition_step(strategy, rate, cost)

    def step(entry: list[Any], now: int) -> Decision:
        state = entry[0]
        if type(state) is not list or len(state) != 4 or state[3] != period or state[2] != limit:
            if state is not None:
                return decided(entry, now)
            state = [full, now, limit, period]
        tokens = state[0]
        elapsed = now - state[1]
        if elapsed > 0:
            tokens += elapsed * refill
        elif elapsed:  # a state written later than `now`: decided at its time
            return decided(entry, now)
        if tokens > full:
            tokens = full
        left = tokens - need
        if left >= floor:
            state[0], state[1] = left, now
            entry[0] = state
            full_in = (full_up - left) // refill
            entry[1] = now + (full_in if full_in > 1 else 1)
            return Decision(True, 0, (left - floor) // period, full_in, limit, now)
        wait = (floor - left + refill - 1) // refill
        remaining = (tokens - floor) // period
        return Decision(False, wait, max(remaining, 0), (full_up - tokens) // refill, limit)

    return step


def _gcra(strategy: GCRA, rate: Rate, cost: int) -> Step:
    """`GCRA.transition`: `[tat_ms, tat_rest, limit, period_ms]`, the arrival time in
    `1/limit` ms (none when further ahead than `GCRA._reach`); any other state (text, one
    written under another rate) is decided by its `transition`."""
    limit, interval = rate.limit, rate.expire
    span = strategy.tolerance(rate) + interval
    add = cost * interval
    room = span - add  # admitted while the backlog is at most this
    slack = strategy._slack(rate)  # whole again once the backlog is down to this
    lead = limit - 1 - slack  # (backlog + lead) // limit: the reset
    reach = strategy._reach(interval, rate)  # (an arrival time further ahead: no backlog)
    decided = transition_step(strategy, rate, cost)

    def step(entry: list[Any], now: int) -> Decision:
        state = entry[0]
        if type(state) is not list or len(state) != 4 or state[3] != interval or state[2] != limit:
            if state is not None:
                return decided(entry, now)
            state = [now, 0, limit, interval]
        tat, rest = state[0], state[1]
        if tat > now or (tat == now and rest > 0):
            backlog = (tat - now) * limit + rest if tat - now <= reach else 0
        else:
            backlog = 0
        if backlog <= room:
            after = backlog + add
            tat_ms, tat_rest = divmod(after, limit)
            state[0], state[1] = now + tat_ms, tat_rest
            entry[0] = state
            arrival = tat_ms + 1 if tat_rest else tat_ms
            entry[1] = now + (arrival if arrival > 1 else 1)
            reset = (after + lead) // limit if after > slack else 0
            return Decision(True, 0, (room - backlog) // interval, reset, limit, now)
        wait = (backlog - room + limit - 1) // limit
        remaining = (span - backlog) // interval
        return Decision(False, wait, max(remaining, 0), (backlog + lead) // limit, limit)

    return step


def _sliding_window_counter(strategy: SlidingWindowCounter, rate: Rate, cost: int) -> Step:
    """`SlidingWindowCounter.transition`: `[window_id, current, previous, period_ms]`; any
    other state (text, legacy, counted in another period) is decided by its `transition`."""
    limit, period = rate.limit, rate.expire
    top = limit * period
    room = top - cost * period  # admitted while the weighted count is at most this
    decided = transition_step(strategy, rate, cost)

    def step(entry: list[Any], now: int) -> Decision:
        wid, into = divmod(now, period)
        left = period - into
        state = entry[0]
        if type(state) is not list or len(state) != 4 or state[3] != period:
            if state is not None:
                return decided(entry, now)
            state = [wid, 0, 0, period]
        seen = state[0]
        if seen == wid:
            current, previous = state[1], state[2]
        elif seen == wid - 1:
            current, previous = 0, state[1]
        elif seen > wid:  # a later window's state: decided in it
            return decided(entry, now)
        else:
            current = previous = 0
        weighted = previous * left + current * period
        if weighted <= room:
            state[0], state[1], state[2] = wid, current + cost, previous
            entry[0] = state
            ttl = left + period
            entry[1] = now + ttl
            return Decision(True, 0, (room - weighted) // period, ttl, limit, now)
        # In this window, `t` ms from now: previous * (left - t) + (current + cost) * period <= top.
        excess = weighted - room
        if current + cost <= limit and previous > 0 and (excess + previous - 1) // previous < left:
            wait = (excess + previous - 1) // previous
        else:
            # From the next window on, `s` ms into it: current * (period - s) + cost * period <= top.
            over = (current + cost - limit) * period
            wait = left + (max((over + current - 1) // current, 0) if current > 0 else 0)
        reset = left + period if current > 0 else (left if previous > 0 else 0)
        return Decision(False, wait, max(top - weighted, 0) // period, reset, limit)

    return step


def _leaky_bucket(strategy: LeakyBucket, rate: Rate, cost: int) -> Step:
    """`LeakyBucket.transition`: `[level, last_ms, limit, period_ms]`, the level scaled; any
    other state is decided by its `transition`."""
    limit, period = rate.limit, rate.expire
    top = limit * period
    add = cost * period
    room = top - add  # admitted while the level is at most this
    up = limit - 1
    decided = transition_step(strategy, rate, cost)

    def step(entry: list[Any], now: int) -> Decision:
        state = entry[0]
        if type(state) is not list or len(state) != 4 or state[3] != period or state[2] != limit:
            if state is not None:
                return decided(entry, now)
            state = [0, now, limit, period]
        level = state[0]
        elapsed = now - state[1]
        if elapsed > 0:
            level -= elapsed * limit
        elif elapsed:  # a state written later than `now`: decided at its time
            return decided(entry, now)
        if level < 0:
            level = 0
        if level <= room:
            after = level + add
            state[0], state[1] = after, now
            entry[0] = state
            reset = (after + up) // limit
            entry[1] = now + (reset if reset > 1 else 1)
            return Decision(True, 0, (room - level) // period, reset, limit, now)
        wait = (level - room + up) // limit
        return Decision(False, wait, max(top - level, 0) // period, (level + up) // limit, limit)

    return step


def transition_step(strategy: Any, rate: Rate, cost: int) -> Step:
    """Any other state strategy: its `transition`, on the state as it is stored; the state
    it returns is written, a refused hit's too (the one it read, converted)."""

    def step(entry: list[Any], now: int) -> Decision:
        decision, new_state, ttl_ms = strategy.transition(_read(entry[0]), now, rate, cost)
        if new_state is not None:
            entry[0], entry[1] = new_state, now + ttl_ms
            decision.at = now
        return decision

    return step


_STEPS: dict[type[Any], Callable[[Any, Rate, int], Step]] = {
    TokenBucket: _token_bucket,
    TokenBucketWithDebt: _token_bucket,
    GCRA: _gcra,
    SlidingWindowCounter: _sliding_window_counter,
    LeakyBucket: _leaky_bucket,
}
"""The built-in strategies with a step of their own (exactly these classes: a subclass may
change the decision, and runs its `transition`)."""
