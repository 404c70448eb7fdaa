"""What happens to a throttled connection: a 429 for HTTP, a JSON message on an open WebSocket."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

from starlette.websockets import WebSocket, WebSocketState

from traffik.exceptions import ConnectionThrottled

__all__ = ["connection_throttled", "retry_after_seconds", "websocket_throttled"]

logger = logging.getLogger("traffik")


def retry_after_seconds(wait_ms: float) -> int:
    """Whole seconds for `Retry-After`: rounded up, at least 1."""
    return max(1, math.ceil(wait_ms / 1000.0))


async def connection_throttled(
    connection: Any, wait_ms: float, throttle: Any, context: Mapping[str, Any]
) -> None:
    """Raise `ConnectionThrottled`: FastAPI and Starlette answer 429 with `Retry-After`.

    Context keys `detail`, `status_code` and `headers` customise the response.
    """
    seconds = retry_after_seconds(wait_ms)
    raise ConnectionThrottled(
        wait_period=seconds,
        detail=context.get("detail", f"Too many requests. Retry in {seconds} seconds."),
        status_code=context.get("status_code", 429),
        headers=context.get("headers"),
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
