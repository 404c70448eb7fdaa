"""Traffik: asynchronous, distributed rate limiting for Starlette and FastAPI.

The core (rates, strategies, backends, errors) needs nothing but the standard library.
The HTTP and WebSocket throttles need Starlette (`pip install "traffik-core[starlette]"`,
or `traffik-fastapi`) and are imported on first use.
"""

from __future__ import annotations

__path__ = __import__("pkgutil").extend_path(__path__, __name__)

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "2.0.0"

if TYPE_CHECKING:  # what `__getattr__` imports, for type checkers and IDEs
    # (`X as X`: traffik 1.2's names, outside `__all__`; its `traffik` star-imported them)
    from traffik._utils import time as time
    from traffik.backends.base import ThrottleBackend
    from traffik.backends.context import get_throttle_backend
    from traffik.backends.inmemory import InMemoryBackend
    from traffik.clock import ManualClock
    from traffik.config import (
        ANONYMOUS_IDENTIFIER,
        get_lock_blocking,
        get_lock_blocking_timeout,
        get_lock_ttl,
        set_lock_blocking,
        set_lock_blocking_timeout,
        set_lock_ttl,
    )
    from traffik.decision import Decision
    from traffik.error_handlers import CircuitBreaker, CircuitState, ThrottleExceptionInfo
    from traffik.exceptions import BackendConnectionError as BackendConnectionError
    from traffik.exceptions import LockAcquisitionError as LockAcquisitionError
    from traffik.headers import DEFAULT_HEADERS_ALWAYS, DEFAULT_HEADERS_THROTTLED, Header, Headers
    from traffik.identity import (
        ProxyHeaders,
        default_identifier,
        get_remote_address,
        remote_address,
    )
    from traffik.middleware import MiddlewareThrottle, ThrottleMiddleware
    from traffik.rates import Rate
    from traffik.registry import ThrottleRegistry
    from traffik.responses import connection_throttled, websocket_throttled
    from traffik.rules import Bypass, Rule, bypass_if, throttle_if
    from traffik.throttles import (
        HTTPThrottle,
        RequestThrottle,
        Throttle,
        WebSocketThrottle,
        get_wait,
        is_throttled,
        throttled,
    )
    from traffik.typing import EXEMPTED, StrategyStat
    from traffik.typing import AsyncLock as AsyncLock
    from traffik.typing import ConnectionIdentifier as ConnectionIdentifier
    from traffik.typing import ConnectionThrottledHandler as ConnectionThrottledHandler
    from traffik.typing import Dependency as Dependency
    from traffik.typing import ExceptionHandler as ExceptionHandler
    from traffik.typing import HTTPConnectionT as HTTPConnectionT
    from traffik.typing import HTTPConnectionTcon as HTTPConnectionTcon
    from traffik.typing import LockConfig as LockConfig
    from traffik.typing import Matchable as Matchable
    from traffik.typing import Network as Network
    from traffik.typing import Stringable as Stringable
    from traffik.typing import ThrottleErrorHandler as ThrottleErrorHandler
    from traffik.typing import TrustedProxy as TrustedProxy
    from traffik.typing import WaitPeriod as WaitPeriod

# Every name is imported on first use, so `import traffik.rates` loads nothing else.
_LAZY = {
    # name: (module, needs Starlette)
    "ANONYMOUS_IDENTIFIER": ("traffik.config", False),
    "get_lock_blocking": ("traffik.config", False),
    "get_lock_blocking_timeout": ("traffik.config", False),
    "get_lock_ttl": ("traffik.config", False),
    "set_lock_blocking": ("traffik.config", False),
    "set_lock_blocking_timeout": ("traffik.config", False),
    "set_lock_ttl": ("traffik.config", False),
    "EXEMPTED": ("traffik.typing", False),
    "StrategyStat": ("traffik.typing", False),
    "Decision": ("traffik.decision", False),
    "InMemoryBackend": ("traffik.backends.inmemory", False),
    "ManualClock": ("traffik.clock", False),
    "Rate": ("traffik.rates", False),
    "ThrottleBackend": ("traffik.backends.base", False),
    "get_throttle_backend": ("traffik.backends.context", False),
    "CircuitBreaker": ("traffik.error_handlers", False),
    "CircuitState": ("traffik.error_handlers", False),
    "ThrottleExceptionInfo": ("traffik.error_handlers", False),
    "DEFAULT_HEADERS_ALWAYS": ("traffik.headers", False),
    "DEFAULT_HEADERS_THROTTLED": ("traffik.headers", False),
    "Header": ("traffik.headers", False),
    "Headers": ("traffik.headers", False),
    "Bypass": ("traffik.rules", False),
    "Rule": ("traffik.rules", False),
    "bypass_if": ("traffik.rules", False),
    "throttle_if": ("traffik.rules", False),
    "ThrottleRegistry": ("traffik.registry", False),
    "get_remote_address": ("traffik.identity", False),
    "default_identifier": ("traffik.identity", False),
    "ProxyHeaders": ("traffik.identity", False),
    "remote_address": ("traffik.identity", False),
    "HTTPThrottle": ("traffik.throttles", True),
    "RequestThrottle": ("traffik.throttles", True),
    "Throttle": ("traffik.throttles", True),
    "WebSocketThrottle": ("traffik.throttles", True),
    "ThrottleMiddleware": ("traffik.middleware", True),
    "MiddlewareThrottle": ("traffik.middleware", True),
    "throttled": ("traffik.throttles", True),
    "is_throttled": ("traffik.throttles", True),
    "get_wait": ("traffik.throttles", True),
    "connection_throttled": ("traffik.responses", True),
    "websocket_throttled": ("traffik.responses", True),
    # traffik 1.2's names, not in `__all__` (see the `TYPE_CHECKING` imports)
    **dict.fromkeys(
        (
            "AsyncLock",
            "ConnectionIdentifier",
            "ConnectionThrottledHandler",
            "Dependency",
            "ExceptionHandler",
            "HTTPConnectionT",
            "HTTPConnectionTcon",
            "LockConfig",
            "Matchable",
            "Network",
            "Stringable",
            "ThrottleErrorHandler",
            "TrustedProxy",
            "WaitPeriod",
        ),
        ("traffik.typing", False),
    ),
    "BackendConnectionError": ("traffik.exceptions", False),
    "LockAcquisitionError": ("traffik.exceptions", False),
    "time": ("traffik._utils", False),
}

_REMOVED = {
    "MultiProcessInMemoryBackend": (
        "MultiProcessInMemoryBackend (traffik 1.2's experimental backend) is not part of "
        "Traffik. For one limit shared by the worker processes of one host, use SQLiteBackend "
        "(standard library only): `from traffik.backends.sqlite import SQLiteBackend; "
        "backend = SQLiteBackend('sqlite:////var/lib/app/traffik.db')` (docs/sqlite.md); "
        "for several hosts, traffik-redis"
    ),
}
"""traffik 1.2's names that Traffik has no equivalent of, each with what to use instead."""

__all__ = [
    "ANONYMOUS_IDENTIFIER",
    "DEFAULT_HEADERS_ALWAYS",
    "DEFAULT_HEADERS_THROTTLED",
    "EXEMPTED",
    "Bypass",
    "CircuitBreaker",
    "CircuitState",
    "Decision",
    "HTTPThrottle",
    "Header",
    "Headers",
    "InMemoryBackend",
    "ManualClock",
    "MiddlewareThrottle",
    "ProxyHeaders",
    "Rate",
    "RequestThrottle",
    "Rule",
    "StrategyStat",
    "Throttle",
    "ThrottleBackend",
    "ThrottleExceptionInfo",
    "ThrottleMiddleware",
    "ThrottleRegistry",
    "WebSocketThrottle",
    "bypass_if",
    "connection_throttled",
    "default_identifier",
    "get_lock_blocking",
    "get_lock_blocking_timeout",
    "get_lock_ttl",
    "get_remote_address",
    "get_throttle_backend",
    "get_wait",
    "is_throttled",
    "remote_address",
    "set_lock_blocking",
    "set_lock_blocking_timeout",
    "set_lock_ttl",
    "throttle_if",
    "throttled",
    "websocket_throttled",
]


def _starlette_missing(what: str) -> ImportError:
    """The error for `what` (a name or module that needs Starlette) when Starlette is missing."""
    return ImportError(
        f"{what} needs Starlette, which is not installed; install it with "
        '`pip install "traffik-core[starlette]"` (or `pip install traffik-fastapi` for FastAPI)'
    )


def __getattr__(name: str) -> Any:
    spec = _LAZY.get(name)
    if spec is None:
        if name in _REMOVED:
            raise ImportError(_REMOVED[name], name="traffik")
        raise AttributeError(f"module 'traffik' has no attribute {name!r}")
    module_name, needs_starlette = spec
    if needs_starlette:
        try:
            importlib.import_module("starlette")
        except ImportError as exc:
            raise _starlette_missing(f"traffik.{name}") from exc
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value
