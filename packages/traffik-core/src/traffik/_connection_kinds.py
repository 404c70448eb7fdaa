"""A throttle given a connection of the other kind: the one check, and the one error.

An `HTTPThrottle` limits HTTP requests and a `WebSocketThrottle` WebSockets: each answers a
refusal its own way (a 429, a `rate_limit` message on the open socket) and keys its clients
its own way, so one given the other kind of connection must not count it. Every way that can
happen (a hit, throttles decided as one, a quota context, the decorators) says so in these
words, naming the throttles, the connection's kind and route, and the throttle to use.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from traffik.buckets import NO_ROUTE, route_template
from traffik.exceptions import ConfigurationError

if TYPE_CHECKING:
    from traffik.throttles import Throttle

__all__ = ["check_kind", "other_kind"]

logger = logging.getLogger("traffik")


def other_kind(throttles: Iterable[Throttle], connection: Any) -> ConfigurationError:
    """The error, logged, of `throttles` applied to `connection`, of the kind they refuse
    (`Throttle.refused_scopes`); `connection` may be any connection of its route."""
    scope = getattr(connection, "scope", None) or {}
    if scope.get("type") == "websocket":
        kind, instead, method = "WebSocket", "a WebSocketThrottle", ""
    else:
        kind, instead, method = "HTTP", "an HTTPThrottle", f"{scope.get('method', '?')} "
    template = route_template(scope)
    if template == NO_ROUTE:  # (no router has routed it: its path)
        place = f"connection to {scope.get('path', '?')}"
    else:
        place = f"route {method}{template}"
    named = ", ".join(map(repr, throttles))
    error = ConfigurationError(f"{named} is applied to the {kind} {place}: use {instead} there")
    logger.error("%s", error)
    return error


def check_kind(throttles: Iterable[Throttle], connection: Any) -> None:
    """Raise `other_kind`'s error, naming them, when throttles of `throttles` refuse
    `connection`'s kind.

    Raises:
        ConfigurationError: When one does.
    """
    kind = connection.scope.get("type")
    refusing = [throttle for throttle in throttles if kind in throttle.refused_scopes]
    if refusing:
        raise other_kind(refusing, connection)
