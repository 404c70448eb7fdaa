"""`RefusedClients`: a process's memory of the clients its store just refused.

Once the store refuses a key with a wait of `w` ms, another hit on that key (same strategy,
rates and cost) inside `w` would be refused too, with what is left of `w`: built-in
strategies answer exact waits, so nothing the store holds admits it sooner. (A hit of another
cost goes to the store: a larger one waits longer than `w`, by an amount only the store
knows.) Remembering the refusal answers such hits in the process, without a round trip:
under a flood from one client, the store sees one request per wait (a second at most, below)
instead of every request.

It can only refuse, never admit, so it never lets through what the store would refuse. What
it can do is refuse for longer than the store would, when the store's state moves back in
between: a refund (`charge_when`), or `reset()`/`clear()` (`python -m traffik reset`) run by
*another* process (in this process they forget every refusal). So a refusal is remembered
for `REMEMBERED_MS` at most, whatever its wait: such a change reaches every process within a
second, and a flood from one client costs the store one round trip per second at most. A
refusal is kept on the backend's clock: one asked about before the time it was noted (the
clock stepped back since) is forgotten, since the store may decide otherwise then
(docs/concepts/strategies.md, "Clocks"), and the wait left would be the step's length. It is
bounded (`max_keys`: past it, the oldest half is forgotten) and on by default for stores
outside the process (Redis, Memcached, SQLite); `InMemoryBackend` does not need it. Turn it
off with `cache_refusals=False` on the backend.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from traffik.decision import Decision
from traffik.strategies.steps import Combined

__all__ = ["DEFAULT_MAX_KEYS", "REMEMBERED_MS", "RefusedClients", "later"]

DEFAULT_MAX_KEYS = 10_000
REMEMBERED_MS = 1_000
"""How long a refusal is remembered at most (module docstring): the longest a process may
refuse a client that another process gave its budget back."""


class RefusedClients:
    """Keys refused recently, each until its wait ends (module docstring)."""

    __slots__ = ("_until", "max_keys")

    def __init__(self, max_keys: int = DEFAULT_MAX_KEYS) -> None:
        self.max_keys = max_keys
        # key -> (refused until, its cost, its rates, the strategy, noted at, the store's
        # decision, whether its wait stays whole: a cost no rate can ever admit)
        self._until: dict[str, tuple[int, int, Any, Any, int, Decision, bool]] = {}

    def __len__(self) -> int:
        return len(self._until)

    def check(
        self, key: str, rates: Any, cost: int, now_ms: int, strategy: Any = None
    ) -> Optional[Decision]:
        """The refusal still standing for a hit of `cost` on `key` under `rates` and
        `strategy`, or None (the store must decide: another strategy keeps a state of its
        own, which refused nobody). It tells what the store told, as of now: each rate's
        units left (a refused hit took none), its wait and reset less the time since."""
        entry = self._until.get(key)
        if entry is None:
            return None
        until, refused_cost, refused_rates, refused_by, noted, decision, whole = entry
        # (over, remembered long enough, or the clock went back since)
        if now_ms >= until or not 0 <= now_ms - noted < REMEMBERED_MS:
            del self._until[key]
            return None
        if cost != refused_cost or refused_rates != rates or refused_by is not strategy:
            return None
        return later(decision, 0 if whole else now_ms - noted)

    def remember(
        self,
        key: str,
        rates: Any,
        cost: int,
        decision: Decision,
        now_ms: int,
        strategy: Any = None,
        never: bool = False,
    ) -> None:
        """Note that the store refused `key` with `decision`, under `strategy`; `never`: the
        cost is more than a rate can ever admit (its wait, one period, is told whole each
        time, as the store tells it)."""
        until = self._until
        if len(until) >= self.max_keys and key not in until:
            for old in list(until)[: max(len(until) // 2, 1)]:
                del until[old]
        until[key] = (
            now_ms + int(decision.wait_ms),
            cost,
            rates,
            strategy,
            now_ms,
            decision,
            never,
        )

    def forget(self, key: Optional[str] = None) -> None:
        """Forget `key`'s refusal, or every refusal."""
        if key is None:
            self._until.clear()
        else:
            self._until.pop(key, None)

    def forget_where(self, concerned: Callable[[str], bool]) -> None:
        """Forget the refusal of every key `concerned(key)` is true of (a client's keys
        under every segment of a `TieredRate` or `PriorityQueue`, say)."""
        for key in [key for key in self._until if concerned(key)]:
            del self._until[key]


def later(decision: Decision, elapsed: float) -> Decision:
    """`decision` as told `elapsed` ms after it was made: each rate's wait and reset that
    much shorter (never below 0), its units left the same."""
    parts = getattr(decision, "parts", None)
    if parts is not None:
        return Combined([later(part, elapsed) for part in parts], decision.refused)  # type: ignore[attr-defined]
    wait = 0.0 if decision.allowed else max(decision.wait_ms - elapsed, 0.0)
    reset = max(decision.reset_ms - elapsed, wait, 0.0)
    return Decision(decision.allowed, wait, decision.remaining, reset, decision.limit)
