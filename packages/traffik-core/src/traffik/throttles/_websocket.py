"""`WebSocketThrottle`: a `Throttle` of WebSocket connection attempts and messages, answering a refused message on the open socket."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Optional

from starlette.websockets import WebSocket

from traffik import outcomes
from traffik.responses import websocket_throttled
from traffik.throttles._throttle import Throttle

__all__ = ["WebSocketThrottle"]


class WebSocketThrottle(Throttle):
    """A throttle for WebSockets: as a dependency it limits connection attempts; `await
    throttle.hit(websocket)` per message sends a `rate_limit` JSON message when throttled."""

    connection_type = WebSocket
    refused_scopes = frozenset({"http"})
    default_handler = staticmethod(websocket_throttled)
    use_backend_handler = False

    if TYPE_CHECKING:  # (`Throttle.hit`, typed for this kind: it gives the websocket back)

        async def hit(
            self,
            connection: Optional[WebSocket] = None,
            *,
            cost: Optional[int] = None,
            context: Optional[Mapping[str, Any]] = None,
            skip_handler: Optional[bool] = None,
            response: Any = None,
            shadow: Optional[bool] = None,
        ) -> WebSocket: ...

        __call__ = hit

    def _admitted(self, connection: Any, *args: Any) -> None:
        """As `Throttle._admitted`, once `outcomes.follow` has seen the hit: a message's
        charges are kept together, and the first hit of a new message forgets the last's.
        With no charge noted, the units the message's hits took add up (`Throttle._admitted`
        keeps a request's latest hit's)."""
        outcomes.follow(connection, self)
        state = connection.scope["state"]
        earlier = state.pop(self._charged_key, None)  # (this message's earlier hits')
        super()._admitted(connection, *args)
        if earlier:
            state[self._charged_key] = state.get(self._charged_key, 0) + earlier
