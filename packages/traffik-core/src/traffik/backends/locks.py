"""Named locks: the context manager `backend.lock()` returns, and the in-process lock table."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Any, Callable

from traffik.exceptions import LockAcquisitionError, LockReleaseError, LockTimeoutError

if TYPE_CHECKING:
    from traffik.typing import AsyncLock

__all__ = ["LocalLock", "LocalLockTable", "LockContext"]


class LockContext:
    """Holds one lock for the length of an `async with` block; single use.

    With a `ttl` and a `local_ttl_factor` (enforcing the TTL locally), a watchdog cancels
    the block once it has held the lock for `ttl * local_ttl_factor` seconds; the lock is
    released, then `LockTimeoutError` is raised. On exit, a timeout wins over the block's
    own error, which wins over an error releasing the lock.
    """

    __slots__ = (
        "_blocking",
        "_factor",
        "_fired",
        "_lock",
        "_timeout",
        "_ttl",
        "_used",
        "_watchdog",
    )

    def __init__(
        self,
        lock: AsyncLock,
        blocking: bool,
        blocking_timeout: float | None,
        ttl: float | None = None,
        local_ttl_factor: float | None = None,
    ) -> None:
        self._lock = lock
        self._blocking = blocking
        self._timeout = blocking_timeout
        self._ttl = ttl
        self._factor = local_ttl_factor
        self._used = False
        self._fired = False
        self._watchdog: asyncio.TimerHandle | None = None

    async def __aenter__(self) -> AsyncLock:
        if self._used:
            raise LockAcquisitionError(
                "a lock context can be entered only once; call backend.lock() again"
            )
        self._used = True
        if not await self._lock.acquire(self._blocking, self._timeout):
            mode = f"within {self._timeout}s" if self._blocking else "without blocking"
            raise LockAcquisitionError(f"could not acquire lock {self._name()!r} {mode}")
        if self._ttl is not None and self._factor is not None:
            task = asyncio.current_task()
            if task is not None:
                self._watchdog = asyncio.get_running_loop().call_later(
                    self._ttl * self._factor, self._expire, task
                )
        return self._lock

    def _name(self) -> str:
        return str(getattr(self._lock, "name", "?"))

    def _expire(self, task: asyncio.Task[Any]) -> None:
        self._fired = True
        task.cancel()

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        timed_out = self._fired and not _cancelled_elsewhere()
        try:
            await self._lock.release()
        except LockReleaseError:
            if exc_type is None and not timed_out:
                raise
        except asyncio.CancelledError:  # the watchdog's, reaching the release instead
            if not timed_out:
                raise
        if timed_out:
            assert self._ttl is not None and self._factor is not None
            raise LockTimeoutError(
                f"lock {self._name()!r} was held past {self._ttl * self._factor:g}s "
                f"(ttl={self._ttl:g} x local_ttl_factor={self._factor:g}), so its block was "
                "stopped; give it a longer ttl or a larger local_ttl_factor, or pass "
                "enforce_ttl_locally=False"
            ) from exc


def _cancelled_elsewhere() -> bool:
    """Take back the watchdog's cancellation of this task; True when something else asked
    to cancel it too (3.11+ counts requests; before, the watchdog's is assumed the only one)."""
    task = asyncio.current_task()
    uncancel = getattr(task, "uncancel", None)
    return uncancel is not None and uncancel() > 0


def _ring(waiter: asyncio.Future[None]) -> None:
    """Wake `waiter` at the end of its wait (it then looks at the lock again)."""
    if not waiter.done():
        waiter.set_result(None)


class _Slot:
    __slots__ = ("count", "expires_at", "owner", "waiters")

    def __init__(self) -> None:
        self.owner: asyncio.Task[Any] | None = None
        self.count = 0
        self.expires_at: float | None = None
        self.waiters: deque[asyncio.Future[None]] = deque()


class LocalLockTable:
    """Locks of one process, keyed by name; a slot lives only while held or awaited."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._slots: dict[str, _Slot] = {}
        self._clock = clock

    def __len__(self) -> int:
        return len(self._slots)

    def get(self, name: str, ttl: float | None, reentrant: bool) -> LocalLock:
        return LocalLock(self, name, ttl, reentrant)

    def _free(self, slot: _Slot) -> bool:
        if slot.owner is None:
            return True
        if slot.expires_at is not None and self._clock() >= slot.expires_at:
            slot.owner, slot.count = None, 0
            return True
        return False

    def _wake(self, name: str, slot: _Slot) -> None:
        while slot.waiters:
            waiter = slot.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        if slot.owner is None:
            del self._slots[name]


class LocalLock:
    """One named lock in a `LocalLockTable`, owned per asyncio task; honours `ttl` and timeouts."""

    __slots__ = ("_reentrant", "_table", "_ttl", "name")

    def __init__(
        self, table: LocalLockTable, name: str, ttl: float | None, reentrant: bool
    ) -> None:
        self._table = table
        self.name = name
        self._ttl = ttl
        self._reentrant = reentrant

    def is_owner(self, task: Any = None) -> bool:
        slot = self._table._slots.get(self.name)
        task = task or asyncio.current_task()
        return slot is not None and slot.owner is task and not self._table._free(slot)

    async def acquire(self, blocking: bool = True, blocking_timeout: float | None = None) -> bool:
        table, task = self._table, asyncio.current_task()
        if task is None:
            raise LockAcquisitionError(
                f"lock {self.name!r} must be acquired inside an asyncio task"
            )
        loop = asyncio.get_running_loop()
        deadline = None if blocking_timeout is None else loop.time() + blocking_timeout
        slot = table._slots.setdefault(self.name, _Slot())
        while True:
            if table._free(slot):
                slot.owner, slot.count = task, 1
                slot.expires_at = None if self._ttl is None else table._clock() + self._ttl
                return True
            if slot.owner is task:
                if not self._reentrant:
                    raise LockAcquisitionError(
                        f"lock {self.name!r} is already held by this task (not reentrant)"
                    )
                slot.count += 1
                return True
            if not blocking:
                self._drop_if_idle(slot)
                return False
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                self._drop_if_idle(slot)
                return False
            waiter: asyncio.Future[None] = loop.create_future()
            slot.waiters.append(waiter)
            wait_for = remaining
            if slot.expires_at is not None:
                until_expiry = max(slot.expires_at - table._clock(), 0.0)
                wait_for = until_expiry if wait_for is None else min(wait_for, until_expiry)
            # (a timer, not `asyncio.wait_for`: up to 3.11 that swallows a cancellation
            # arriving with the wake-up, and the cancelled task would take the lock)
            timer = None if wait_for is None else loop.call_later(wait_for, _ring, waiter)
            try:
                await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled() and table._free(slot):
                    # woken (the lock handed to it), then cancelled before it took it: the
                    # next waiter gets the wake-up instead of waiting forever
                    if waiter in slot.waiters:
                        slot.waiters.remove(waiter)
                    if table._slots.get(self.name) is slot:
                        table._wake(self.name, slot)
                raise
            finally:
                if timer is not None:
                    timer.cancel()
                if waiter in slot.waiters:
                    slot.waiters.remove(waiter)
            slot = table._slots.setdefault(self.name, slot)

    def _drop_if_idle(self, slot: _Slot) -> None:
        if slot.owner is None and not slot.waiters:
            self._table._slots.pop(self.name, None)

    async def release(self) -> None:
        table = self._table
        slot = table._slots.get(self.name)
        if slot is None or slot.owner is not asyncio.current_task():
            raise LockReleaseError(f"lock {self.name!r} is not held by this task")
        slot.count -= 1
        if slot.count == 0:
            slot.owner, slot.expires_at = None, None
            table._wake(self.name, slot)
