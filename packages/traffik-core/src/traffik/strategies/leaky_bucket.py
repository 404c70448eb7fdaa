"""Leaky buckets: `LeakyBucket` (a level that drains) and `LeakyBucketWithQueue` (a FIFO that drains)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, ClassVar

from traffik.decision import Decision
from traffik.strategies.base import EPSILON, StateStrategy, Transition, whole_ms

if TYPE_CHECKING:
    from traffik.rates import Rate

__all__ = [
    "LeakyBucket",
    "LeakyBucketStrategy",
    "LeakyBucketWithQueue",
    "LeakyBucketWithQueueStrategy",
]


def _admit(level: float, now: float, rate: Rate, cost: float) -> tuple[bool, Decision]:
    """Whether `cost` fits on top of `level`, and the decision either way."""
    limit = rate.limit
    leak = limit / rate.expire
    if level + cost <= limit + EPSILON:
        level += cost
        return True, Decision(True, 0.0, math.floor(limit - level + EPSILON), level / leak, limit)
    wait = (level + cost - limit) / leak
    return False, Decision(
        False, whole_ms(wait), math.floor(max(limit - level, 0) + EPSILON), level / leak, limit
    )


class LeakyBucket(StateStrategy):
    """A bucket of capacity `limit` that drains at `limit` per period; a hit adds `cost`.

    State: `[level, last_ms]`. Like traffik 1.2 it admits a first burst of `limit`, then
    the drain rate; a rejected hit adds nothing. The key expires when the bucket is empty.
    """

    name: ClassVar[str] = "leaky_bucket"
    suffix: ClassVar[str] = ":lb"
    script: ClassVar[str] = "leaky_bucket"

    def transition(
        self, state: list[float] | None, now: float, rate: Rate, cost: float
    ) -> Transition:
        level = 0.0
        if state is not None and len(state) == 2:
            level = max(0.0, state[0] - max(now - state[1], 0.0) * rate.limit / rate.expire)
        admitted, decision = _admit(level, now, rate, cost)
        if not admitted:
            return decision, None, 0.0
        level += cost
        return decision, [level, now], max(decision.reset_ms, 1.0)


class LeakyBucketWithQueue(StateStrategy):
    """A leaky bucket that keeps its content as a FIFO of `(time, cost)` entries, drained from the head.

    State: `[last_ms, t1, cost1, t2, cost2, ...]`. Decisions match `LeakyBucket`; the queue
    shows what is waiting to drain (`get_stat`, debugging).
    """

    name: ClassVar[str] = "leaky_bucket_with_queue"
    suffix: ClassVar[str] = ":lbq"
    script: ClassVar[str] = "leaky_bucket_with_queue"

    def transition(
        self, state: list[float] | None, now: float, rate: Rate, cost: float
    ) -> Transition:
        queue: list[float] = []
        if state and len(state) % 2 == 1:
            drained = max(now - state[0], 0.0) * rate.limit / rate.expire
            for i in range(1, len(state) - 1, 2):
                entry = state[i + 1]
                if drained >= entry - EPSILON:
                    drained -= entry
                    continue
                queue.append(state[i])
                queue.append(entry - drained)
                drained = 0.0
        level = 0.0
        for i in range(1, len(queue), 2):  # plain addition, as the Lua port does
            level += queue[i]
        admitted, decision = _admit(level, now, rate, cost)
        if not admitted:
            return decision, None, 0.0
        queue.append(now)
        queue.append(cost)
        return decision, [now, *queue], max(decision.reset_ms, 1.0)


LeakyBucketStrategy = LeakyBucket
LeakyBucketWithQueueStrategy = LeakyBucketWithQueue
