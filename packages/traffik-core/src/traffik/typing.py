"""The contracts as types: strategy protocols, locks, stats and the `EXEMPTED` sentinel."""

from __future__ import annotations

import ipaddress
import math
import sys
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from re import Pattern
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Optional,
    Protocol,
    TypedDict,
    TypeVar,
    Union,
    runtime_checkable,
)

if TYPE_CHECKING:
    from traffik.backends.base import ThrottleBackend
    from traffik.decision import Decision
    from traffik.rates import Rate

__all__ = [
    "EXEMPTED",
    "ApplyOnError",
    "AsyncLock",
    "BackoffStrategy",
    "ConnectionIdentifier",
    "ConnectionThrottledHandler",
    "CostFunc",
    "CostType",
    "DecidingStrategy",
    "Dependency",
    "ExceptionHandler",
    "FullThrottleStrategy",
    "HTTPConnectionT",
    "HTTPConnectionTcon",
    "ImmediateOps",
    "LockConfig",
    "Matchable",
    "Network",
    "RateFunc",
    "RateType",
    "RetryOn",
    "SimpleThrottleStrategy",
    "StrategyStat",
    "Stringable",
    "ThrottleErrorHandler",
    "ThrottleStrategy",
    "TrustedProxy",
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


# -- traffik 1.2's type aliases ------------------------------------------------------------
# For annotations written against traffik 1.2 (`RateFunc[Request]`): the same names and
# type parameters, with the connection types left open (this module needs no Starlette) and
# the results as Traffik takes them (a callable may be sync or async, a handler may answer a
# wait or a `Decision`).

HTTPConnectionT = TypeVar("HTTPConnectionT")
"""A connection type (`Request`, `WebSocket`), as traffik 1.2 named it."""
HTTPConnectionTcon = TypeVar("HTTPConnectionTcon", contravariant=True)
"""`HTTPConnectionT` for parameters only (contravariant), as traffik 1.2 named it."""
_MappingT = TypeVar("_MappingT", bound=Mapping[Any, Any])
_ThrottleT = TypeVar("_ThrottleT")

Matchable = Union[str, Pattern[str], Stringable]
"""A path to match: a string, a compiled pattern, or anything with a `str()`."""
ExceptionHandler = Callable[[HTTPConnectionT, Exception], Any]
"""`(connection, exc) -> Response` (or an awaitable of one)."""
ThrottleErrorHandler = Callable[[HTTPConnectionT, _MappingT], Any]
"""An `on_error` handler: `(connection, exc_info) -> wait_ms or Decision`, sync or async."""
ConnectionIdentifier = Callable[[HTTPConnectionT], Any]
"""An identifier: `(connection) -> str or EXEMPTED`, sync or async."""
ConnectionThrottledHandler = Callable[
    [HTTPConnectionT, WaitPeriod, _ThrottleT, dict[str, Any]], Any
]
"""A `handle_throttled` handler: `(connection, wait_ms, throttle, context)`."""
RateFunc = Callable[[HTTPConnectionT, Optional[dict[str, Any]]], Any]
"""A rate callable: `(connection, context) -> Rate or rate string`, sync or async."""
CostFunc = Callable[[HTTPConnectionT, Optional[dict[str, Any]]], Any]
"""A cost callable: `(connection, context) -> int`, sync or async."""
RateType = Union["Rate", str, RateFunc[HTTPConnectionT]]
"""A throttle's `rate=`."""
CostType = Union[int, CostFunc[HTTPConnectionT]]
"""A throttle's `cost=`."""
BackoffStrategy = Callable[[int, float], float]
"""`(attempt, base_delay) -> seconds` before the next try."""
RetryOn = Union[type[BaseException], tuple[type[BaseException], ...], Callable[..., Any]]
"""What `retry` tries again on: exception types, or a predicate of the failure."""
ApplyOnError = Union[bool, type[BaseException], tuple[type[BaseException], ...]]
"""A quota context's `apply_on_error`."""

if sys.version_info >= (3, 10):
    from typing import ParamSpec

    _Params = ParamSpec("_Params")
else:  # (3.9's `typing` has no `ParamSpec`, and the core depends on nothing)
    _Params = TypeVar("_Params")
_Result = TypeVar("_Result", covariant=True)


class Dependency(Protocol[_Params, _Result]):
    """A FastAPI dependency, as traffik 1.2 typed one: `Dependency[[Request], Request]` is
    called with a request and returns one, or an awaitable of one. On Python 3.9 the
    parameters are one type, not a list."""

    def __call__(
        self, *args: _Params.args, **kwargs: _Params.kwargs
    ) -> Union[_Result, Awaitable[_Result]]: ...


TrustedProxy = Union[
    ipaddress.IPv4Address, ipaddress.IPv6Address, ipaddress.IPv4Network, ipaddress.IPv6Network
]
"""A trusted proxy, as traffik 1.2 typed one: an address or a network."""
Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
"""An IPv4 or IPv6 network."""
