"""`ThrottleBackend`: the storage protocol every backend implements, and its lifecycle."""

from __future__ import annotations

import contextlib
import functools
import hashlib
from collections.abc import AsyncIterator, Awaitable, Mapping
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Generic, Optional, TypeVar

from traffik.backends.context import BackendContext, TaskContexts, get_throttle_backend
from traffik.backends.defaults import BackendDefaults
from traffik.backends.lifecycle import (
    GUARD_MARK,
    GUARDED,
    NEW,
    BackendLifecycle,
    close_once,
    guard,
    single_flight,
)
from traffik.backends.locks import LockContext
from traffik.backends.operations import StorageOperations
from traffik.backends.steps import LockedSteps
from traffik.backends.url_options import COMMON_URL_OPTIONS, Converter, split_url_options
from traffik.backends.window_count import WindowCount
from traffik.clock import Clock, millis, system_clock
from traffik.config import check_seconds
from traffik.exceptions import ConfigurationError
from traffik.keyparts import escape
from traffik.refusals import RefusedClients

if TYPE_CHECKING:
    import asyncio

    from traffik.backends.health import StoreCircuit

__all__ = [
    "ConnT",
    "HTTPConnT",
    "ThrottleBackend",
    "WindowCount",
    "build_key",
    "get_throttle_backend",
]

if TYPE_CHECKING:  # (defaults for checkers: `backend: ThrottleBackend` means any backend)
    from typing_extensions import TypeVar as _DefaultedTypeVar

    ConnT = _DefaultedTypeVar("ConnT", default=Any)
    HTTPConnT = _DefaultedTypeVar("HTTPConnT", default=Any)
else:  # (the core needs nothing outside the standard library at run time)
    ConnT = TypeVar("ConnT")
    HTTPConnT = TypeVar("HTTPConnT")

"""`ConnT`: the store's client type, for `ThrottleBackend[ConnT, HTTPConnT]` (as in traffik
1.2); `HTTPConnT`: the connection type throttles pass (`Request`, `WebSocket`). Both default
to `Any`, so `backend: ThrottleBackend` needs no arguments under `mypy --strict`."""

_Backend = TypeVar("_Backend", bound="ThrottleBackend[Any, Any]")
"""The class `from_url` is called on: it builds one of that class."""


def build_key(*args: Any, **kwargs: Any) -> str:
    """A short, order-insensitive digest of extra key parts."""
    parts = sorted(str(a) for a in args) + sorted(f"{k}={v}" for k, v in kwargs.items())
    if not parts:
        return "*"
    return hashlib.md5(":".join(parts).encode(), usedforsecurity=False).hexdigest()


_TRAFFIK12_ALIASES = ("connection_throttled", "default_identifier")
"""traffik 1.2 defined these here; they are `traffik`'s, resolved on first use (the first
needs Starlette, and `traffik` says what to install when it is missing)."""


def __getattr__(name: str) -> Any:
    if name in _TRAFFIK12_ALIASES:
        import traffik

        return getattr(traffik, name)
    raise AttributeError(f"module 'traffik.backends.base' has no attribute {name!r}")


def _default(name: str) -> Any:
    """A backend attribute that reads and writes `backend.defaults.<name>`."""

    def get(self: ThrottleBackend) -> Any:
        return getattr(self.defaults, name)

    def set_(self: ThrottleBackend, value: Any) -> None:
        setattr(self.defaults, name, value)

    return property(get, set_, doc=f"The `{name}` throttles use when they set none.")


_Entered = TypeVar("_Entered", bound="ThrottleBackend[Any, Any]")
"""A backend entered with `async with`: its own type, for the name it is bound to."""


def _defined_here(cls: type, name: str) -> Any:
    """`cls`'s `name` when `cls` or a mixin of it defines it: a class in its bases before
    `ThrottleBackend` that is no backend (`class MyBackend(MyCommands, ThrottleBackend)`).
    None when `cls` inherits it from a backend class (whose own `__init_subclass__` wrapped
    it) or from `ThrottleBackend` itself."""
    for owner in cls.__mro__:
        if name in vars(owner):
            if owner is cls or not (
                issubclass(owner, ThrottleBackend) or owner in ThrottleBackend.__mro__
            ):
                return vars(owner)[name]
            return None
    return None


class ThrottleBackend(BackendLifecycle, StorageOperations, LockedSteps, Generic[ConnT, HTTPConnT]):
    """Stores rate-limit state under one namespace.

    A backend initialises itself on first use, once however many tasks use it at first;
    once explicitly closed it stays closed until `initialize()` runs again. Built-in
    strategies call `evaluate`, which runs one strategy transition atomically (the generic
    version here uses a lock; native backends do better).

    A subclass opens its store in `initialize` (as in traffik 1.2) or in the `_open` hook,
    and releases it in `close` or `_close`; either way `initialize` is single-flight and
    `close` runs once. A backend without `_open` (one written for traffik 1.2, say) has its
    storage operations guarded, as traffik 1.2 guarded them: each initialises the backend
    first when it is not, and re-raises an error of `base_exception_type` as `BackendError`.
    A backend with `_open` (the built-ins) checks `self.initialized` in its own operations
    (`await self.ensure()`) and raises `BackendError`s itself, so nothing wraps its hot
    path; setting `base_exception_type` on it guards its operations all the same.

    `fail_fast` says what entering the backend (`async with backend:`, `backend.lifespan`)
    does when the store cannot be reached: False (the default) starts anyway, the store's
    circuits open and probe it in the background, and decisions follow `on_error` until it
    answers; True raises, so the app does not start. `initialize()` alone raises either way
    (`BackendLifecycle.initialize`). `circuits` are the backend's
    `StoreCircuit`s (`traffik.backends.health`), one per store it talks to; none for stores
    in this process.
    """

    default_namespace: ClassVar[str] = "traffik"
    circuits: tuple[StoreCircuit, ...] = ()
    unreachable_advice: ClassVar[str] = (
        "check that the store answers (its address, the network, its load)"
    )
    """What the log line of a decision that could not reach the store asks to check
    (`traffik.on_error`): a network store's address, network and load by default."""
    caches_refusals: ClassVar[bool] = False
    """Whether the backend remembers refused clients by default (`traffik.refusals`): True
    for stores outside the process, where it saves round trips."""
    decide_now: ClassVar[Optional[Callable[..., Any]]] = None
    """A backend that can decide in place, without a coroutine, defines it as a method
    (`InMemoryBackend.decide_now`); throttles then call it on their hot path."""
    base_exception_type: ClassVar[Any] = BaseException
    """The errors (a class or tuple) a guarded operation re-raises as `BackendError`."""
    wrap_methods: ClassVar[tuple[str, ...]] = ()
    """More methods a guarded backend (see above) guards, besides the storage operations."""
    url_options: ClassVar[Optional[Mapping[str, Converter]]] = None
    """The settings its URL's query may carry, each with how its text converts
    (`traffik.backends.url_options`); None: the query is the connection's, left in the URL."""

    def __init__(
        self,
        connection: Any = None,
        *,
        namespace: str | None = None,
        persistent: bool = False,
        clock: Clock | None = None,
        fail_fast: bool = False,
        **defaults: Any,
    ) -> None:
        namespace = self.default_namespace if namespace is None else namespace
        if not isinstance(namespace, str) or not namespace:
            raise ConfigurationError(
                f"{type(self).__name__}: namespace={namespace!r} must be a non-empty string"
            )
        self.connection = connection
        self.namespace = namespace
        self.persistent = persistent
        self.fail_fast = bool(fail_fast)
        self.defaults = BackendDefaults.build(type(self).__name__, defaults)
        cache = self.defaults.cache_refusals
        self.refusals: RefusedClients | None = (
            RefusedClients() if (self.caches_refusals if cache is None else cache) else None
        )
        self.clock = clock or system_clock
        self._prefix = escape(namespace) + ":"
        self._status = NEW
        self._attempt: asyncio.Task[None] | None = None
        self._closer: asyncio.Task[Any] | None = None
        self._contexts = TaskContexts()

    @property
    def clock(self) -> Clock:
        """The backend's time (seconds); strategies read it in whole ms (`now_ms`)."""
        return self._clock

    @clock.setter
    def clock(self, clock: Clock) -> None:
        self._clock = clock
        self.now_ms = millis(clock)

    # -- throttle defaults (see `BackendDefaults`) ---------------------------------------

    identifier = _default("identifier")
    handle_throttled = _default("handle_throttled")
    on_error = _default("on_error")
    lock_ttl = _default("lock_ttl")
    lock_blocking = _default("lock_blocking")
    lock_blocking_timeout = _default("lock_blocking_timeout")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(namespace={self.namespace!r})"

    @classmethod
    def from_url(cls: type[_Backend], url: str, **options: Any) -> _Backend:
        """Build from a URL (`traffik.backends.from_url` calls this); the URL is the
        connection, less the settings its query carries (`url_options`), which become
        keywords."""
        if cls.url_options is not None:  # (opted in: the settings every backend takes too)
            accepted = {**COMMON_URL_OPTIONS, **cls.url_options}
            url, options = split_url_options(url, cls.__name__, accepted, options)
        return cls(url, **options)

    # -- keys --------------------------------------------------------------------------

    def get_key(self, key: Any, *args: Any, **kwargs: Any) -> str:
        """`namespace:key`, plus a digest of any extra parts."""
        if args or kwargs:
            return f"{self._prefix}{key}:{build_key(*args, **kwargs)}"
        return self._prefix + str(key)

    def decider(
        self, strategy: Any, rate: Any, cost: int, kind: int
    ) -> Optional[Callable[[str], Any]]:
        """`decide_now` for one strategy, rate and cost, made once for a throttle's hot path.

        Args:
            strategy: The built-in strategy that decides.
            rate: The rate to apply.
            cost: The units each hit spends.
            kind: How to decide in place (`traffik.strategies.steps.in_place_kind`).

        Returns:
            A callable of a throttle's key (as `strategy.decide` takes it, not namespaced)
            returning the `Decision`, or None when it cannot be made at once; None when
            the backend has no `decide_now`.
        """
        decide_now = self.decide_now
        if decide_now is None:
            return None
        prefix, suffix = self._prefix, getattr(strategy, "suffix", "")

        def decide(key: str) -> Any:
            return decide_now(prefix + key + suffix, strategy, rate, cost, kind)

        return decide

    def decider_all(
        self, strategy: Any, rates: Any, cost: int, kind: int
    ) -> Optional[Callable[[str], Any]]:
        """`decider` for a throttle with several rates: its decisions all or nothing, as
        `evaluate_all` makes them on the throttle's items, made once for its hot path. The
        base has none (the throttle then awaits `evaluate_all`).

        Args:
            strategy: The built-in strategy that decides.
            rates: The rates to apply, in the throttle's order.
            cost: The units each hit spends.
            kind: How to decide in place (`traffik.strategies.steps.in_place_kind`).

        Returns:
            A callable of a throttle's key (not namespaced) returning the combined
            `Decision`, or None when it cannot be made at once; or None.
        """
        return None

    def items_decider(self, items: Any) -> Optional[Callable[[], Any]]:
        """`evaluate_all` (committing) on fixed items, made once for a hot path: several
        throttles decided as one for a client met before (`traffik.together`). The base has
        none (the caller then awaits `evaluate_all`).

        Args:
            items: The items (`traffik.strategies.steps.Item`) to decide together.

        Returns:
            A callable returning the combined `Decision`, or None when it cannot be made at
            once; or None.
        """
        return None

    def waited_decider(
        self, strategy: Any, rate: Any, cost: int, kind: int
    ) -> Optional[Callable[[str], Awaitable[Any]]]:
        """For a backend that answers over the network: `strategy.decide` for one strategy,
        rate and cost, made once for a throttle's hot path (what the strategy works out
        from the rate and cost, and checks of them, done once instead of per hit).

        The throttle awaits it for a hit its `decider` (if any) did not decide at once. The
        base has none (the throttle then awaits `strategy.decide`).

        Args:
            strategy: The built-in strategy that decides.
            rate: The rate to apply (checked when the throttle was built).
            cost: The units each hit spends.
            kind: How a backend may decide it (`traffik.strategies.steps.in_place_kind`).

        Returns:
            A coroutine function of a throttle's key (as `strategy.decide` takes it, not
            namespaced) returning the same `Decision` as `strategy.decide`, or None.
        """
        return None

    def lock(
        self,
        name: str,
        ttl: float | None = None,
        blocking: bool | None = None,
        blocking_timeout: float | None = None,
        reentrant: bool = False,
        enforce_ttl_locally: bool = False,
        local_ttl_factor: float = 0.8,
    ) -> LockContext:
        """An async context manager holding the named lock (inside this namespace).

        `None` settings take the backend's `lock_ttl`, `lock_blocking` and
        `lock_blocking_timeout`. With `enforce_ttl_locally` and a TTL, the block is cancelled
        once it has held the lock for `ttl * local_ttl_factor` seconds (before the store lets
        another holder in), and `LockTimeoutError` is raised once the lock is released.

        Raises:
            ConfigurationError: When `ttl` is not a number of seconds above 0,
                `blocking_timeout` not one of 0 or more, or `enforce_ttl_locally` is set and
                `local_ttl_factor` is not a number strictly between 0 and 1.
        """
        if enforce_ttl_locally and (
            isinstance(local_ttl_factor, bool)
            or not isinstance(local_ttl_factor, (int, float))
            or not 0 < local_ttl_factor < 1
        ):
            raise ConfigurationError(
                f"backend.lock({name!r}): local_ttl_factor={local_ttl_factor!r} must be a number "
                "between 0 and 1 (exclusive): the share of the ttl the block may hold the lock"
            )
        ttl = self.lock_ttl if ttl is None else ttl
        if ttl is not None:
            ttl = check_seconds(f"backend.lock({name!r}): ttl", ttl, positive=True)
        if blocking_timeout is None:
            blocking_timeout = self.lock_blocking_timeout
        if blocking_timeout is not None:
            check_seconds(f"backend.lock({name!r}): blocking_timeout", blocking_timeout)
        return LockContext(
            self.get_lock(self.get_key(name), ttl, reentrant),
            self.lock_blocking if blocking is None else blocking,
            blocking_timeout,
            ttl,
            local_ttl_factor if enforce_ttl_locally else None,
        )

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        guarded = cls._open is ThrottleBackend._open or any(
            "base_exception_type" in vars(k)
            for k in cls.__mro__[: cls.__mro__.index(ThrottleBackend)]
        )
        if guarded:
            for name in (*GUARDED, *cls.wrap_methods):
                method = _defined_here(cls, name)
                if method is not None:
                    setattr(cls, name, guard(method))
        initialize = _defined_here(cls, "initialize")
        if initialize is not None and not getattr(initialize, GUARD_MARK, False):
            opening = guard(initialize, opens=False) if guarded else initialize
            cls.initialize = single_flight(opening)  # type: ignore[method-assign]
        close = _defined_here(cls, "close")
        if close is not None and not getattr(close, GUARD_MARK, False):
            own_close = guard(close, opens=False) if guarded else close
            cls.close = close_once(own_close)  # type: ignore[method-assign]
        clear = getattr(cls, "clear", None)  # (the base's own too: it forgets nothing)
        if clear is not None and not getattr(clear, "forgets_refusals", False):
            # Whatever a backend's clear() does, the refusals it remembers go with it.
            @functools.wraps(clear)
            async def clear_and_forget(self: ThrottleBackend) -> None:
                if self.refusals is not None:
                    self.refusals.forget()
                await clear(self)

            clear_and_forget.forgets_refusals = True  # type: ignore[attr-defined]
            cls.clear = clear_and_forget  # type: ignore[method-assign, assignment]

    # -- contexts ------------------------------------------------------------------------

    def __call__(
        self,
        app: Any = None,
        persistent: bool | None = None,
        close_on_exit: bool | None = None,
        initialized: bool = False,
        *,
        fail_fast: bool | None = None,
    ) -> BackendContext:
        """A context in which this backend is the default for throttles given none;
        `fail_fast` (default: the backend's) refuses to enter while the store is unreachable."""
        return BackendContext(self, app, persistent, close_on_exit, initialized, fail_fast)

    async def __aenter__(self: _Entered) -> _Entered:
        context = self()
        await context.__aenter__()  # (which gives this backend back)
        self._contexts.push(context)
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self._contexts.pop().__aexit__(*exc_info)

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Any, *, fail_fast: bool | None = None) -> AsyncIterator[None]:
        """`FastAPI(lifespan=backend.lifespan)`: initialise at start; reset (unless persistent)
        and close at stop. A store unreachable at start-up does not stop the app unless
        `fail_fast` (default: the backend's): see `BackendContext`."""
        async with self(app, fail_fast=fail_fast):
            yield
