"""`throttle.__signature__`: what FastAPI injects into `Depends(throttle)`, read when a route is defined."""

from __future__ import annotations

import inspect
from typing import Any, Optional

from starlette.requests import Request

from traffik.exceptions import ConfigurationError

__all__ = ["DependencySignature"]


class DependencySignature:
    """The signature of a throttle as a FastAPI dependency (`throttle._signature`: the
    connection, and for HTTP the response to write headers on), which FastAPI reads once, as
    a route is defined. An `HTTPThrottle` with `charge_when` has none: a plain dependency
    returns before the endpoint runs and never sees its outcome, so every request would
    count; defining such a route raises, naming the dependency that sees the outcome. The
    class itself has none: `inspect` reads its `__init__` there."""

    def __get__(self, throttle: Any, owner: Optional[type] = None) -> Optional[inspect.Signature]:
        if throttle is None:
            return None
        if throttle.charge_when is not None and issubclass(throttle.connection_type, Request):
            raise ConfigurationError(
                f"{throttle!r} has charge_when, which Depends(throttle) cannot apply: a plain "
                "dependency never sees the outcome, so every request would count; use "
                "Depends(throttle.charge_by_outcome), traffik.fastapi.throttled(throttle), or "
                "ThrottleMiddleware"
            )
        signature: inspect.Signature = throttle._signature
        return signature
