"""A quota context's queued hits: how they add up, become one entry per bucket, and retry."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Callable, Optional

from traffik.together import Entry

if TYPE_CHECKING:
    from traffik.throttles import Throttle

__all__ = ["QueuedHit", "one_per_bucket", "retried"]


class QueuedHit:
    """One queued hit: a throttle, a cost (None: the throttle's cost function decides at apply
    time), the entry's context and how a failed apply is retried."""

    __slots__ = (
        "backoff",
        "base_delay",
        "context",
        "cost",
        "retry",
        "retry_on",
        "skip_handler",
        "throttle",
    )

    def __init__(
        self,
        throttle: Throttle,
        cost: Optional[int],
        context: Optional[dict[str, Any]],
        skip_handler: Optional[bool],
        retry: int,
        retry_on: Any,
        backoff: Callable[[int, float], float],
        base_delay: float,
    ) -> None:
        self.throttle = throttle
        self.cost = cost
        self.context = context
        self.skip_handler = skip_handler
        self.retry = retry
        self.retry_on = retry_on
        self.backoff = backoff
        self.base_delay = base_delay

    def joins(self, other: QueuedHit) -> bool:
        """Whether `other` adds its cost to this entry (traffik 1.2's aggregation rule: the
        same throttle, context and settings, and both costs known)."""
        return (
            self.throttle is other.throttle
            and self.context == other.context
            and self.skip_handler == other.skip_handler
            and self.cost is not None
            and other.cost is not None
            and self.retry == other.retry
            and self.retry_on is other.retry_on
            and self.backoff is other.backoff
            and self.base_delay == other.base_delay
        )

    async def resolved_cost(self, connection: Any) -> int:
        if self.cost is not None:
            return self.cost
        ctx = (
            self.throttle.context if not self.context else {**self.throttle.context, **self.context}
        )
        return int(await self.throttle._cost_for(connection, ctx))


def one_per_bucket(entries: list[QueuedHit], costs: list[int], connection: Any) -> list[Entry]:
    """The queued hits as one `Entry` per throttle, context and handler setting, in order of
    first appearance, costs summed (one decision and one event each); entries that still
    land on one bucket are made one item by `hit_together`."""
    merged: dict[tuple[int, Any, Optional[bool]], Entry] = {}
    for entry, cost in zip(entries, costs):
        if not cost:
            continue
        key = (id(entry.throttle), _frozen(entry.context), entry.skip_handler)
        found = merged.get(key)
        if found is None:
            merged[key] = Entry(entry.throttle, connection, cost, entry.context, entry.skip_handler)
        else:
            found.cost = (found.cost or 0) + cost
    return list(merged.values())


def _frozen(context: Optional[Mapping[str, Any]]) -> Any:
    if not context:
        return None
    try:
        return frozenset(context.items())
    except TypeError:  # unhashable values: compare by text
        return repr(sorted(context.items(), key=lambda item: str(item[0])))


async def retried(
    entry: QueuedHit, exc: BaseException, attempt: int, connection: Any, cost: int
) -> bool:
    """Whether `entry`'s `retry_on` retries `exc`."""
    retry_on = entry.retry_on
    if retry_on is None:
        return True
    if isinstance(retry_on, type) or (
        isinstance(retry_on, tuple) and all(isinstance(t, type) for t in retry_on)
    ):
        return isinstance(exc, retry_on)
    answer = retry_on(
        {
            "connection": connection,
            "exception": exc,
            "attempt": attempt,
            "cost": cost,
            "context": entry.context,
        }
    )
    if inspect.isawaitable(answer):
        answer = await answer
    return bool(answer)
