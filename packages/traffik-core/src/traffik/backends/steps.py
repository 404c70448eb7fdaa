"""The generic decision step: read, decide and write under the backend's own locks.

What a third-party backend gets for free (`ThrottleBackend` inherits it): built-in strategies
work on any store that implements `get`/`set`/`increment`/`ttl`/`get_lock`. Every built-in
backend overrides these methods with one lock-free atomic step.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any, Callable, Optional

from traffik.strategies.fixed_window import counter_decision, too_late
from traffik.strategies.state import decode_state, encode_state
from traffik.strategies.steps import charged, combine, is_counter

if TYPE_CHECKING:
    from traffik.backends.locks import LockContext
    from traffik.decision import Decision
    from traffik.rates import Rate
    from traffik.strategies.base import StateStrategy
    from traffik.strategies.steps import Item

__all__ = ["LockedSteps"]


def _count(raw: Optional[str]) -> int:
    try:
        return int(raw) if raw is not None else 0
    except ValueError:
        return 0


class LockedSteps:
    """`evaluate`, `evaluate_all` and `refund_all` on the storage primitives, under locks."""

    now_ms: Callable[[], int]
    _turns: _Turns

    if TYPE_CHECKING:

        async def get(self, key: str) -> Optional[str]: ...

        async def set(self, key: str, value: str, expire: Optional[float] = None) -> None: ...

        async def increment(self, key: str, amount: int = 1) -> int: ...

        async def ttl(self, key: str) -> Optional[float]: ...

        async def expire(self, key: str, seconds: float) -> bool: ...

        async def increment_with_ttl(self, key: str, amount: int = 1, ttl: float = 60) -> int: ...

        def lock(
            self,
            name: str,
            ttl: Optional[float] = None,
            blocking: Optional[bool] = None,
            blocking_timeout: Optional[float] = None,
            reentrant: bool = False,
        ) -> LockContext: ...

    def validate(self, strategy: Any, rate: Rate) -> None:
        """Refuse (`ConfigurationError`, naming what would fit) a strategy and rate whose state
        this store cannot hold; throttles call it when built with a fixed backend and rate,
        and a backend calls it itself on first use of a pair. Nothing is refused here."""

    async def evaluate(
        self, key: str, strategy: StateStrategy, rate: Rate, cost: int, *, commit: bool = True
    ) -> Decision:
        """Run one strategy transition on `key` atomically and return its decision.

        Generic form for third-party backends: read, decide and write under this
        backend's lock. Built-in backends override it with one lock-free step.
        """
        async with self._under_locks((key,)):
            state = decode_state(await self.get(key))
            decision, new_state, ttl_ms = strategy.transition(state, self.now_ms(), rate, cost)
            if commit and new_state is not None:
                await self.set(key, encode_state(new_state), expire=ttl_ms / 1000.0)
            return decision

    async def evaluate_all(self, items: Sequence[Item], *, commit: bool = True) -> Decision:
        """Decide every item in one step, all or nothing (`traffik.strategies.steps`); a
        refusing item's state is written when it converted another rate's
        (`traffik.strategies.base.Transition`), which charges nothing.

        Generic form for third-party backends: under the locks of every key, taken in key
        order. Built-in backends override it with one atomic step."""
        async with self._locked(items):
            now = self.now_ms()
            parts: list[Decision] = []
            states: list[Optional[tuple[Optional[list[int]], int]]] = []
            for item in items:
                if is_counter(item.strategy):
                    count = _count(await self.get(item.key))
                    ttl = await self.ttl(item.key) if count else None
                    if commit and too_late(ttl, item.rate.expire):  # (cut, charged or not)
                        await self.expire(item.key, item.rate.expire / 1000)
                    parts.append(counter_decision(count, ttl, item.rate, item.cost))
                    states.append(None)
                else:
                    state = decode_state(await self.get(item.key))
                    decision, new_state, ttl_ms = item.strategy.transition(
                        state, now, item.rate, item.cost
                    )
                    parts.append(decision)
                    states.append((new_state, ttl_ms))
            if commit:
                for item, charge, part, outcome in zip(items, charged(parts, items), parts, states):
                    if outcome is None:
                        if charge:
                            await self.increment_with_ttl(
                                item.key, item.cost, item.rate.expire / 1000
                            )
                    elif outcome[0] is not None and (charge or not part.allowed):
                        # (refused, a state converted from another rate's: `Transition`)
                        await self.set(item.key, encode_state(outcome[0]), expire=outcome[1] / 1000)
            return combine(parts, [item.cost for item in items])

    async def refund_all(self, items: Sequence[Item]) -> None:
        """Give each item's cost back, never past a full budget. Generic form: under locks."""
        async with self._locked(items):
            now = self.now_ms()
            for item in items:
                if is_counter(item.strategy):
                    count = _count(await self.get(item.key))
                    if count:
                        await self.increment(item.key, -min(count, item.cost))
                    continue
                state = decode_state(await self.get(item.key))
                if state is not None:
                    new_state, ttl_ms = item.strategy.refund(state, now, item.rate, item.cost)
                    await self.set(item.key, encode_state(new_state), expire=ttl_ms / 1000)

    def _locked(self, items: Sequence[Item]) -> contextlib.AbstractAsyncContextManager[None]:
        return self._under_locks(sorted({item.key for item in items}))

    @contextlib.asynccontextmanager
    async def _under_locks(self, keys: Sequence[str]) -> AsyncIterator[None]:
        """Hold this backend's lock on each of `keys` (given in key order: no deadlock).

        Tasks of this process wanting the same key queue for it here first, in turn, so only
        one of them at a time polls the backend's lock: contended keys stay fast instead of
        every waiter polling the store."""
        turns: Optional[_Turns] = getattr(self, "_turns", None)
        if turns is None:
            turns = self._turns = _Turns()
        async with contextlib.AsyncExitStack() as stack:
            for key in keys:
                await stack.enter_async_context(turns.hold(key))
                await stack.enter_async_context(
                    self.lock(f"evaluate:{key}", ttl=5.0, blocking_timeout=5.0)
                )
            yield


class _Turns:
    """One `asyncio.Lock` per key some task of this process waits for; gone once unused."""

    __slots__ = ("_locks",)

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key) or (asyncio.Lock(), 0)
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            users = self._locks[key][1] - 1
            if users:
                self._locks[key] = (lock, users)
            else:
                del self._locks[key]
