"""Backend contexts: which backend a throttle uses when it was given none."""

from __future__ import annotations

import logging
import warnings
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Any

from traffik.exceptions import BackendError

if TYPE_CHECKING:
    from traffik.backends.base import ThrottleBackend

__all__ = ["APP_STATE_KEY", "BackendContext", "get_throttle_backend", "set_app_backend"]

APP_STATE_KEY = "__traffik_throttle_backend__"

logger = logging.getLogger("traffik")
_current: ContextVar[ThrottleBackend | None] = ContextVar("traffik_backend", default=None)


def _app_state(app: Any) -> Any:
    state = getattr(app, "state", None)
    if state is None:
        return None
    if isinstance(state, dict):
        return state.get(APP_STATE_KEY)
    return getattr(state, APP_STATE_KEY, None)


def set_app_backend(app: Any, backend: ThrottleBackend) -> None:
    """Record `backend` as `app`'s backend (on `app.state`)."""
    state = getattr(app, "state", None)
    if state is None:
        return
    if isinstance(state, dict):
        state[APP_STATE_KEY] = backend
    else:
        setattr(state, APP_STATE_KEY, backend)


def get_throttle_backend(app: Any = None) -> ThrottleBackend | None:
    """The backend of the innermost active context, else the one recorded on `app`."""
    backend = _current.get()
    if backend is None and app is not None:
        backend = _app_state(app)
    return backend


class BackendContext:
    """`async with backend(app=None, persistent=None, close_on_exit=None):`.

    Entering initialises the backend and makes it the default; leaving resets it unless
    persistent, then closes it unless nested in a context of the same backend.
    """

    def __init__(
        self,
        backend: ThrottleBackend,
        app: Any = None,
        persistent: bool | None = None,
        close_on_exit: bool | None = None,
        initialized: bool = False,
    ) -> None:
        self.backend = backend
        self.app = app
        self.persistent = persistent
        self.close_on_exit = close_on_exit
        self.initialized = initialized
        self._token: Token[ThrottleBackend | None] | None = None
        self._persistent = True
        self._close = False

    async def __aenter__(self) -> ThrottleBackend:
        backend = self.backend
        nested = _current.get() is backend
        self._persistent = (
            self.persistent if self.persistent is not None else (nested or backend.persistent)
        )
        self._close = self.close_on_exit if self.close_on_exit is not None else not nested
        if not self.initialized:
            await backend.initialize()
            if not await backend.ready():
                raise BackendError(
                    f"{backend!r} is not ready: it was initialised but does not answer"
                )
        if self.app is not None:
            set_app_backend(self.app, backend)
        self._token = _current.set(backend)
        return backend

    async def __aexit__(self, *exc_info: Any) -> None:
        if self._token is not None:
            _current.reset(self._token)
            self._token = None
        backend = self.backend
        if backend.closed():
            if not self._persistent:
                warnings.warn(
                    f"{backend!r} was closed inside its context; nothing was reset",
                    RuntimeWarning,
                    stacklevel=2,
                )
            return
        first_error: BaseException | None = None
        if not self._persistent:
            try:
                await backend.reset()
            except Exception as exc:
                logger.warning("resetting %r on context exit failed: %s", backend, exc)
                first_error = exc
        if self._close:
            try:
                await backend.close()
            except Exception as exc:
                logger.warning("closing %r on context exit failed: %s", backend, exc)
                first_error = first_error or exc
        if first_error is not None:
            raise first_error
