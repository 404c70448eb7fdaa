"""The contracts as types: strategy protocols, locks, stats and the `EXEMPTED` sentinel."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional, Protocol, TypedDict, Union, runtime_checkable

if TYPE_CHECKING:
    from traffik.backends.base import ThrottleBackend
    from traffik.decision import Decision
    from traffik.rates import Rate

__all__ = [
    "EXEMPTED",
    "AsyncLock",
    "DecidingStrategy",
    "FullThrottleStrategy",
    "ImmediateOps",
    "LockConfig",
    "SimpleThrottleStrategy",
    "StrategyStat",
    "Stringable",
    "ThrottleStrategy",
    "WaitPeriod",
]

WaitPeriod = float
"""Milliseconds to wait; 0 means allowed."""

Stringable = Any
"""Anything with a meaningful `str()`: identifiers and keys."""


class _Exempted:
    __slots__ = ()

    def __repr__(self) -> str:
        return "EXEMPTED"

    def __reduce__(self) -> str:
        return "EXEMPTED"


EXEMPTED: Any = _Exempted()
"""Return this from an identifier to skip throttling that client, with no backend call."""


@dataclass(frozen=True)
class StrategyStat:
    """A read-only view of a key: units left now and the wait for the next unit (ms)."""

    key: Stringable
    rate: Rate
    hits_remaining: float
    wait_ms: float
    metadata: Optional[Mapping[str, Any]] = None

    @classmethod
    def unlimited(cls, key: Stringable, rate: Rate) -> StrategyStat:
        return cls(key=key, rate=rate, hits_remaining=math.inf, wait_ms=0.0)


@runtime_checkable
class SimpleThrottleStrategy(Protocol):
    """Any `async (key, rate, backend, cost) -> wait_ms` callable; the traffik 1.2 contract."""

    async def __call__(
        self, key: Stringable, rate: Rate, backend: ThrottleBackend, cost: int = 1
    ) -> float: ...


@runtime_checkable
class FullThrottleStrategy(SimpleThrottleStrategy, Protocol):
    """A strategy that can also report a key's state without changing it."""

    async def get_stat(
        self, key: Stringable, rate: Rate, backend: ThrottleBackend
    ) -> StrategyStat: ...


@runtime_checkable
class DecidingStrategy(FullThrottleStrategy, Protocol):
    """A built-in strategy: `decide` returns a full `Decision` in one backend step."""

    async def decide(
        self, key: Stringable, rate: Rate, backend: ThrottleBackend, cost: int = 1
    ) -> Decision: ...


ThrottleStrategy = Union[SimpleThrottleStrategy, FullThrottleStrategy]


class ImmediateOps(Protocol):
    """A backend's synchronous decision step, for stores that need no I/O (in memory)."""

    def increment_with_ttl_now(self, key: str, amount: int, ttl: float) -> tuple[int, float]: ...

    def evaluate_now(self, key: str, strategy: Any, rate: Rate, cost: float) -> Decision: ...


@runtime_checkable
class AsyncLock(Protocol):
    """A named lock owned by one asyncio task at a time."""

    def is_owner(self, task: Any = None) -> bool: ...

    async def acquire(
        self, blocking: bool = True, blocking_timeout: float | None = None
    ) -> bool: ...

    async def release(self) -> None: ...


class LockConfig(TypedDict, total=False):
    """Keyword arguments forwarded to `backend.lock(...)`."""

    ttl: Optional[float]
    blocking: bool
    blocking_timeout: Optional[float]
    reentrant: bool
    enforce_ttl_locally: bool
    local_ttl_factor: float
