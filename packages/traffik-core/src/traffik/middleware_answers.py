"""How `ThrottleMiddleware` answers a refused connection: the throttle's response, the app's handler, or a 429.

Mixed into `ThrottleMiddleware`. A refusal is answered with the Response its throttle's
handler returned, else by the app's exception handler for the exception (or
`exception_handler_getter`'s), else as Starlette answers an `HTTPException`; a WebSocket
handshake the server cannot deny with a response is closed with code 1008, and an HTTP
refusal gets the headers each `CORSMiddleware` the middleware wraps would have added.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, Callable, Optional

from traffik import _starlette_missing

try:
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException
    from starlette.middleware.cors import CORSMiddleware
    from starlette.requests import HTTPConnection
    from starlette.responses import PlainTextResponse, Response
    from starlette.types import ASGIApp, Receive, Scope, Send
except ImportError as exc:
    raise _starlette_missing("traffik.middleware_answers") from exc

from traffik.decorators import is_async_callable
from traffik.responses import ThrottledResponse

if TYPE_CHECKING:
    from traffik.middleware import ExceptionHandlerGetter

__all__ = ["MiddlewareAnswers"]


def _default_answer(exc: HTTPException) -> Response:
    """What Starlette's own `HTTPException` handler answers, for an app that registered none
    (a FastAPI app registers its JSON one): the same 429 a throttle in a route gets."""
    if exc.status_code in (204, 304):
        return Response(status_code=exc.status_code, headers=exc.headers)
    return PlainTextResponse(exc.detail, status_code=exc.status_code, headers=exc.headers)


class MiddlewareAnswers:
    """Answering refused connections, for `ThrottleMiddleware`."""

    app: ASGIApp
    exception_handler_getter: Optional[ExceptionHandlerGetter]
    _cors: Optional[tuple[CORSMiddleware, ...]]

    def _cors_inside(self) -> tuple[CORSMiddleware, ...]:
        """The `CORSMiddleware`s this middleware wraps, outermost first, found once by
        following each wrapped middleware's `app` (Starlette builds the stack once)."""
        found = self._cors
        if found is None:
            layers = []
            inner: Any = self.app
            for _ in range(64):  # (a bound: a middleware's `app` could lead back)
                if isinstance(inner, CORSMiddleware):
                    layers.append(inner)
                inner = getattr(inner, "app", None)
                if inner is None:
                    break
            self._cors = found = tuple(layers)
        return found

    def _handler_for(self, exc: Exception, scope: Scope) -> Optional[Callable[..., Any]]:
        if self.exception_handler_getter is not None:
            handler = self.exception_handler_getter(exc)
            if handler is not None:
                return handler
        handlers = getattr(scope.get("app"), "exception_handlers", None)
        if not handlers:
            return None
        # 500 and `Exception` belong to ServerErrorMiddleware, which runs them on re-raise.
        if (
            isinstance(exc, HTTPException)
            and exc.status_code != 500
            and exc.status_code in handlers
        ):
            return handlers[exc.status_code]
        for cls in type(exc).__mro__:
            if cls is Exception:
                break
            if cls in handlers:
                return handlers[cls]
        return None

    async def _reject(
        self, exc: Exception, connection: HTTPConnection, scope: Scope, receive: Receive, send: Send
    ) -> None:
        handler = self._handler_for(exc, scope)
        response: Optional[Response]
        if isinstance(exc, ThrottledResponse):
            response = exc.response
        elif handler is not None:
            if is_async_callable(handler):
                response = await handler(connection, exc)
            else:
                response = await run_in_threadpool(handler, connection, exc)
        elif isinstance(exc, HTTPException):
            response = _default_answer(exc)
        else:
            raise exc
        if response is None:
            if scope["type"] == "http":  # (no answer: the server's 500, as traffik 1.2 did)
                raise exc
            return  # (a WebSocket handler may close the socket itself)
        extensions = scope.get("extensions") or {}
        if scope["type"] == "websocket" and "websocket.http.response" not in extensions:
            reason = str(getattr(exc, "detail", "")).encode()[:123].decode(errors="ignore")
            await send({"type": "websocket.close", "code": 1008, "reason": reason})
            return
        answer: Any = response
        if scope["type"] == "http":
            # A refusal never reaches a `CORSMiddleware` inside this one: each is run around
            # it (a copy whose app is the refusal), so it gets what that layer would add to
            # the same request allowed, in whichever Starlette (a browser reports a 429
            # without those headers as a CORS error). A preflight never gets here: it does
            # not count while a `CORSMiddleware` inside answers it.
            for layer in reversed(self._cors_inside()):  # (the innermost runs first)
                around = copy.copy(layer)
                around.app = answer
                answer = around
        await answer(scope, receive, send)
