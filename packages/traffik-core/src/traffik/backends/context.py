"""Which backend a connection uses when its throttle was given none, decided per connection.

The order, for each connection: the throttle's own backend; for a `dynamic_backend` throttle,
the innermost `async with backend:` context; a backend bound to the connection by
`ThrottleMiddleware(backend=...)`; the backend of the connection's app (recorded on
`app.state` by `backend.lifespan` or `backend(app)`, or, under a client that never runs the
lifespan, the backend whose `lifespan` the app was given); the backend of the app the server
serves, for a connection that reached a mounted sub-app (`scope["app"]` is then the sub-app;
`scope["router"]` is still the served app's router, where it is recorded too); the
innermost `async with backend:` context. Nothing is remembered between connections, so a
throttle defined once at module level follows each app it serves (a fresh app and backend
per test, say).
"""

from __future__ import annotations

import asyncio
import logging
import warnings
import weakref
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Any, Optional

from traffik.config import BACKEND_APP_CONTEXT_KEY
from traffik.exceptions import BackendConnectionError

if TYPE_CHECKING:
    from traffik.backends.base import ThrottleBackend

__all__ = [
    "APP_STATE_KEY",
    "SCOPE_BACKEND_KEY",
    "BackendContext",
    "get_throttle_backend",
    "resolve_backend",
    "serving_backend",
    "serving_backends",
    "set_app_backend",
]

APP_STATE_KEY = BACKEND_APP_CONTEXT_KEY
SCOPE_BACKEND_KEY = "traffik.backend"
"""The scope key under which `ThrottleMiddleware` binds its backend for its throttles."""

logger = logging.getLogger("traffik")
_current: ContextVar[Optional[ThrottleBackend]] = ContextVar("traffik_backend", default=None)


def _app_backend(app: Any) -> Optional[ThrottleBackend]:
    state = getattr(app, "state", None)
    if state is None:
        return None
    if isinstance(state, dict):
        return state.get(APP_STATE_KEY)
    return getattr(state, APP_STATE_KEY, None)


_OWN_KEY = "__traffik_own_backend__"
"""Where `BackendContext` notes the backend of an app's own context (its lifespan's), on
`app.state`, apart from the backend recorded for `get_throttle_backend`."""


def _app_own_backend(app: Any) -> Optional[ThrottleBackend]:
    state = getattr(app, "state", None)
    if isinstance(state, dict):
        return state.get(_OWN_KEY)
    return getattr(state, _OWN_KEY, None)


def _set_app_own_backend(app: Any, backend: ThrottleBackend) -> None:
    state = getattr(app, "state", None)
    if isinstance(state, dict):
        state[_OWN_KEY] = backend
    elif state is not None:
        setattr(state, _OWN_KEY, backend)


def set_app_backend(app: Any, backend: ThrottleBackend) -> None:
    """Record `backend` as `app`'s backend (on `app.state`), and on its router for the
    sub-apps mounted in it: Starlette keeps the router of the app the server called in
    `scope["router"]` through every mount."""
    router = getattr(app, "router", None)
    if router is not None:
        setattr(router, APP_STATE_KEY, backend)
    state = getattr(app, "state", None)
    if state is None:
        return
    if isinstance(state, dict):
        state[APP_STATE_KEY] = backend
    else:
        setattr(state, APP_STATE_KEY, backend)


def get_throttle_backend(app: Any = None) -> Optional[ThrottleBackend]:
    """The backend of the innermost active context, else the one recorded on `app`."""
    backend = _current.get()
    if backend is None and app is not None:
        backend = _app_backend(app)
    return backend


def resolve_backend(
    own: Optional[ThrottleBackend], scope: Any, dynamic: bool = False
) -> Optional[ThrottleBackend]:
    """The backend a throttle uses for the connection whose ASGI scope is `scope` (module
    docstring); None when there is none."""
    if own is not None:
        return own
    if dynamic:
        backend = _current.get()
        if backend is not None:
            return backend
    if scope is not None:
        backend = scope.get(SCOPE_BACKEND_KEY)
        if backend is None:
            app = scope.get("app")
            if app is not None:
                backend = _app_backend(app)
            if backend is None:  # (a mounted sub-app: the served app's, through its router)
                router = scope.get("router")
                if router is not None:
                    backend = getattr(router, APP_STATE_KEY, None)
            if backend is None:  # (the app's backend, its lifespan not run: the same place)
                backend = _lifespan_backend(app) or _lifespan_backend(scope.get("router"))
        if backend is not None:
            return backend
        return _current.get()
    backend = _current.get()
    return serving_backend() if backend is None else backend


_serving: dict[BackendContext, ThrottleBackend] = {}
"""The apps' own contexts entered and not yet left (a lifespan's, `async with backend(app)`),
to their backends: `serving_backend`."""


def serving_backends() -> list[ThrottleBackend]:
    """The backends of the apps whose lifespans are running, each once, in the order entered."""
    found: list[ThrottleBackend] = []
    for backend in _serving.values():
        if not any(backend is seen for seen in found):
            found.append(backend)
    return found


def serving_backend() -> Optional[ThrottleBackend]:
    """The backend of the app this process serves, for a throttle asked without a connection
    (`throttle.reset(client_ip, path=...)` in an admin endpoint): a server runs the lifespan
    in a task of its own, so the context it entered is not the request's. None unless the
    apps whose lifespans are running share one backend."""
    found = serving_backends()
    return found[0] if len(found) == 1 else None


def _lifespan_backend(app: Any) -> Optional[ThrottleBackend]:
    """The backend whose `lifespan` `app` (or a router) was given
    (`FastAPI(lifespan=backend.lifespan)`), for a client that never runs the lifespan, such
    as httpx's `ASGITransport`: the backend initialises itself on first use. Found behind
    the lifespans a framework wraps it in (FastAPI's `include_router` merges the router's
    with the app's); None when there is none, or several backends' lifespans."""
    router = getattr(app, "router", app)
    found: list[ThrottleBackend] = []
    _lifespan_owners(getattr(router, "lifespan_context", None), found, _WRAPPED_DEPTH)
    return found[0] if len(found) == 1 else None


_WRAPPED_DEPTH = 6
"""How many wrappers deep `_lifespan_owners` looks (each `include_router` adds two)."""


def _lifespan_owners(call: Any, found: list[ThrottleBackend], depth: int) -> None:
    """Add to `found` the backends whose bound `lifespan` is `call` or what it wraps: its
    `__wrapped__` (`functools.wraps`, as `asynccontextmanager` sets it) and the callables its
    closure holds (a merged lifespan's parts), at most `depth` wrappers deep."""
    from traffik.backends.base import ThrottleBackend  # (base imports this module)

    owner = getattr(call, "__self__", None)
    if isinstance(owner, ThrottleBackend):
        if not any(owner is seen for seen in found):
            found.append(owner)
        return
    if depth == 0 or not callable(call):
        return
    parts = [getattr(call, "__wrapped__", None)]
    for cell in getattr(call, "__closure__", None) or ():
        try:
            parts.append(cell.cell_contents)
        except ValueError:  # (a cell not yet filled)
            continue
    for part in parts:
        if part is not None and part is not call:
            _lifespan_owners(part, found, depth - 1)


class BackendContext:
    """`async with backend(app=None, persistent=None, close_on_exit=None, fail_fast=None):`.

    Made with an `app`, it is that app's backend at once (as in traffik 1.2: a startup
    handler may call `backend(app)` without entering it). Entering initialises the backend
    and makes it the default; leaving resets it unless persistent, then closes it unless
    nested: in a context of the same backend, or made for an app whose own backend (its
    lifespan's) is another, still open (a backend per tenant, entered on each request). As in
    traffik 1.2, `persistent` and `close_on_exit` are settled when the context is made: a
    value given wins; otherwise, nested in a context of the same backend, it is persistent
    and does not close; else it follows `backend.persistent` and closes.

    A store that cannot be reached on entry (`BackendConnectionError`: unreachable, timed
    out, or not answering) raises only with `fail_fast` (default: `backend.fail_fast`).
    Otherwise the context is entered all the same: the backend's circuits open and probe
    the store in the background, throttles answer with their `on_error` until it answers,
    and one warning says so. Any other error (a bad setting) is raised.

    A store that cannot be reached on exit never raises (whatever `fail_fast`): its reset is
    left out, one warning names the store and the namespace left as it was, and the backend
    is closed all the same, so an app's shutdown completes. Any other error of the reset or
    the close is raised once both were attempted.
    """

    def __init__(
        self,
        backend: ThrottleBackend,
        app: Any = None,
        persistent: Optional[bool] = None,
        close_on_exit: Optional[bool] = None,
        initialized: bool = False,
        fail_fast: Optional[bool] = None,
    ) -> None:
        nested = _current.get() is backend
        if app is not None and not nested:
            # Made for an app whose own backend (the one its lifespan entered) is another,
            # still open one: a backend per tenant entered on each request, traffik 1.2's
            # pattern. It is nested in the app's context, as 1.2 counted it: exiting neither
            # resets nor closes it. The app's own backend is not nested in itself.
            own = _app_own_backend(app)
            nested = own is not None and own is not backend and own.initialized and not own.closed()
            if not nested:
                _set_app_own_backend(app, backend)
        self.backend = backend
        self.app = app
        self.persistent: bool = (
            persistent if persistent is not None else (nested or backend.persistent)
        )
        self.close_on_exit: bool = close_on_exit if close_on_exit is not None else not nested
        self.initialized = initialized
        self.fail_fast: bool = backend.fail_fast if fail_fast is None else fail_fast
        self._token: Optional[Token[Optional[ThrottleBackend]]] = None
        if app is not None:  # at once, as traffik 1.2: `backend(app)` in a startup handler
            set_app_backend(app, backend)

    async def __aenter__(self) -> ThrottleBackend:
        backend = self.backend
        if not self.initialized:
            try:
                await backend.initialize()
                if not await backend.ready():
                    # (a store opening its connections on first use, memcached's, fails here:
                    # its circuits hold what it answered, a refused connection say)
                    causes = [str(c.last_error) for c in backend.circuits if c.last_error]
                    why = f" ({'; '.join(causes)})" if causes else ""
                    raise BackendConnectionError(
                        f"{backend!r} is not ready: it was initialised but does not answer{why}"
                    )
            except BackendConnectionError as exc:
                if self.fail_fast:
                    raise
                backend.unreachable(exc)
                logger.warning(
                    "%r cannot be reached at start-up (%s); starting anyway: throttles answer "
                    "with their on_error until it answers, and it is retried in the background "
                    "(pass fail_fast=True to the backend to refuse to start instead)",
                    backend,
                    exc,
                )
        self._token = _current.set(backend)
        if self.app is not None and self.close_on_exit:  # (an app's own: not a tenant's)
            _serving[self] = backend
        return backend

    async def __aexit__(self, *exc_info: Any) -> None:
        if self._token is not None:
            _current.reset(self._token)
            self._token = None
        _serving.pop(self, None)
        backend = self.backend
        if not backend.initialized and not backend.explicitly_closed:
            if self.close_on_exit:  # it never came up: nothing to reset, only probes to stop
                await backend.close()
            return
        if backend.closed():
            if not self.persistent:
                warnings.warn(
                    f"{backend!r} was closed inside its context; nothing was reset",
                    RuntimeWarning,
                    stacklevel=2,
                )
            return
        first_error: Optional[BaseException] = None
        if not self.persistent:
            try:
                await backend.reset()
            except BackendConnectionError as exc:  # (as on entry: an outage fails nothing)
                logger.warning(
                    "%r cannot be reached on exit (%s): namespace %r was not reset, its counters "
                    "stay until they expire; closing it all the same",
                    backend,
                    exc,
                    backend.namespace,
                )
            except Exception as exc:
                logger.warning("resetting %r on context exit failed: %s", backend, exc)
                first_error = exc
        if self.close_on_exit:
            try:
                await backend.close()
            except Exception as exc:
                logger.warning("closing %r on context exit failed: %s", backend, exc)
                if not isinstance(exc, BackendConnectionError):
                    first_error = first_error or exc
        if first_error is not None:
            raise first_error


class TaskContexts:
    """The `async with backend:` contexts each task has entered, innermost last.

    Kept per task, so tasks entering and leaving the same backend at once each leave their
    own context (a context variable's token belongs to the task that set it).
    """

    __slots__ = ("_stacks",)

    def __init__(self) -> None:
        self._stacks: weakref.WeakKeyDictionary[asyncio.Task[Any], list[BackendContext]] = (
            weakref.WeakKeyDictionary()
        )

    def push(self, context: BackendContext) -> None:
        self._stacks.setdefault(_task(), []).append(context)

    def pop(self) -> BackendContext:
        task = _task()
        stack = self._stacks.get(task)
        if not stack:
            raise RuntimeError("`async with backend:` exited in a task that did not enter it")
        context = stack.pop()
        if not stack:
            del self._stacks[task]
        return context


def _task() -> asyncio.Task[Any]:
    task = asyncio.current_task()
    if task is None:
        raise RuntimeError("`async with backend:` needs a running asyncio task")
    return task
