"""`FailingBackend`: a backend that fails on demand, for testing what `on_error` does.

It wraps a real backend and passes every operation through, until told to fail:

```python
backend = FailingBackend(InMemoryBackend())
throttle = HTTPThrottle("api", rate="10/min", backend=backend, on_error="allow")
with backend.failing(BackendError("store down")):
    ...  # every decision raises, and the throttle follows on_error
```

`failing(error, times=None, operations=None)` arms it for a block (or `fail(...)` until
`recover()`): each matching operation raises `error` (an exception instance or class), at
most `times` times when given; an instance is raised afresh each time, so it never holds the
frames of earlier raises. `calls` counts the operations that reached the wrapped
backend, `failures` those that raised. Each operation is the wrapped backend's own: a
decision of one rate or of several (`evaluate`, `evaluate_all`: both named `"evaluate"`) is
its one step, as is a refund (`"refund"`); `scan` lists its keys.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Optional, Union

from traffik.backends.base import ThrottleBackend
from traffik.exceptions import BackendError

if TYPE_CHECKING:
    from traffik.decision import Decision
    from traffik.rates import Rate
    from traffik.strategies.base import StateStrategy
    from traffik.strategies.steps import Item
    from traffik.typing import AsyncLock

__all__ = ["OPERATIONS", "FailingBackend"]

OPERATIONS = frozenset(
    {
        "get",
        "set",
        "delete",
        "increment",
        "decrement",
        "expire",
        "ttl",
        "increment_with_ttl",
        "multi_get",
        "multi_set",
        "clear",
        "evaluate",
        "refund",
        "scan",
        "initialize",
    }
)
"""What can be made to fail: the storage operations, the decision step (`"evaluate"`, of
one rate or several), refunds, listing keys, and initialising."""

_Error = Union[BaseException, type[BaseException]]


class FailingBackend(ThrottleBackend):
    """Wraps `backend`; operations raise on demand (module docstring), else pass through."""

    def __init__(self, backend: ThrottleBackend) -> None:
        super().__init__(
            None,
            namespace=backend.namespace,
            persistent=backend.persistent,
            clock=backend.clock,
        )
        self.defaults = backend.defaults
        self.backend = backend
        self.calls = 0
        self.failures = 0
        self._error: Optional[_Error] = None
        self._left: Optional[int] = None
        self._operations: frozenset[str] = OPERATIONS

    def __repr__(self) -> str:
        return f"FailingBackend({self.backend!r})"

    # -- arming --------------------------------------------------------------------------

    def fail(
        self,
        error: _Error = BackendError("injected failure"),
        *,
        times: Optional[int] = None,
        operations: Union[str, Iterable[str], None] = None,
    ) -> None:
        """Make operations raise `error` (at most `times` times) until `recover()`;
        `operations` is one operation's name or several (None: every one)."""
        if not (
            isinstance(error, BaseException)
            or (isinstance(error, type) and issubclass(error, BaseException))
        ):
            raise TypeError(
                f"FailingBackend: error={error!r} must be an exception instance or class, "
                "like BackendError('down') or ConnectionError"
            )
        if times is not None and (
            isinstance(times, bool) or not isinstance(times, int) or times < 0
        ):
            raise ValueError(
                f"FailingBackend: times={times!r} must be a whole number >= 0, or None"
            )
        if operations is None:
            chosen = OPERATIONS
        elif isinstance(operations, str):
            chosen = frozenset({operations})
        else:
            chosen = frozenset(operations)
        unknown = chosen - OPERATIONS
        if unknown:
            raise ValueError(
                f"FailingBackend: unknown operations {sorted(unknown)}; choose from {sorted(OPERATIONS)}"
            )
        self._error, self._left, self._operations = error, times, chosen

    def recover(self) -> None:
        """Pass every operation through again."""
        self._error = None

    @contextlib.contextmanager
    def failing(
        self,
        error: _Error = BackendError("injected failure"),
        *,
        times: Optional[int] = None,
        operations: Union[str, Iterable[str], None] = None,
    ) -> Iterator[FailingBackend]:
        """`fail(...)` for the block, then `recover()`."""
        self.fail(error, times=times, operations=operations)
        try:
            yield self
        finally:
            self.recover()

    def _check(self, operation: str) -> None:
        error = self._error
        if error is not None and operation in self._operations and self._left != 0:
            if self._left is not None:
                self._left -= 1
            self.failures += 1
            if isinstance(error, BaseException):  # (raised afresh: a traceback of its own)
                raise error.with_traceback(None)
            raise error
        self.calls += 1

    # -- lifecycle -----------------------------------------------------------------------

    async def _open(self) -> None:
        self._check("initialize")
        await self.backend.initialize()

    async def _close(self) -> None:
        await self.backend.close()

    async def _ping(self) -> bool:
        return await self.backend.ready()

    # -- storage, passed through -------------------------------------------------------------

    async def get(self, key: str) -> Optional[str]:
        self._check("get")
        return await self.backend.get(key)

    async def set(self, key: str, value: str, expire: Optional[float] = None) -> None:
        self._check("set")
        await self.backend.set(key, value, expire)

    async def delete(self, key: str) -> bool:
        self._check("delete")
        return await self.backend.delete(key)

    async def increment(self, key: str, amount: int = 1) -> int:
        self._check("increment")
        return await self.backend.increment(key, amount)

    async def decrement(self, key: str, amount: int = 1) -> int:
        self._check("decrement")
        return await self.backend.decrement(key, amount)

    async def expire(self, key: str, seconds: float) -> bool:
        self._check("expire")
        return await self.backend.expire(key, seconds)

    async def ttl(self, key: str) -> Optional[float]:
        self._check("ttl")
        return await self.backend.ttl(key)

    async def increment_with_ttl(self, key: str, amount: int = 1, ttl: float = 60) -> int:
        self._check("increment_with_ttl")
        return await self.backend.increment_with_ttl(key, amount=amount, ttl=ttl)

    async def multi_get(self, *keys: str) -> list[Optional[str]]:
        self._check("multi_get")
        return await self.backend.multi_get(*keys)

    async def multi_set(self, items: Mapping[str, str], expire: Optional[float] = None) -> None:
        self._check("multi_set")
        await self.backend.multi_set(items, expire)

    async def clear(self) -> None:
        self._check("clear")
        await self.backend.clear()

    def get_lock(
        self, name: str, ttl: Optional[float] = None, reentrant: bool = False
    ) -> AsyncLock:
        return self.backend.get_lock(name, ttl, reentrant)

    async def scan(self, prefix: str, limit: Optional[int] = None) -> list[str]:
        self._check("scan")
        return await self.backend.scan(prefix, limit)

    # -- decisions, passed through: the wrapped backend's own steps ----------------------------

    def validate(self, strategy: Any, rate: Rate) -> None:
        self.backend.validate(strategy, rate)

    async def evaluate(
        self, key: str, strategy: StateStrategy, rate: Rate, cost: int, *, commit: bool = True
    ) -> Decision:
        self._check("evaluate")
        return await self.backend.evaluate(key, strategy, rate, cost, commit=commit)

    async def evaluate_all(self, items: Sequence[Item], *, commit: bool = True) -> Decision:
        self._check("evaluate")
        return await self.backend.evaluate_all(items, commit=commit)

    async def refund_all(self, items: Sequence[Item]) -> None:
        self._check("refund")
        await self.backend.refund_all(items)
