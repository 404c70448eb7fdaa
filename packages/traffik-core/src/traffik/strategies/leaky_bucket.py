"""Leaky buckets: `LeakyBucket` (a level that drains) and `LeakyBucketWithQueue` (a FIFO that drains)."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Optional

from traffik.decision import Decision
from traffik.strategies.base import (
    Refund,
    StateStrategy,
    Transition,
    draining_held,
    never_admitted,
)

if TYPE_CHECKING:
    from traffik.rates import Rate

__all__ = [
    "LeakyBucket",
    "LeakyBucketStrategy",
    "LeakyBucketWithQueue",
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


class LeakyBucket(StateStrategy):
    """A bucket of capacity `limit` that drains at `limit` per period; a hit adds `cost`.

    State: `[level, last_ms]`, the level scaled by the period (`limit` units drain per
    millisecond). Like traffik 1.2 it admits a first burst of `limit`, then the drain rate; a
    rejected hit adds nothing. The key expires when the bucket is empty.
    """

    name: ClassVar[str] = "leaky_bucket"
    suffix: ClassVar[str] = ":lb"
    script: ClassVar[str] = "leaky_bucket"

    @staticmethod
    def _level(state: Optional[list[int]], now: int, rate: Rate) -> int:
        """The bucket's level (scaled) at `now`."""
        if state is None or len(state) != 2:
            return 0
        level, elapsed = state[0], max(now - state[1], 0)
        return 0 if elapsed >= -(-level // rate.limit) else level - elapsed * rate.limit

    def transition(self, state: Optional[list[int]], now: int, rate: Rate, cost: int) -> Transition:
        level = self._level(state, now, rate)
        admitted, decision = _admit(level, rate, cost)
        if not admitted:
            return decision, None, 0
        return decision, [level + cost * rate.expire, now], max(int(decision.reset_ms), 1)

    held = draining_held

    def refund(self, state: Optional[list[int]], now: int, rate: Rate, cost: int) -> Refund:
        level = max(self._level(state, now, rate) - cost * rate.expire, 0)
        return [level, now], max(-(-level // rate.limit), 1)


class LeakyBucketWithQueue(StateStrategy):
    """A leaky bucket that keeps its content as a FIFO of `(time, cost)` entries, drained from the head.

    State: `[last_ms, t1, left1, t2, left2, ...]`, each entry's `left` scaled by the period.
    Decisions match `LeakyBucket`; the queue shows what is waiting to drain (`get_stat`,
    debugging).
    """

    name: ClassVar[str] = "leaky_bucket_with_queue"
    suffix: ClassVar[str] = ":lbq"
    script: ClassVar[str] = "leaky_bucket_with_queue"

    @staticmethod
    def _queue(state: Optional[list[int]], now: int, rate: Rate) -> list[int]:
        """What is still queued at `now`: `[t1, left1, ...]`, each `left` scaled."""
        queue: list[int] = []
        if state and len(state) % 2 == 1:
            # A full bucket drains in one period: longer idle times change nothing more.
            drained = min(max(now - state[0], 0), rate.expire) * rate.limit
            for i in range(1, len(state) - 1, 2):
                left = state[i + 1]
                if drained >= left:
                    drained -= left
                    continue
                queue.append(state[i])
                queue.append(left - drained)
                drained = 0
        return queue

    def transition(self, state: Optional[list[int]], now: int, rate: Rate, cost: int) -> Transition:
        queue = self._queue(state, now, rate)
        level = sum(queue[1::2])
        admitted, decision = _admit(level, rate, cost)
        if not admitted:
            return decision, None, 0
        queue.append(now)
        queue.append(cost * rate.expire)
        return decision, [now, *queue], max(int(decision.reset_ms), 1)

    held = draining_held

    def refund(self, state: Optional[list[int]], now: int, rate: Rate, cost: int) -> Refund:
        queue = self._queue(state, now, rate)
        back = cost * rate.expire
        while queue and back:  # the newest entries leave first
            taken = min(queue[-1], back)
            queue[-1] -= taken
            back -= taken
            if not queue[-1]:
                del queue[-2:]
        return [now, *queue], max(-(-(sum(queue[1::2])) // rate.limit), 1)


LeakyBucketStrategy = LeakyBucket
LeakyBucketWithQueueStrategy = LeakyBucketWithQueue
