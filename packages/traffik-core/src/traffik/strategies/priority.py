"""`PriorityQueue`: a sliding log in which a request counts only the hits of its priority and above."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from enum import IntEnum
from typing import TYPE_CHECKING, Any, ClassVar, Optional

from traffik.decision import Decision
from traffik.exceptions import ConfigurationError
from traffik.rates import Rate
from traffik.strategies.base import (
    Refund,
    StateStrategy,
    Transition,
    dated,
    later,
    later_refund,
    log_time,
    never_admitted,
)
from traffik.strategies.markers import KeyMarker, MarkedStrategy

if TYPE_CHECKING:
    from traffik.backends.base import ThrottleBackend
    from traffik.typing import StrategyStat

__all__ = ["Priority", "PriorityQueue", "PriorityQueueStrategy"]


class Priority(IntEnum):
    """Request priority levels."""

    LOW = 1
    NORMAL = 2
    HIGH = 3
    CRITICAL = 4


def _priority(value: object) -> Optional[Priority]:
    """A priority from a level (`3`, `"3"`) or a name in any case (`"high"`, `"HIGH"`),
    spaces around it dropped, else None (never an error: a key's segment is a client's)."""
    if isinstance(value, str):
        text = value.strip()
        if text.upper() in Priority.__members__:
            return Priority[text.upper()]
        # (`isdecimal`, not `isdigit`: `int` reads no superscript, which raised)
        value = int(text) if text.isdecimal() else None
    if isinstance(value, int) and not isinstance(value, bool) and value in (1, 2, 3, 4):
        return Priority(value)
    return None


class PriorityQueue(MarkedStrategy):
    """A sliding log of `(time, priority, cost)`: a request counts only entries of its priority or higher.

    Within one period a request of priority `p` is admitted when the cost logged at `p` and
    above, plus its own, stays within `limit`: a CRITICAL request is never held back by
    lower ones, while a LOW one counts everything. Priorities share **one log per client**:
    the priority comes from a `priority:<level>:` segment of the key (`marker`; a level 1-4
    or a name such as `high`, in any case), written by the identifier or the throttle
    context's `scope`, and taken out of the storage key (traffik 1.2 kept it there, so each
    priority got its own log and priorities never met). A key without it, or whose segment
    names no level (`priority:9:`: a client's input, never an error), is
    `default_priority`. A rejected
    hit waits until enough cost of its priority and above has left the window.

    `max_queue_size` bounds the log: past it, the oldest entries of the lowest priority are
    dropped (they stop counting), so keep it above `4 x limit` for exact counts. State:
    `[t1, p1, c1, t2, p2, c2, ...]`, oldest first. `lock_config` is accepted for traffik 1.2
    code and unused.
    """

    name: ClassVar[str] = "priority_queue"
    suffix: ClassVar[str] = ":prio"
    script: ClassVar[str] = "priority_queue"

    def __init__(
        self,
        default_priority: int = Priority.NORMAL,
        max_queue_size: int = 1000,
        lock_config: Optional[Mapping[str, Any]] = None,
        marker: str = "priority:",
    ) -> None:
        super().__init__(lock_config)
        owner = type(self).__name__
        priority = _priority(default_priority)
        if priority is None:
            raise ConfigurationError(
                f"{owner}(default_priority={default_priority!r}): must be a Priority, a level "
                f"1 to 4 or its name ({', '.join(repr(name.lower()) for name in Priority.__members__)})"
            )
        if (
            isinstance(max_queue_size, bool)
            or not isinstance(max_queue_size, int)
            or max_queue_size < 1
        ):
            raise ConfigurationError(
                f"{owner}(max_queue_size={max_queue_size!r}): must be a whole number >= 1"
            )
        if not isinstance(marker, str) or not marker.rstrip(":"):
            raise ConfigurationError(
                f"{owner}(marker={marker!r}): must be a word such as 'priority:'"
            )
        self.default_priority = priority
        self.max_queue_size = max_queue_size
        self.marker = marker if marker.endswith(":") else marker + ":"
        self.key_marker = KeyMarker(self.marker)
        self._priority = priority
        self._bound: dict[Priority, PriorityQueue] = {}

    def __repr__(self) -> str:
        at = "" if self._priority == self.default_priority else f".at({self._priority!r})"
        return (
            f"PriorityQueue(default_priority={self.default_priority!r}, "
            f"max_queue_size={self.max_queue_size!r}, marker={self.marker!r}){at}"
        )

    def _config(self) -> tuple[tuple[str, Any], ...]:
        return (
            ("default_priority", self.default_priority),
            ("marker", self.marker),
            ("max_queue_size", self.max_queue_size),
        )

    @property
    def priority(self) -> Priority:
        """The priority this strategy decides at (a bound copy's, or the default)."""
        return self._priority

    def priority_of(self, key: str) -> tuple[Priority, str]:
        """The priority a key names (the default when it names none) and the key without it."""
        level, stored = self.key_marker.take(key)
        found = None if level is None else _priority(level)
        return (self.default_priority if found is None else found), stored

    def at(self, priority: Priority) -> PriorityQueue:
        """This strategy deciding at `priority` (one copy per level, kept)."""
        if priority == self._priority:
            return self
        bound = self._bound.get(priority)
        if bound is None:
            bound = self._bound[priority] = PriorityQueue(
                self.default_priority, self.max_queue_size, marker=self.marker
            )
            bound._priority = priority
        return bound

    def bind(self, key: str, rates: Sequence[Rate]) -> tuple[StateStrategy, str, tuple[Rate, ...]]:
        priority, stored = self.priority_of(key)
        return self.at(priority), stored, tuple(rates)

    async def get_stat(self, key: Any, rate: Rate, backend: ThrottleBackend) -> StrategyStat:
        """As every strategy's; `metadata["priority"]` is the level the key names."""
        stat = await self._bound_stat(key, rate, backend)
        if stat.metadata is None:
            return stat
        priority, _ = self.priority_of(str(key))
        return dataclasses.replace(stat, metadata={**stat.metadata, "priority": int(priority)})

    def scale(self, rate: Rate) -> int:
        return 2 * (4 * rate.limit + rate.expire)

    def script_args(self, rate: Rate, cost: int) -> tuple[int, ...]:
        return (rate.limit, rate.expire, cost, int(self._priority), self.max_queue_size)

    @staticmethod
    def _log(state: Optional[list[int]], now: int, rate: Rate) -> list[int]:
        """The entries still inside the window at `now`, oldest first."""
        start = now - rate.expire
        log: list[int] = []
        if state:
            for i in range(0, len(state) - 2, 3):
                if state[i] > start:
                    log += state[i : i + 3]
        return log

    def transition(self, state: Optional[list[int]], now: int, rate: Rate, cost: int) -> Transition:
        state, at = dated(state, log_time(state, 3), now)
        if at > now:
            return later(self.transition(state, at, rate, cost), at - now)
        limit, period, mine = rate.limit, rate.expire, int(self._priority)
        if cost > limit:
            return never_admitted(rate), None, 0
        log = self._log(state, now, rate)
        counted = sum(log[i + 2] for i in range(0, len(log), 3) if log[i + 1] >= mine)
        if counted + cost <= limit:
            if log and log[-3] == now and log[-2] == mine:
                log[-1] += cost
            else:
                log += [now, mine, cost]
            while len(log) > 3 * self.max_queue_size:
                lowest = min(log[1::3])
                first = log[1::3].index(lowest) * 3
                del log[first : first + 3]
            return Decision(True, 0, limit - counted - cost, period, limit), log, period
        excess, freed, wait, newest = counted + cost - limit, 0, period, None
        for i in range(0, len(log), 3):
            if log[i + 1] >= mine:
                newest = log[i]
                if freed < excess:
                    freed += log[i + 2]
                    if freed >= excess:
                        wait = log[i] + period - now
        reset = 0 if newest is None else newest + period - now
        return Decision(False, wait, max(limit - counted, 0), reset, limit), None, 0

    def refund(self, state: Optional[list[int]], now: int, rate: Rate, cost: int) -> Refund:
        state, at = dated(state, log_time(state, 3), now)
        if at > now:
            return later_refund(self.refund(state, at, rate, cost), at - now)
        log = self._log(state, now, rate)
        mine, back = int(self._priority), cost
        i = len(log) - 3
        while i >= 0 and back:  # the newest entries of this priority leave first
            if log[i + 1] == mine:
                taken = min(log[i + 2], back)
                log[i + 2] -= taken
                back -= taken
                if not log[i + 2]:
                    del log[i : i + 3]
            i -= 3
        return log, rate.expire


PriorityQueueStrategy = PriorityQueue
