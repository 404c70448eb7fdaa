"""What a throttled connection gets: a 429, a JSON message on an open WebSocket, or the handler's Response.

A `handle_throttled` handler may raise (a 429 `ConnectionThrottled`, any `HTTPException`),
send something itself (a WebSocket message), or return a Starlette `Response`: that response
is then the answer, wherever the throttle runs (a FastAPI dependency, a decorator, the
middleware). `answer_with` sends it by raising `ThrottledResponse`, which the throttle's app
answers with the response (the handler is added to the app's exception handlers the first
time); before accept, a WebSocket handshake is denied with it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from traffik import _starlette_missing

try:
    from starlette.requests import HTTPConnection
    from starlette.responses import Response
    from starlette.websockets import WebSocket, WebSocketState
except ImportError as exc:
    raise _starlette_missing("traffik.responses") from exc

from traffik.config import THROTTLED_STATE_KEY
from traffik.decision import whole_seconds
from traffik.exceptions import ConnectionThrottled

__all__ = [
    "THROTTLED_STATE_KEY",
    "ThrottledResponse",
    "answer_with",
    "connection_throttled",
    "get_wait",
    "is_throttled",
    "retry_after_seconds",
    "websocket_throttled",
]

logger = logging.getLogger("traffik")


def get_wait(connection: HTTPConnection) -> float:
    """The wait (ms) the last throttle gave this connection; 0.0 when allowed or not throttled."""
    state = connection.scope.get("state")
    return float(state.get(THROTTLED_STATE_KEY, 0.0)) if state else 0.0


def is_throttled(connection: HTTPConnection) -> bool:
    return get_wait(connection) != 0.0


def retry_after_seconds(wait_ms: float) -> int:
    """Whole seconds for `Retry-After`: rounded up, at least 1 (and bounded: `whole_seconds`)."""
    return whole_seconds(wait_ms, 1)


async def connection_throttled(
    connection: Any, wait_ms: float, throttle: Any, context: Mapping[str, Any]
) -> None:
    """Raise `ConnectionThrottled`: FastAPI and Starlette answer 429 with `Retry-After`.

    Context keys `detail`, `status_code` and `headers` customise the response; `rate` (set
    by the throttle) is the rate that refused, kept on the exception as `.rate`.
    """
    seconds = retry_after_seconds(wait_ms)
    raise ConnectionThrottled.of(
        context.get("status_code", 429),
        context.get("detail", f"Too many requests. Retry in {seconds} seconds."),
        context.get("headers"),
        seconds,
        context.get("rate"),
    )


async def websocket_throttled(
    connection: Any, wait_ms: float, throttle: Any, context: Mapping[str, Any]
) -> None:
    """On an accepted socket, send `{"type": "rate_limit", "error": "Too many messages", "retry_after": N}`
    and keep it open; before accept, reject the handshake like an HTTP request.

    Context key `extras` adds fields to the message (the three base fields win).
    """
    if (
        not isinstance(connection, WebSocket)
        or connection.application_state != WebSocketState.CONNECTED
    ):
        await connection_throttled(connection, wait_ms, throttle, context)
        return
    message = {**context.get("extras", {}), "type": "rate_limit", "error": "Too many messages"}
    message["retry_after"] = retry_after_seconds(wait_ms)
    try:
        await connection.send_json(message)
    except RuntimeError as exc:  # the socket closed meanwhile
        logger.info("could not send the rate_limit message: %s", exc)


class ThrottledResponse(Exception):
    """Carries the `Response` a `handle_throttled` handler returned to the app, which sends it."""

    def __init__(self, response: Response) -> None:
        super().__init__(response)
        self.response = response


async def _send_the_response(connection: Any, exc: ThrottledResponse) -> Response:
    return exc.response


def answer_with(connection: Any, response: Response) -> None:
    """Make `response` the answer to `connection`: raise `ThrottledResponse`, after adding its
    handler to the app's exception handlers (those `ExceptionMiddleware` puts in the scope).
    An accepted WebSocket can take no response: that is logged, and the socket left open."""
    if (
        isinstance(connection, WebSocket)
        and connection.application_state == WebSocketState.CONNECTED
    ):
        logger.warning(
            "handle_throttled returned a Response for an accepted WebSocket, which can no "
            "longer take one; send a message or close the socket instead"
        )
        return
    handlers = connection.scope.get("starlette.exception_handlers")
    if handlers:
        handlers[0].setdefault(ThrottledResponse, _send_the_response)
    raise ThrottledResponse(response)
