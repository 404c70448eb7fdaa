"""`MiddlewareThrottle`: a throttle as `ThrottleMiddleware` applies it, to the connections a
rule (path pattern, methods, predicate, exemptions) matches, counted under its path pattern."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any, Callable, Optional, Union

from traffik import _starlette_missing

try:
    from starlette.requests import HTTPConnection, Request
    from starlette.responses import Response
    from starlette.websockets import WebSocket
except ImportError as exc:
    raise _starlette_missing("traffik.middleware_throttle") from exc

from traffik.backends.base import ThrottleBackend
from traffik.exceptions import ConfigurationError
from traffik.rules import Bypass, PathPattern, Rule, applies, glob, pattern_text, sort_rules
from traffik.throttle_settings import check_context, check_flag
from traffik.throttles import Throttle
from traffik.typing import StrategyStat

__all__ = ["SORT_MODES", "MiddlewareThrottle", "bypasses", "glob", "sort_throttles"]

Exemption = Union[PathPattern, Rule, Bypass]
SORT_MODES = ("cheap_first", "cheap_last")
"""The named orders of `ThrottleMiddleware(sort=...)`: cheapest first, or cheapest last."""


def bypasses(exempt: Iterable[Exemption], owner: str) -> tuple[Bypass, ...]:
    """Exemptions as `Bypass`es: a path, or the criteria of a `Rule` or `Bypass`."""
    if isinstance(exempt, (str, re.Pattern, Rule, Bypass)):
        exempt = [exempt]
    found = []
    for item in exempt:
        if isinstance(item, (Rule, Bypass)):
            found.append(Bypass(path=item.path, methods=item.methods, predicate=item.predicate))
        elif isinstance(item, (str, re.Pattern)):
            found.append(Bypass(path=item))
        else:
            raise ConfigurationError(
                f"{owner}: exempt item {item!r} is neither a path pattern nor a Rule"
            )
    return tuple(found)


class _PatternRoute:
    """Stands for the route in a middleware throttle's key: its path pattern is the template."""

    __slots__ = ("path",)

    def __init__(self, path: Optional[PathPattern]) -> None:
        self.path = "/**" if path is None else pattern_text(path)

    def __repr__(self) -> str:
        return f"<pattern {self.path!r}>"


class MiddlewareThrottle:
    """A throttle applied by `ThrottleMiddleware` to the connections its rule matches.

    `path` is a string (a regular expression matched from the start of the path, as in
    traffik 1.2: `"/api/"` guards `/api/data`), `glob("/api/**")`, or a compiled pattern (see
    `traffik.rules`); `methods` one or several HTTP methods (ignored for WebSockets);
    `predicate` `(connection)` or `(connection, context)`, sync or async. `exempt` lists
    paths, `Rule`s or `Bypass`es whose connections this throttle skips even when its own rule
    matches. `cost`, `context` and `skip_handler` override the throttle's own; `context` wins
    over the middleware's, which wins over the throttle's. `shadow` (None: the throttle's
    own) makes this rule only watch: see `traffik.events`. A predicate that raises is logged
    and counted as matching (the throttle applies); an exemption whose predicate raises does
    not exempt. `await middleware_throttle(connection)` is `hit`, so it also serves as a
    FastAPI dependency, with the throttle's signature.

    The middleware runs before routing, so there is no route template to count per: in its
    place a per-route throttle counts per client, method and this `path` pattern
    (`/api/items/1` and `/api/items/2` share one budget under `path="/api/**"`, so a client
    cannot escape the limit by varying the path; with no `path`, one budget per method).

    Args:
        throttle: The throttle to apply (an `HTTPThrottle` or a `WebSocketThrottle`).
        path: The paths it applies to: a regular expression string matched from the start
            of the path, a `glob(...)` or a compiled pattern; None for every path.
        methods: One HTTP method or several (ignored for WebSockets); None for every
            method.
        predicate: `(connection)` or `(connection, context) -> bool`, sync or async, that
            must also hold; None for none.
        cost: The units each hit spends (a whole number >= 0); None for the throttle's.
        context: Context for the throttle, winning over the middleware's and the
            throttle's own.
        skip_handler: Whether a throttled connection reaches the app instead of the
            throttled handler; None for the throttle's setting.
        exempt: Paths, `Rule`s or `Bypass`es whose connections this throttle skips.
        shadow: Whether this rule only watches (decides and counts, never refuses); None
            for the throttle's own.

    Raises:
        TypeError: When `throttle` is not a throttle.
        ConfigurationError: When `cost` is not a whole number >= 0 or is more than the
            throttle's fixed rates can ever admit with its strategy (as the throttle's own
            `cost` is checked), `context` is not a mapping, `skip_handler` or `shadow` is not True, False or None, or the rule or
            an exemption is invalid.
    """

    def __init__(
        self,
        throttle: Throttle,
        path: Optional[PathPattern] = None,
        methods: Union[str, Iterable[str], None] = None,
        predicate: Optional[Callable[..., Any]] = None,
        cost: Optional[int] = None,
        context: Optional[Mapping[str, Any]] = None,
        skip_handler: Optional[bool] = None,
        *,
        exempt: Iterable[Exemption] = (),
        shadow: Optional[bool] = None,
    ) -> None:
        if not isinstance(throttle, Throttle):
            raise TypeError(
                f"MiddlewareThrottle wraps an HTTPThrottle or WebSocketThrottle, not {throttle!r}"
            )
        owner = f"MiddlewareThrottle({throttle.uid!r})"
        if cost is not None and (isinstance(cost, bool) or not isinstance(cost, int) or cost < 0):
            raise ConfigurationError(
                f"{owner}: cost={cost!r} must be a whole number >= 0, or None for the throttle's"
            )
        if cost is not None and throttle.static_rate is not None:
            throttle.check_rates(throttle.rates, cost, owner)  # (a cost no hit could pass)
        self.throttle = throttle
        self.rule = Rule(path=path, methods=methods, predicate=predicate)
        self.exempt = bypasses(exempt, owner)
        self._rules = sort_rules((*self.exempt, self.rule))
        self.cost = cost
        self.context: dict[str, Any] = check_context(context, owner)
        self.skip_handler = (
            None if skip_handler is None else check_flag(skip_handler, "skip_handler", owner)
        )
        self.shadow = None if shadow is None else check_flag(shadow, "shadow", owner)
        self.route = _PatternRoute(path)
        # Whether `applies` must do more than match the rule's method and path.
        self.checks_more = bool(self.exempt) or predicate is not None
        # The rule's method and path as `ThrottleMiddleware` matches them without a call
        # (which costs about as much as the match): the pattern's `match` when the rule
        # checks the path alone, and whether it matches every connection.
        pattern, only_path = self.rule.pattern, self.rule.methods is None
        self.path_match = pattern.match if only_path and pattern is not None else None
        self.matches_any = only_path and pattern is None
        self.__signature__ = throttle._signature

    def __repr__(self) -> str:
        return f"MiddlewareThrottle({self.throttle!r}, rule={self.rule!r})"

    @property
    def connection_type(self) -> type[HTTPConnection]:
        """The connection type the throttle guards (`Request` or `WebSocket`)."""
        return self.throttle.connection_type

    async def applies(self, connection: HTTPConnection, context: Mapping[str, Any]) -> bool:
        """Whether this throttle counts `connection`: its rule matches and no exemption does.

        Args:
            connection: The request or websocket.
            context: The context passed to predicates.

        Returns:
            True when the throttle applies to `connection`.
        """
        if not self.rule.matches_scope(connection.scope):
            return False
        return await applies(self._rules, connection, context)

    def sort_key(self, mode: str) -> tuple[float, bool]:
        """The order `ThrottleMiddleware(sort=mode)` runs this in: by cost (a cost callable
        last, as the dearest), then those without a predicate first.

        Args:
            mode: `"cheap_first"` or `"cheap_last"` (the cost order reversed).

        Returns:
            The sort key: the cost (negated for `"cheap_last"`), then whether there is a
            predicate.
        """
        cost: float = self.cost if self.cost is not None else self.throttle.cost
        if self.cost is None and self.throttle.dynamic_cost:
            cost = math.inf
        return (cost if mode == "cheap_first" else -cost, self.rule.predicate is not None)

    async def hit(
        self,
        connection: Any = None,
        *,
        cost: Optional[int] = None,
        context: Optional[Mapping[str, Any]] = None,
        skip_handler: Optional[bool] = None,
        response: Optional[Response] = None,
    ) -> Any:
        """Hit the throttle when `applies`; otherwise return `connection` untouched.

        Args:
            connection: The request or websocket.
            cost: The units this hit spends; None for this rule's cost, else the throttle's.
            context: Context for the hit; this rule's context wins over it.
            skip_handler: Whether a throttled connection is let through instead of going to
                the throttled handler; None for this rule's setting.
            response: The response the rate-limit headers are written to, if any.

        Returns:
            What the throttle's `hit` returns, or `connection` when the throttle does not
            apply.

        Raises:
            Exception: Whatever the throttle's `hit` raises (its throttled handler's
                exception, say).
        """
        if getattr(connection, "scope", None) is None:  # (None: FastAPI's, on a route of the
            raise self.throttle._no_connection(connection)  # other kind; or not a connection)
        merged = {**(context or {}), **self.context}
        if not await self.applies(connection, merged):
            return connection
        return await self.throttle.hit(
            connection,
            cost=cost if cost is not None else self.cost,
            context=merged,
            skip_handler=skip_handler if skip_handler is not None else self.skip_handler,
            response=response,
            shadow=self.shadow,
        )

    __call__ = hit

    # -- reading and forgetting a client's bucket ----------------------------------------

    async def stat(
        self,
        client: Any,
        context: Optional[Mapping[str, Any]] = None,
        *,
        path: Optional[str] = None,
        method: Optional[str] = None,
        backend: Optional[ThrottleBackend] = None,
    ) -> Optional[StrategyStat]:
        """A client's state under this rule, as `Throttle.stat` reads it: the bucket the
        middleware counts it in (its path pattern stands for the route).

        Args:
            client: A connection of the app (a `Request` or `WebSocket`: its identity and
                method), or the identifier the throttle gives the client.
            context: The hit's context, if it had one; this rule's context wins over it.
            path: A path this rule guards (the pattern counts for all of them), after the
                mount's prefix when the middleware runs in a mounted app
                (`"/v1/items/1"`, whose bucket is the mount's); None for the pattern itself
                outside any mount.
            method: The HTTP method counted (default: the connection's, else GET).
            backend: The middleware's `backend=` when the throttle has none; None for the
                throttle's.

        Returns:
            The client's state, or None (exempted, or a strategy with no `get_stat`).

        Raises:
            ConfigurationError: When `path` is not one this rule guards, or the pattern
                cannot be named (a regular expression not starting with `/`) for an
                identifier.
        """
        client, context, path, method = self._bucket_of(client, context, path, method)
        return await self.throttle.stat(client, context, path=path, method=method, backend=backend)

    async def reset(
        self,
        client: Any,
        context: Optional[Mapping[str, Any]] = None,
        *,
        path: Optional[str] = None,
        method: Optional[str] = None,
        backend: Optional[ThrottleBackend] = None,
    ) -> bool:
        """Forget what this rule counted for one client, as `Throttle.reset` does, in the
        bucket the middleware counts it in; returns whether there was state to forget.
        Arguments as for `stat`.

        Raises:
            ConfigurationError: As `stat`, and when the throttle's strategy does not say
                where it keeps state.
        """
        client, context, path, method = self._bucket_of(client, context, path, method)
        return await self.throttle.reset(client, context, path=path, method=method, backend=backend)

    def _bucket_of(
        self,
        client: Any,
        context: Optional[Mapping[str, Any]],
        path: Optional[str],
        method: Optional[str],
    ) -> tuple[Any, Optional[Mapping[str, Any]], Optional[str], Optional[str]]:
        """What names a client's bucket to the throttle (`Throttle._bucket`) under this rule:
        this rule's context over `context`, and a connection shown as the middleware shows
        it (its pattern as the route) or, for an identifier, the pattern as the path."""
        if self.context:
            context = {**context, **self.context} if context else self.context
        mount = "" if path is None else self._mount_of(path)
        if hasattr(client, "scope"):
            scope = client.scope
            if method is not None and scope.get("type") == "http":
                scope = {**scope, "method": method.upper()}
            view = {**scope, "route": self.route}
            if view.get("type") == "websocket":
                return WebSocket(view, client.receive, client.send), context, None, None
            return Request(view), context, None, None
        if self.throttle.per_route:
            path = mount + self._named_pattern()
        return client, context, path, method

    def _mount_of(self, path: str) -> str:
        """The mount before `path` (`""` when the rule guards `path` itself): a middleware
        in a mounted app counts under the mount's prefix and its pattern (`/v1/items/**`),
        so `path="/v1/items/1"` names that bucket, and so does the pattern after the prefix
        (`"/v1/items/**"`; `"/v1/**"` for a rule that guards every path, where no other path
        can tell the mount from the app's own paths)."""
        pattern = self.route.path
        if pattern.startswith("/") and path != pattern and path.endswith(pattern):
            return path[: -len(pattern)]
        if self._guards(path):
            return ""
        for index in range(1, len(path)):
            if path[index] == "/" and self._guards(path[index:]):
                return path[:index]
        raise ConfigurationError(
            f"{self!r}: path={path!r} is a path it does not guard; pass one its pattern "
            f"{self.route.path!r} matches (after the mount's prefix, in a mounted app: "
            f"'/v1' + a path it guards), or no path"
        )

    def _guards(self, path: str) -> bool:
        guarded = self.rule.pattern
        return path == self.route.path or guarded is None or guarded.match(path) is not None

    def _named_pattern(self) -> str:
        pattern = self.route.path
        if not pattern.startswith("/"):
            raise ConfigurationError(
                f"{self!r}: its pattern {pattern!r} does not start with '/', so it cannot be "
                "named by hand; pass a connection of the app instead of an identifier"
            )
        return pattern


def sort_throttles(
    throttles: list[Union[MiddlewareThrottle, Throttle]], sort: Any
) -> list[Union[MiddlewareThrottle, Throttle]]:
    """`throttles` in the order `ThrottleMiddleware(sort=sort)` runs them: as given (None or
    False), by a key function, or by `MiddlewareThrottle.sort_key` for a name in
    `SORT_MODES` (a plain throttle sorted as `MiddlewareThrottle(throttle)`)."""
    if sort is None or sort is False:
        return throttles
    if callable(sort):
        return sorted(throttles, key=sort)
    if sort not in SORT_MODES:
        raise ConfigurationError(
            f"ThrottleMiddleware: sort={sort!r} is not valid; use 'cheap_first', 'cheap_last', "
            "None (the given order) or a key function"
        )
    wrapped = [t if isinstance(t, MiddlewareThrottle) else MiddlewareThrottle(t) for t in throttles]
    order = sorted(range(len(throttles)), key=lambda i: wrapped[i].sort_key(sort))
    return [throttles[i] for i in order]
