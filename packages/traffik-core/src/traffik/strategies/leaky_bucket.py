"""Leaky buckets: `LeakyBucket` (a level that drains) and `LeakyBucketWithQueue` (a FIFO that drains)."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Optional

from traffik.decision import Decision
from traffik.strategies._another_rate import (
    Held,
    converted,
    held_at_its_rate,
    of_another_rate,
    rated_amount,
    rescaled,
)
from traffik.strategies.base import (
    EXACT_LIMIT,
    Refund,
    StateStrategy,
    Transition,
    ceil_div,
    dated,
    draining_held,
    later,
    later_refund,
    never_admitted,
)
from traffik.strategies.stat_metadata import (  # (traffik 1.2 exported them here)
    LeakyBucketStatMetadata,
    LeakyBucketWithQueueStatMetadata,
)

if TYPE_CHECKING:
    from traffik.rates import Rate

__all__ = [
    "LeakyBucket",
    "LeakyBucketStatMetadata",
    "LeakyBucketStrategy",
    "LeakyBucketWithQueue",
    "LeakyBucketWithQueueStatMetadata",
    "LeakyBucketWithQueueStrategy",
]


def _admit(level: int, rate: Rate, cost: int) -> tuple[bool, Decision]:
    """Whether `cost` fits on top of `level` (scaled by the period), and the decision either way."""
    limit, period = rate.limit, rate.expire
    top, add = limit * period, cost * period
    if level + add <= top:
        level += add
        return True, Decision(True, 0, (top - level) // period, -(-level // limit), limit)
    if add > top:  # (more than `capacity`: never admitted, as `settled` says)
        return False, never_admitted(rate)
    wait = -(-(level + add - top) // limit)
    return False, Decision(False, wait, max(top - level, 0) // period, -(-level // limit), limit)


def _time(state: Optional[list[int]]) -> Optional[int]:
    """The last update of a `[level, last_ms, ...]` state (None: not such a state)."""
    return state[1] if state is not None and len(state) in (2, 4) else None


def _drained(state: list[int], now: int, limit: int) -> int:
    """The level (scaled) of `state` (`[level, last_ms, ...]`) at `now`, draining `limit` per ms."""
    level, elapsed = state[0], max(now - state[1], 0)
    return 0 if elapsed >= ceil_div(level, limit) else level - elapsed * limit


class LeakyBucket(StateStrategy):
    """A bucket of capacity `limit` that drains at `limit` per period; a hit adds `cost`.

    State: `[level, last_ms, limit, period_ms]`, the level scaled by the period (`limit`
    units drain per millisecond), then the rate it was written under. Like traffik 1.2 it
    admits a first burst of `limit`, then the drain rate; a rejected hit adds nothing. The
    key expires when the bucket is empty. Read under another rate, the level at that moment,
    rounded up to whole units, is the new rate's level (at most its capacity); a rejected
    hit writes the level exactly, unless the old rate's bucket is larger
    (`_another_rate.converted`, `base.Transition`). A `[level, last_ms]` state (written
    before the rate was kept) is read as written under the current rate. A host whose clock
    is behind `last_ms` decides at it.
    """

    name: ClassVar[str] = "leaky_bucket"
    suffix: ClassVar[str] = ":lb"
    script: ClassVar[str] = "leaky_bucket"

    @staticmethod
    def _level(state: Optional[list[int]], now: int, rate: Rate) -> int:
        """The bucket's level (scaled) at `now`."""
        return rated_amount(state, now, rate, _drained, rate.limit)

    def transition(self, state: Optional[list[int]], now: int, rate: Rate, cost: int) -> Transition:
        state, at = dated(state, _time(state), now)
        if at > now:
            return later(self.transition(state, at, rate, cost), at - now)
        level = self._level(state, now, rate)
        admitted, decision = _admit(level, rate, cost)
        if not admitted:
            if state is not None and of_another_rate(state, rate):

                def carry(drained: int, scale: int) -> Transition:
                    level = rescaled(drained, scale, rate.expire)
                    kept = [level, now, rate.limit, rate.expire]
                    return _admit(level, rate, cost)[1], kept, _empty_in(level, rate)

                held = held_at_its_rate(state, now, _drained)
                return converted(decision, held, rate.limit, cost, carry)
            return decision, None, 0
        state = [level + cost * rate.expire, now, rate.limit, rate.expire]
        return decision, state, max(int(decision.reset_ms), 1)

    held = draining_held

    def refund(self, state: Optional[list[int]], now: int, rate: Rate, cost: int) -> Refund:
        state, at = dated(state, _time(state), now)
        if at > now:
            return later_refund(self.refund(state, at, rate, cost), at - now)
        level = max(self._level(state, now, rate) - cost * rate.expire, 0)
        return [level, now, rate.limit, rate.expire], _empty_in(level, rate)


class LeakyBucketWithQueue(StateStrategy):
    """A leaky bucket that keeps its content as a FIFO of `(time, cost)` entries, drained from the head.

    State: `[last_ms, t1, left1, t2, left2, ..., limit, -period_ms]`, each entry's `left`
    scaled by the period, then the rate it was written under, its period negative: a `left`
    never is, so a state written before the rate was kept (`[last_ms, t1, left1, ...]`) is
    read as written under the current rate. Decisions match `LeakyBucket`, a rate change
    included: the level, rounded up to whole units (at most the new capacity), is kept by
    the newest entries, each holding its own units rounded up (a rejected hit writes the
    entries holding exactly what they held: `_exactly`); the queue shows what is
    waiting to drain (`get_stat`, debugging). A host whose clock is behind `last_ms` decides
    at it.
    """

    name: ClassVar[str] = "leaky_bucket_with_queue"
    suffix: ClassVar[str] = ":lbq"
    script: ClassVar[str] = "leaky_bucket_with_queue"

    @staticmethod
    def _queue(state: Optional[list[int]], now: int, rate: Rate) -> list[int]:
        """What is still queued at `now`: `[t1, left1, ...]`, each `left` scaled."""
        if not state or len(state) % 2 == 0:
            return []
        limit, period = rate.limit, rate.expire
        written = _rate_of(state)
        if written is not None:  # `[..., limit, -period_ms]`: the rate it was written under
            (limit, period), state = written, state[:-2]
            if limit != rate.limit or period != rate.expire:
                if not _exact(limit, period):
                    return []  # no rate: a fresh key
                return _rescaled(_drain(state, now, limit, period), period, rate)
        return _drain(state, now, limit, period)

    @staticmethod
    def _held(state: list[int], now: int) -> Optional[Held]:
        """What a state ending with the rate it was written under holds at `now` under that
        rate (None: no rate, a fresh key)."""
        limit, period = state[-2], -state[-1]
        if not _exact(limit, period):
            return None
        return sum(_drain(state[:-2], now, limit, period)[1::2]), period, limit, limit * period

    @staticmethod
    def _time(state: Optional[list[int]]) -> Optional[int]:
        """The `last_ms` of `state` (None: not such a state)."""
        return state[0] if state and len(state) % 2 else None

    def transition(self, state: Optional[list[int]], now: int, rate: Rate, cost: int) -> Transition:
        state, at = dated(state, self._time(state), now)
        if at > now:
            return later(self.transition(state, at, rate, cost), at - now)
        queue = self._queue(state, now, rate)
        level = sum(queue[1::2])
        admitted, decision = _admit(level, rate, cost)
        if not admitted:
            written = _rate_of(state)
            if state is not None and written is not None and written != (rate.limit, rate.expire):

                def carry(_level: int, scale: int) -> Transition:
                    assert state is not None and written is not None  # (for mypy)
                    entries = _drain(state[:-2], now, written[0], scale)
                    queue = _exactly(entries, scale, rate)
                    level = sum(queue[1::2])
                    kept = [now, *queue, rate.limit, -rate.expire]
                    return _admit(level, rate, cost)[1], kept, _empty_in(level, rate)

                return converted(decision, self._held(state, now), rate.limit, cost, carry)
            return decision, None, 0
        queue.append(now)
        queue.append(cost * rate.expire)
        return decision, [now, *queue, rate.limit, -rate.expire], max(int(decision.reset_ms), 1)

    held = draining_held

    def refund(self, state: Optional[list[int]], now: int, rate: Rate, cost: int) -> Refund:
        state, at = dated(state, self._time(state), now)
        if at > now:
            return later_refund(self.refund(state, at, rate, cost), at - now)
        queue = self._queue(state, now, rate)
        back = cost * rate.expire
        while queue and back:  # the newest entries leave first
            taken = min(queue[-1], back)
            queue[-1] -= taken
            back -= taken
            if not queue[-1]:
                del queue[-2:]
        state = [now, *queue, rate.limit, -rate.expire]
        return state, _empty_in(sum(queue[1::2]), rate)


def _empty_in(level: int, rate: Rate) -> int:
    """The TTL of a state whose level (scaled) is `level`: until it has drained (at least 1)."""
    return max(ceil_div(level, rate.limit), 1)


def _exact(limit: int, period: int) -> bool:
    """Whether a queue's rate is one its transition decides exactly."""
    return limit >= 1 and 2 * limit * period < EXACT_LIMIT


def _rate_of(state: Optional[list[int]]) -> Optional[tuple[int, int]]:
    """The rate `(limit, period_ms)` a `LeakyBucketWithQueue` state (odd in length) ends with
    (`[..., limit, -period_ms]`), or None when it has none."""
    if state and len(state) % 2 and len(state) >= 3 and state[-1] < 0:
        return state[-2], -state[-1]
    return None


def _drain(state: list[int], now: int, limit: int, period: int) -> list[int]:
    """The entries of `[last_ms, t1, left1, ...]` still queued at `now`, draining `limit`
    per ms from the head."""
    queue: list[int] = []
    # A full bucket drains in one period: longer idle times change nothing more.
    drained = min(max(now - state[0], 0), period) * limit
    for i in range(1, len(state) - 1, 2):
        left = state[i + 1]
        if drained >= left:
            drained -= left
            continue
        queue.append(state[i])
        queue.append(left - drained)
        drained = 0
    return queue


def _exactly(queue: list[int], period: int, rate: Rate) -> list[int]:
    """A queue scaled by `period` as `rate`'s holding the same (`_another_rate.rescaled`):
    from its head, each sum of the entries up to one is the old one's rescaled (rounded up),
    so the whole is; an entry left with nothing leaves."""
    kept: list[int] = []
    total = before = 0
    for i in range(0, len(queue) - 1, 2):
        total += queue[i + 1]
        upto = rescaled(total, period, rate.expire)
        if upto > before:
            kept += [queue[i], upto - before]
            before = upto
    return kept


def _rescaled(queue: list[int], period: int, rate: Rate) -> list[int]:
    """A queue scaled by `period` as `rate`'s: its units rounded up, at most `rate.limit`,
    kept by the newest entries (each its own units rounded up)."""
    units = min(ceil_div(sum(queue[1::2]), period), rate.limit)
    kept: list[int] = []
    for i in range(len(queue) - 2, -1, -2):
        if not units:
            break
        taken = min(ceil_div(queue[i + 1], period), units)
        units -= taken
        kept[:0] = [queue[i], taken * rate.expire]
    return kept


LeakyBucketStrategy = LeakyBucket
LeakyBucketWithQueueStrategy = LeakyBucketWithQueue
