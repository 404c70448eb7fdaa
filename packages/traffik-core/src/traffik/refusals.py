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

from typing import Any, Optional

from traffik.decision import Decision

__all__ = ["DEFAULT_MAX_KEYS", "REMEMBERED_MS", "RefusedClients"]

DEFAULT_MAX_KEYS = 10_000
REMEMBERED_MS = 1_000
"""How long a refusal is remembered at most (module docstring): the longest a process may
refuse a client that another process gave its budget back."""


class RefusedClients:
    """Keys refused recently, each until its wait ends (module docstring)."""

    __slots__ = ("_until", "max_keys")

    def __init__(self, max_keys: int = DEFAULT_MAX_KEYS) -> None:
        self.max_keys = max_keys
        # key -> (refused until, its cost, its rates, the limit, whole again at, the strategy,
        # noted at)
        self._until: dict[str, tuple[int, int, Any, Any, int, Any, int]] = {}

    def __len__(self) -> int:
        return len(self._until)

    def check(
        self, key: str, rates: Any, cost: int, now_ms: int, strategy: Any = None
    ) -> Optional[Decision]:
        """The refusal still standing for a hit of `cost` on `key` under `rates` and
        `strategy`, or None (the store must decide: another strategy keeps a state of its
        own, which refused nobody)."""
        entry = self._until.get(key)
        if entry is None:
            return None
        until, refused_cost, refused_rates, limit, whole_at, refused_by, noted = entry
        # (over, remembered long enough, or the clock went back since)
        if now_ms >= until or not 0 <= now_ms - noted < REMEMBERED_MS:
            del self._until[key]
            return None
        if cost != refused_cost or refused_rates != rates or refused_by is not strategy:
            return None
        wait = until - now_ms
        return Decision(False, wait, 0, max(wait, whole_at - now_ms), limit)

    def remember(
        self,
        key: str,
        rates: Any,
        cost: int,
        decision: Decision,
        now_ms: int,
        strategy: Any = None,
    ) -> None:
        """Note that the store refused `key` with `decision`, under `strategy`."""
        until = self._until
        if len(until) >= self.max_keys and key not in until:
            for old in list(until)[: max(len(until) // 2, 1)]:
                del until[old]
        until[key] = (
            now_ms + int(decision.wait_ms),
            cost,
            rates,
            decision.limit,
            now_ms + int(decision.reset_ms),
            strategy,
            now_ms,
        )

    def forget(self, key: Optional[str] = None) -> None:
        """Forget `key`'s refusal, or every refusal."""
        if key is None:
            self._until.clear()
        else:
            self._until.pop(key, None)
