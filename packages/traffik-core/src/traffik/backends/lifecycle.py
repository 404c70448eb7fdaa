"""How a backend opens and closes, and the guard on a backend that does not check itself.

`ThrottleBackend` makes `initialize` single-flight (`single_flight`: concurrent first uses
share one attempt) and `close` run once (`close_once`), whether a subclass opens its store in
the `_open` hook (the built-ins) or in its own `initialize` (traffik 1.2's way). A backend
written for traffik 1.2 also has its storage operations guarded (`guard`): each initialises
the backend first when it is not, and re-raises an error of its `base_exception_type` as a
`BackendError`. The built-ins check readiness themselves, so nothing wraps their hot path.
`BackendLifecycle` is the part of `ThrottleBackend` that opens, closes and checks it.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Awaitable, Coroutine
from typing import TYPE_CHECKING, Any, Callable

from traffik._asyncio_only import running_loop
from traffik.exceptions import BackendConnectionError, BackendError

if TYPE_CHECKING:
    from traffik.backends.base import ThrottleBackend
    from traffik.backends.health import StoreCircuit

__all__ = [
    "CLOSED",
    "GUARDED",
    "GUARD_MARK",
    "NEW",
    "READY",
    "BackendLifecycle",
    "close_once",
    "guard",
    "retrieve_error",
    "single_flight",
]

NEW = "new"
"""A backend's `_status` before its first `initialize`."""
READY = "ready"
"""A backend's `_status` once open."""
CLOSED = "closed"
"""A backend's `_status` once explicitly closed (it stays closed until `initialize`)."""


def retrieve_error(task: asyncio.Task[None]) -> None:
    """Mark a finished initialisation's error as seen (its waiters may all have gone)."""
    if not task.cancelled():
        task.exception()


GUARDED = (
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
    "scan",
    "clear",
    "reset",
    "evaluate",
    "evaluate_all",
    "refund_all",
    "get_lock",
)
"""The operations the base guards on a backend that does not guard its own (`ThrottleBackend`)."""
GUARD_MARK = "__traffik_guarded__"
_UNWRAPPED = (BackendError, asyncio.CancelledError, KeyboardInterrupt, SystemExit, GeneratorExit)


def _backend_error(exc: BaseException) -> BackendError:
    return BackendError(f"Error occurred in backend operation. {exc}", cause=exc)


def guard(method: Callable[..., Any], *, opens: bool = True) -> Callable[..., Any]:
    """`method` with its errors of `base_exception_type` re-raised as `BackendError`
    (`BackendError`s, cancellation and exits pass unchanged), run once the backend is
    initialised when it `opens` (a coroutine method)."""
    if getattr(method, GUARD_MARK, False):
        return method
    if inspect.iscoroutinefunction(method):

        @functools.wraps(method)
        async def guarded(self: ThrottleBackend, *args: Any, **kwargs: Any) -> Any:
            if opens and self._status is not READY:
                await self.ensure()
            try:
                return await method(self, *args, **kwargs)
            except _UNWRAPPED:
                raise
            except self.base_exception_type as exc:
                raise _backend_error(exc) from exc

    else:

        @functools.wraps(method)
        def guarded(self: ThrottleBackend, *args: Any, **kwargs: Any) -> Any:
            try:
                return method(self, *args, **kwargs)
            except _UNWRAPPED:
                raise
            except self.base_exception_type as exc:
                raise _backend_error(exc) from exc

    setattr(guarded, GUARD_MARK, True)
    return guarded


def single_flight(
    open_: Callable[[Any], Awaitable[None]],
) -> Callable[[Any], Coroutine[Any, Any, None]]:
    """`initialize` for a backend whose opening step is `open_`: concurrent callers share one
    attempt and its outcome, and a subclass's `initialize` may call its parent's."""

    @functools.wraps(open_)
    async def initialize(self: ThrottleBackend) -> None:
        if self._status is READY:
            return
        loop = running_loop(self)
        attempt = self._attempt
        if attempt is not None and attempt is asyncio.current_task():
            await open_(self)  # the opening itself, calling a parent's `initialize`
            return
        if attempt is None or attempt.get_loop() is not loop:
            attempt = self._attempt = loop.create_task(self._open_once(open_))
            attempt.add_done_callback(retrieve_error)
        await asyncio.shield(attempt)

    setattr(initialize, GUARD_MARK, True)
    return initialize


def close_once(
    close_: Callable[[Any], Awaitable[None]],
) -> Callable[[Any], Coroutine[Any, Any, None]]:
    """`close` for a backend whose closing step is `close_`: once, marking the backend closed
    first; a subclass's `close` may call its parent's."""

    @functools.wraps(close_)
    async def close(self: ThrottleBackend) -> None:
        task = asyncio.current_task(running_loop(self))
        if self._closer is not None and self._closer is task:
            await close_(self)  # the closing itself, calling a parent's `close`
            return
        if self._status is CLOSED:
            return
        self._status = CLOSED
        if self.refusals is not None:
            self.refusals.forget()
        for circuit in self.circuits:
            circuit.stop()
        self._closer = task
        try:
            await close_(self)
        finally:
            self._closer = None

    setattr(close, GUARD_MARK, True)
    return close


class BackendLifecycle:
    """How `ThrottleBackend` opens, closes and says whether it is ready: the hooks a subclass
    overrides (`_open`, `_close`, `_ping`), `initialize` (single-flight), `close` (once) and
    `ensure`."""

    _status: str
    _attempt: asyncio.Task[None] | None
    circuits: tuple[StoreCircuit, ...]

    async def _open(self) -> None:
        """Connect and prepare; called by `initialize`. Subclasses override."""

    async def _close(self) -> None:
        """Release connections (never data); called by `close`. Subclasses override."""

    async def _ping(self) -> bool:
        """True when the store answers; called by `ready`. Subclasses override."""
        return True

    @single_flight
    async def initialize(self) -> None:
        """Open the backend; idempotent. Concurrent callers share one attempt and its outcome:
        a failure reaches every waiter at once, and the next call tries again. A store that
        cannot be reached raises `BackendConnectionError` and a bad setting
        `ConfigurationError`, whatever `fail_fast` says: `fail_fast` is what entering the
        backend (`BackendContext`) does with the first."""
        await self._open()

    def _open_once(self, open_: Callable[[Any], Awaitable[None]]) -> Coroutine[Any, Any, None]:
        """The attempt `initialize` runs (in a task of its own) to open the backend."""
        if self._status == CLOSED:
            self._status = NEW  # opening again: a `close()` from now on marks it closed
        return self._opening(open_)

    async def _opening(self, open_: Callable[[Any], Awaitable[None]]) -> None:
        try:
            await open_(self)
            if self._status == CLOSED:  # closed while opening: `close` releases what opened
                raise BackendConnectionError(
                    f"{self!r} was closed while it was being initialised; call "
                    "`await backend.initialize()` (or enter `async with backend:`) to use it again"
                )
            self._status = READY
        finally:
            if self._attempt is asyncio.current_task():
                self._attempt = None

    @close_once
    async def close(self) -> None:
        """Release connections and stop the circuits' probes; data in a persistent store survives.

        An initialisation in flight ends first (within the backend's timeouts), so that
        what it opens is released too; it then fails with `BackendConnectionError`."""
        attempt = self._attempt
        if (
            attempt is not None
            and attempt is not asyncio.current_task()
            and attempt.get_loop() is asyncio.get_running_loop()
        ):
            await asyncio.wait((attempt,))
        await self._close()

    def unreachable(self, error: BaseException) -> None:
        """The store could not be reached (at start-up): open every circuit now, each probing
        its store in the background until it answers."""
        for circuit in self.circuits:
            circuit.trip(error)

    async def ready(self) -> bool:
        """True when initialised and the store answers; never initialises by itself."""
        if self._status != READY:
            return False
        try:
            return await self._ping()
        except Exception:
            return False

    def closed(self) -> bool:
        return self._status != READY

    @property
    def explicitly_closed(self) -> bool:
        """True once `close()` ran (and until `initialize()` runs again)."""
        return self._status == CLOSED

    @property
    def initialized(self) -> bool:
        return self._status == READY

    async def ensure(self) -> None:
        """Initialise on first use; raise `BackendConnectionError` once explicitly closed."""
        if self._status == READY:
            return
        attempt = self._attempt
        if attempt is not None and attempt is asyncio.current_task():
            return  # the opening itself uses the store
        if self._status == CLOSED:
            raise BackendConnectionError(
                f"{self!r} was closed; call `await backend.initialize()` (or enter `async with backend:`) "
                "to use it again"
            )
        await self.initialize()
