"""Traffik: asynchronous, distributed rate limiting for Starlette and FastAPI.

The core (rates, strategies, backends, errors) needs nothing but the standard library.
The HTTP and WebSocket throttles need Starlette (`pip install "traffik-core[starlette]"`,
or `traffik-fastapi`) and are imported on first use.
"""

from __future__ import annotations

__path__ = __import__("pkgutil").extend_path(__path__, __name__)

import importlib  # noqa: E402
from typing import Any  # noqa: E402

from traffik.backends.base import ThrottleBackend  # noqa: E402
from traffik.backends.context import get_throttle_backend  # noqa: E402
from traffik.backends.inmemory import InMemoryBackend  # noqa: E402
from traffik.clock import ManualClock  # noqa: E402
from traffik.decision import Decision  # noqa: E402
from traffik.rates import Rate  # noqa: E402
from traffik.typing import EXEMPTED, StrategyStat  # noqa: E402

__version__ = "2.0.0"

_LAZY = {
    # name: (module, needs Starlette)
    "CircuitBreaker": ("traffik.error_handlers", False),
    "CircuitState": ("traffik.error_handlers", False),
    "HTTPThrottle": ("traffik.throttles", True),
    "RequestThrottle": ("traffik.throttles", True),
    "Throttle": ("traffik.throttles", True),
    "WebSocketThrottle": ("traffik.throttles", True),
    "ThrottleMiddleware": ("traffik.middleware", True),
    "MiddlewareThrottle": ("traffik.middleware", True),
    "throttled": ("traffik.decorators", True),
    "is_throttled": ("traffik.throttles", True),
    "get_wait": ("traffik.throttles", True),
    "connection_throttled": ("traffik.handlers", True),
    "websocket_throttled": ("traffik.handlers", True),
    "get_remote_address": ("traffik.identity", False),
    "default_identifier": ("traffik.identity", False),
    "ProxyHeaders": ("traffik.identity", False),
}

__all__ = sorted(
    [
        "EXEMPTED",
        "Decision",
        "InMemoryBackend",
        "ManualClock",
        "Rate",
        "StrategyStat",
        "ThrottleBackend",
        "get_throttle_backend",
        *_LAZY,
    ]
)


def __getattr__(name: str) -> Any:
    spec = _LAZY.get(name)
    if spec is None:
        raise AttributeError(f"module 'traffik' has no attribute {name!r}")
    module_name, needs_starlette = spec
    if needs_starlette:
        try:
            importlib.import_module("starlette")
        except ImportError as exc:
            raise ImportError(
                f"traffik.{name} needs Starlette, which is not installed; install it with "
                "`pip install \"traffik-core[starlette]\"` (or `pip install traffik-fastapi` for FastAPI)"
            ) from exc
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value
