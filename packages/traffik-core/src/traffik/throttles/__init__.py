"""`HTTPThrottle` and `WebSocketThrottle`: a rate limit applied to a connection, in one backend step.

The throttles' public home, at traffik 1.2's import path: `Throttle` (`_throttle`) is what
every throttle shares, its `hit` among it; `HTTPThrottle` (`_http`) and `WebSocketThrottle`
(`_websocket`) each limit one kind of connection. The names traffik 1.2 imports from here
(`throttled`, `websocket_throttled`, `get_wait`, `is_throttled`, `ExceptionInfo`, the
strategy protocols, `MiddlewareThrottle`) are found here too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from traffik import _starlette_missing

try:  # (every throttle module needs it: say what to install before one of them fails)
    import starlette  # noqa: F401
except ImportError as exc:
    raise _starlette_missing("traffik.throttles") from exc

from traffik.config import THROTTLED_STATE_KEY
from traffik.decorators import starlette_throttled as throttled
from traffik.on_error import ExceptionInfo as ExceptionInfo  # (traffik 1.2's alias)
from traffik.on_error import ThrottleExceptionInfo
from traffik.responses import get_wait, is_throttled, websocket_throttled
from traffik.throttles._http import HTTPThrottle, RequestThrottle
from traffik.throttles._throttle import CostSetting as CostSetting
from traffik.throttles._throttle import HeadersSetting as HeadersSetting
from traffik.throttles._throttle import OnErrorSetting as OnErrorSetting
from traffik.throttles._throttle import RateSetting as RateSetting
from traffik.throttles._throttle import Throttle
from traffik.throttles._websocket import WebSocketThrottle
from traffik.typing import (
    FullThrottleStrategy,
    SimpleThrottleStrategy,
    ThrottleStrategy,
)

if TYPE_CHECKING:
    from traffik.middleware import MiddlewareThrottle as MiddlewareThrottle  # (`__getattr__`)

__all__ = [
    "THROTTLED_STATE_KEY",
    "FullThrottleStrategy",
    "HTTPThrottle",
    "RequestThrottle",
    "SimpleThrottleStrategy",
    "Throttle",
    "ThrottleExceptionInfo",
    "ThrottleStrategy",
    "WebSocketThrottle",
    "get_wait",
    "is_throttled",
    "throttled",
    "websocket_throttled",
]


def __getattr__(name: str) -> Any:
    """`MiddlewareThrottle`, where traffik 1.2's docs look for it (it lives in `traffik.middleware`)."""
    if name == "MiddlewareThrottle":
        from traffik.middleware import MiddlewareThrottle

        return MiddlewareThrottle
    raise AttributeError(f"module 'traffik.throttles' has no attribute {name!r}")
