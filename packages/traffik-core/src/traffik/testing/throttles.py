"""Throttles under test: switch them off, change their rate, or forget one client's budget."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

from traffik.exceptions import ConfigurationError

if TYPE_CHECKING:
    from traffik.backends.base import ThrottleBackend
    from traffik.middleware import MiddlewareThrottle
    from traffik.rates import RatesLike
    from traffik.throttles import Throttle

__all__ = ["override_rate", "reset_client", "throttle_disabled"]


@contextlib.contextmanager
def throttle_disabled(
    *throttles: Union[Throttle, MiddlewareThrottle, Iterable[Any]],
) -> Iterator[None]:
    """Let every connection through `throttles` inside the block, then restore each one.

    Takes throttles (a `MiddlewareThrottle` stands for the throttle it applies) as arguments
    or in lists. A plain `with` block, so it serves sync tests (`TestClient`) and async ones
    alike. A throttle that was already disabled stays disabled afterwards.
    """
    chosen = _throttles(throttles)
    previous = [(throttle, throttle.is_disabled) for throttle in chosen]
    for throttle in chosen:
        throttle._disabled = True
    try:
        yield
    finally:
        for throttle, was_disabled in reversed(previous):
            throttle._disabled = was_disabled


def _throttles(given: tuple[Any, ...]) -> list[Throttle]:
    """The throttles `throttle_disabled` was given, lists flattened; refuses anything else."""
    from traffik.middleware import MiddlewareThrottle
    from traffik.throttles import Throttle

    found: list[Throttle] = []
    for item in given:
        if isinstance(item, (list, tuple, set, frozenset)):
            found.extend(_throttles(tuple(item)))
        elif isinstance(item, MiddlewareThrottle):
            found.append(item.throttle)
        elif isinstance(item, Throttle):
            found.append(item)
        else:
            raise ConfigurationError(
                f"throttle_disabled(): {item!r} is not a throttle; pass HTTPThrottle, "
                "WebSocketThrottle or MiddlewareThrottle objects, or lists of them"
            )
    if not found:
        raise ConfigurationError(
            "throttle_disabled() needs the throttles to disable: throttle_disabled(throttle, ...)"
        )
    return found


@contextlib.contextmanager
def override_rate(
    throttle: Throttle, rate: Union[RatesLike, Callable[..., Any]]
) -> Iterator[Throttle]:
    """Give `throttle` another rate (`"1000/min"`, a `Rate`, a list of them, a callable) inside
    the block.

    The original rate comes back afterwards. Counters are not touched: state counted under
    the old rate is read under the new one, as when a deployment changes a limit, and what
    the client still holds carries over in units (docs/concepts/strategies.md, "When the
    rate changes").
    """
    original = throttle.rate
    throttle.update_rate(rate)
    try:
        yield throttle
    finally:
        throttle.update_rate(original)


async def reset_client(
    throttle: Union[Throttle, MiddlewareThrottle],
    client: Any,
    *,
    path: Optional[str] = None,
    method: Optional[str] = None,
    context: Optional[Mapping[str, Any]] = None,
    backend: Optional[ThrottleBackend] = None,
) -> bool:
    """Forget what `throttle` counted for one client, so its next hit starts a full budget.

    `client` is a connection the throttle saw (a `Request` or `WebSocket`), or the identifier
    the throttle gives the client: the peer address by default, `"testclient"` under
    Starlette's `TestClient` and `"127.0.0.1"` under httpx's `ASGITransport`. With an
    identifier, a per-route throttle (the default) also needs the route: `path` as the route
    declares it (`"/items/{item_id}"`) and `method` (`"GET"` unless given; WebSocket routes
    have none). `context` is the hit's context, if it had one; `backend` defaults to the
    throttle's. Other clients and other routes keep their state. Returns whether there was
    any state to forget. This is `throttle.reset(...)`.

    A `MiddlewareThrottle` counts under its path pattern instead of a route: pass it (not
    the throttle it wraps) with a request of the app or an identifier; `path` may name a
    path it guards, and `backend` the middleware's `backend=` when the throttle has none.
    """
    seen = hasattr(client, "scope")
    if seen and (path is not None or method is not None):
        raise ConfigurationError(
            f"reset_client({throttle!r}, <connection>): the connection names its own route; "
            "pass path= and method= only with an identifier"
        )
    from starlette.websockets import WebSocket  # (the kit imports without Starlette)

    from traffik.middleware import MiddlewareThrottle

    # (a `MiddlewareThrottle` names its bucket itself: its path pattern stands for the route)
    if (
        not seen
        and path is None
        and not isinstance(throttle, MiddlewareThrottle)
        and throttle.per_route
    ):
        websocket = issubclass(throttle.connection_type, WebSocket)
        route = (
            "'/ws'); WebSocket routes have no method"
            if websocket
            else ("'/items/{item_id}') and method= if not GET")
        )
        raise ConfigurationError(
            f"reset_client({throttle!r}, {client!r}): the throttle counts per route; with an "
            f"identifier pass path= as the route declares it (e.g. {route}"
        )
    return await throttle.reset(client, context, path=path, method=method, backend=backend)
