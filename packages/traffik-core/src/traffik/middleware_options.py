"""`ThrottleMiddleware`'s arguments, checked: its throttles as a list, and its other settings.

Each bad value is a `ConfigurationError` (a `TypeError` for an item that is no throttle)
naming it and what would be valid; where traffik 1.2 code may have passed arguments in
another order, the message recalls 1.2's positional order. `Throttle.as_middleware` checks
its arguments here too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Union

from traffik.backends.base import ThrottleBackend
from traffik.exceptions import ConfigurationError
from traffik.middleware_throttle import MiddlewareThrottle
from traffik.throttle_settings import check_context
from traffik.throttles import Throttle

__all__ = ["checked_options", "listed"]

_ORDER = "app, middleware_throttles, backend, exception_handler_getter, context, sort, skip_handler"
"""`ThrottleMiddleware`'s positional order, traffik 1.2's."""


def listed(given: Any) -> list[Union[MiddlewareThrottle, Throttle]]:
    """`middleware_throttles` as a list, each item a `MiddlewareThrottle` or a throttle."""
    owner = "ThrottleMiddleware"
    if isinstance(given, (MiddlewareThrottle, Throttle)):
        raise ConfigurationError(
            f"{owner}: middleware_throttles={given!r} is one throttle; pass a list: "
            f"middleware_throttles=[{given!r}]"
        )
    if not isinstance(given, Iterable) or isinstance(given, (str, bytes, Mapping)):
        raise ConfigurationError(
            f"{owner}: middleware_throttles={given!r} must be a list of MiddlewareThrottle "
            "objects or throttles (HTTPThrottle, WebSocketThrottle)"
        )
    throttles = list(given)
    for index, item in enumerate(throttles):
        if not isinstance(item, (MiddlewareThrottle, Throttle)):
            raise TypeError(
                f"{owner}: middleware_throttles[{index}]={item!r} is neither a "
                "MiddlewareThrottle nor a throttle (MiddlewareThrottle wraps an HTTPThrottle or "
                "WebSocketThrottle)"
            )
    return throttles


def checked_options(
    backend: Any = None,
    exception_handler_getter: Any = None,
    context: Any = None,
    skip_handler: Any = None,
) -> dict[str, Any]:
    """`ThrottleMiddleware`'s settings besides its throttles and their order, checked (a
    backend URL becomes its backend), as keyword arguments for it."""
    owner = "ThrottleMiddleware"
    if isinstance(backend, str):
        from traffik.backends import from_url

        backend = from_url(backend)
    if backend is not None and not isinstance(backend, ThrottleBackend):
        raise ConfigurationError(
            f"{owner}: backend={backend!r} is not a ThrottleBackend or a backend URL"
        )
    getter = exception_handler_getter
    if getter is not None and not callable(getter):
        hint = (
            "; a mapping is a context: pass it as context=" if isinstance(getter, Mapping) else ""
        )
        raise ConfigurationError(
            f"{owner}: exception_handler_getter={getter!r} must be a function "
            f"(exc) -> handler or None{hint}; the positional order is traffik 1.2's: {_ORDER}"
        )
    if skip_handler is not None and not isinstance(skip_handler, bool):
        raise ConfigurationError(
            f"{owner}: skip_handler={skip_handler!r} must be True, False or None (each "
            f"throttle's own); the positional order is traffik 1.2's: {_ORDER}"
        )
    return {
        "backend": backend,
        "exception_handler_getter": getter,
        "context": check_context(context, owner),
        "skip_handler": skip_handler,
    }
