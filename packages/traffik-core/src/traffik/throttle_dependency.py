"""A throttle as a FastAPI dependency: what FastAPI injects (`__signature__`), and the error of a hit given no connection.

Mixed into `Throttle` (`ThrottleDependency`). FastAPI reads `throttle.__signature__` once, as
a route is defined; a throttle on a route of the other kind is given no connection, and its
`hit` says which throttle to use there.
"""

from __future__ import annotations

import inspect
import logging
from typing import TYPE_CHECKING, Any, ClassVar, Optional, cast

from starlette.requests import Request
from starlette.websockets import WebSocket

from traffik._connection_kinds import other_kind
from traffik.exceptions import ConfigurationError

if TYPE_CHECKING:
    from traffik.throttles import Throttle

__all__ = ["DependencySignature", "ThrottleDependency"]

logger = logging.getLogger("traffik")
_POSITIONAL = inspect.Parameter.POSITIONAL_OR_KEYWORD


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


class ThrottleDependency:
    """`Depends(throttle)`'s signature, and the error of a hit given no connection, for
    `Throttle`."""

    connection_type: ClassVar[type[Any]]
    __signature__ = DependencySignature()
    """What FastAPI injects into `Depends(throttle)`."""

    def _no_connection(self, given: Any = None) -> ConfigurationError:
        """The error of a hit given no connection, logged: FastAPI gives none to a throttle
        on a route of the other kind (a `WebSocketThrottle` on an HTTP route, an
        `HTTPThrottle` on a WebSocket route); a call may give something else (an address),
        or a connection of the other kind (`other_kind`'s error)."""
        kind = self.connection_type
        if getattr(given, "scope", None) is not None:
            return other_kind((cast("Throttle", self),), given)
        if given is not None:
            error = ConfigurationError(
                f"{self!r} was given {given!r}, not a connection: call it with the request or "
                "websocket it limits (`await throttle.hit(request)`); to read or forget a "
                "client's bucket by its identifier, use `throttle.stat(client, path=...)` or "
                "`throttle.reset(client, path=...)`"
            )
            logger.error("%s", error)
            return error
        if issubclass(kind, WebSocket):
            where = "an HTTP route (FastAPI gave it no WebSocket): use an HTTPThrottle there"
        elif issubclass(kind, Request):
            where = (
                "a WebSocket route (FastAPI gave it no Request): use a WebSocketThrottle there. "
                "The dependencies of an app or router (FastAPI(dependencies=...)) run on its "
                "WebSocket routes too: give an HTTP throttle to the routers of the HTTP routes "
                "(APIRouter(dependencies=...)), or to ThrottleMiddleware, which applies it to "
                "HTTP requests only"
            )
        else:
            where = "no route FastAPI gives a connection to"
        error = ConfigurationError(
            f"{self!r} got no connection: as a dependency, it is one of {where}; called "
            "directly, it takes the connection: `await throttle.hit(connection)`"
        )
        logger.error("%s", error)
        return error

    def _dependency_parameters(self) -> list[inspect.Parameter]:
        # A default, so that FastAPI, which gives no connection of the other kind, calls
        # `hit` (its error, `_no_connection`) instead of failing with "missing 1 required
        # argument".
        return [
            inspect.Parameter(
                "connection", _POSITIONAL, default=None, annotation=self.connection_type
            )
        ]
