"""`HTTPThrottle` and `WebSocketThrottle`: a rate limit applied to a connection, in one backend step."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping
from typing import Any, Callable, ClassVar, Optional, Union

from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.websockets import WebSocket

from traffik.backends.base import ThrottleBackend
from traffik.backends.context import resolve_backend
from traffik.bucket_state import BucketState
from traffik.buckets import route_part
from traffik.decision import Decision
from traffik.error_handlers import DecisionFailed, check_on_error, decision_from_wait, recover
from traffik.exceptions import ConfigurationError
from traffik.headers import RateLimitHeaders, check_style
from traffik.identity import default_identifier
from traffik.keyparts import ANONYMOUS_PART, client_part, escape
from traffik.rates import Rate
from traffik.responses import (
    THROTTLED_STATE_KEY,
    answer_with,
    connection_throttled,
    get_wait,
    is_throttled,
    websocket_throttled,
)
from traffik.strategies import DEFAULT_STRATEGY
from traffik.typing import EXEMPTED

__all__ = [
    "THROTTLED_STATE_KEY",
    "HTTPThrottle",
    "RequestThrottle",
    "Throttle",
    "WebSocketThrottle",
    "get_wait",
    "is_throttled",
]


logger = logging.getLogger("traffik")
_POSITIONAL = inspect.Parameter.POSITIONAL_OR_KEYWORD
_KEYWORD = inspect.Parameter.KEYWORD_ONLY


async def _resolve(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


def _check_cost(cost: Any, owner: str) -> int:
    if isinstance(cost, bool) or not isinstance(cost, int):
        raise ConfigurationError(f"{owner}: cost={cost!r} must be a whole number >= 0")
    if cost < 0:
        raise ConfigurationError(f"{owner}: cost={cost!r} is negative; use 0 (free) or more")
    return cost


class Throttle(BucketState):
    """A rate limit on connections of one kind; use `HTTPThrottle` or `WebSocketThrottle`.

    `rate` is a string (`"100/min"`), a `Rate`, or a callable `(connection, context)` returning
    one (sync or async). `backend` is a backend, a URL (`"redis://..."`), or None for the
    backend of the enclosing context or the app's lifespan. Several throttles may share a
    `uid`: they then share counters. By default a client's budget is per route (method and
    path template); `per_route=False` gives one budget across every route the throttle guards.

    `on_error` decides what a failure while deciding does: `"throttle"` (429 for a second),
    `"allow"`, `"raise"`, or an async handler `(connection, exc_info) -> wait_ms | Decision`;
    None uses the backend's own setting. `headers` writes rate-limit headers: `"ietf"`,
    `"legacy"` (`X-RateLimit-*`), `"both"`, or None.
    """

    connection_type: ClassVar[type[Any]] = HTTPConnection
    default_handler: ClassVar[Callable[..., Any]] = staticmethod(connection_throttled)
    use_backend_handler: ClassVar[bool] = True

    def __init__(
        self,
        uid: str,
        rate: Union[str, Rate, Callable[..., Any]],
        identifier: Optional[Callable[[Any], Any]] = None,
        handle_throttled: Optional[Callable[..., Any]] = None,
        strategy: Any = None,
        backend: Union[ThrottleBackend, str, None] = None,
        cost: Union[int, Callable[..., Any]] = 1,
        *,
        dynamic_backend: bool = False,
        on_error: Any = None,
        headers: Union[str, bool, None] = "ietf",
        context: Optional[Mapping[str, Any]] = None,
        per_route: bool = True,
        min_wait_period: Optional[float] = None,
        skip_handler: bool = False,
    ) -> None:
        name = type(self).__name__
        if not isinstance(uid, str) or not uid:
            raise ConfigurationError(f"{name}: uid={uid!r} must be a non-empty string")
        self.uid = uid
        self._uid_part = escape(uid)
        owner = f"{name}({uid!r})"
        self.strategy = DEFAULT_STRATEGY if strategy is None else strategy
        if not callable(self.strategy):
            raise ConfigurationError(f"{owner}: strategy={strategy!r} is not callable")
        self._strategy_decide = getattr(self.strategy, "decide", None)
        self._cost_fn: Optional[Callable[..., Any]] = None
        if callable(cost):
            self.cost, self._cost_fn = 1, cost
        else:
            self.cost = _check_cost(cost, owner)
        self.headers = check_style(headers, owner)
        self.update_rate(rate)
        if dynamic_backend and backend is not None:
            raise ConfigurationError(
                f"{owner}: dynamic_backend=True resolves the backend per hit; do not pass backend="
            )
        if isinstance(backend, str):
            from traffik.backends import from_url

            backend = from_url(backend)
        if backend is not None and not isinstance(backend, ThrottleBackend):
            raise ConfigurationError(
                f"{owner}: backend={backend!r} is not a ThrottleBackend or a backend URL"
            )
        self._backend: Optional[ThrottleBackend] = backend
        self._validate()
        self.dynamic_backend = dynamic_backend
        self.identifier = identifier
        self.handle_throttled = handle_throttled
        self.on_error = check_on_error(on_error, owner)
        self.context: dict[str, Any] = dict(context or {})
        self.per_route = per_route
        if min_wait_period is not None and (
            not isinstance(min_wait_period, (int, float)) or min_wait_period < 0
        ):
            raise ConfigurationError(
                f"{owner}: min_wait_period={min_wait_period!r} must be milliseconds >= 0"
            )
        self.min_wait_period = min_wait_period
        self.skip_handler = skip_handler
        self._disabled = False
        # FastAPI reads this to inject the connection (and, for HTTP, a response to write
        # headers on). Classes rather than postponed annotations, for Python 3.9.
        self.__signature__ = inspect.Signature(
            self._dependency_parameters(), return_annotation=self.connection_type
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uid!r}, rate={str(self.rate)!r})"

    @property
    def rate(self) -> Any:
        return self._rate_fn or self._rate

    @property
    def static_rate(self) -> Optional[Rate]:
        """The rate when it is fixed, None when a callable gives it per connection."""
        return None if self._rate_fn is not None else self._rate

    def update_rate(self, rate: Union[str, Rate, Callable[..., Any]]) -> None:
        """Replace the rate (a string, a `Rate`, or a callable), checked as in the constructor."""
        owner = f"{type(self).__name__}({self.uid!r})"
        rate_fn: Optional[Callable[..., Any]] = None
        if isinstance(rate, (str, Rate)):
            parsed = Rate.parse(rate)
        elif callable(rate):
            parsed, rate_fn = Rate(), rate
        else:
            raise ConfigurationError(
                f"{owner}: rate={rate!r}; use a string like '100/min', a Rate, or a callable"
            )
        capacity = getattr(self.strategy, "capacity", None)
        if (
            capacity is not None
            and rate_fn is None
            and self._cost_fn is None
            and not parsed.unlimited
            and self.cost > capacity(parsed)
        ):
            raise ConfigurationError(
                f"{owner}: cost={self.cost} exceeds what rate {str(parsed)!r} with "
                f"{type(self.strategy).__name__} can ever admit ({capacity(parsed):g}); "
                "raise the rate's limit or lower the cost"
            )
        check_scale = getattr(self.strategy, "check_scale", None)
        if check_scale is not None and rate_fn is None:
            check_scale(parsed)
        self._rate, self._rate_fn = parsed, rate_fn
        self._headers = (
            RateLimitHeaders(self.uid, parsed, self.headers)
            if self.headers is not None and not parsed.unlimited
            else None
        )
        self._validate()

    def _validate(self) -> None:
        """Let a fixed backend refuse a static rate its store cannot hold (`validate`)."""
        backend = getattr(self, "_backend", None)
        if backend is not None and self._rate_fn is None and not self._rate.unlimited:
            backend.validate(self.strategy, self._rate)

    @property
    def backend(self) -> Optional[ThrottleBackend]:
        return self._backend

    @property
    def is_disabled(self) -> bool:
        return self._disabled

    async def disable(self) -> None:
        """Let every connection through until `enable()`; no backend calls meanwhile."""
        self._disabled = True

    async def enable(self) -> None:
        self._disabled = False

    # -- resolution ----------------------------------------------------------------------

    def get_backend(self, connection: Optional[HTTPConnection] = None) -> ThrottleBackend:
        """The backend for `connection`: this throttle's own, else the one bound to the
        connection or its app, else the active context's (`traffik.backends.context`).
        Resolved per connection and never remembered, so one throttle serves many apps."""
        scope = connection.scope if connection is not None else None
        backend = resolve_backend(self._backend, scope, self.dynamic_backend)
        if backend is None:
            raise ConfigurationError(
                f"{self!r} has no backend: pass backend=, use FastAPI(lifespan=backend.lifespan), "
                "or run inside `async with backend:`"
            )
        return backend

    async def _rate_for(self, connection: HTTPConnection, context: Mapping[str, Any]) -> Rate:
        if self._rate_fn is None:
            return self._rate
        return Rate.parse(await _resolve(self._rate_fn(connection, context)))

    async def _cost_for(self, connection: HTTPConnection, context: Mapping[str, Any]) -> int:
        if self._cost_fn is None:
            return self.cost
        return _check_cost(await _resolve(self._cost_fn(connection, context)), repr(self))

    async def identify(self, connection: HTTPConnection, backend: ThrottleBackend) -> Any:
        identifier = self.identifier or backend.identifier
        if identifier is None:
            return await default_identifier(connection)
        return await _resolve(identifier(connection))

    def key_for(
        self,
        connection: Optional[HTTPConnection],
        ident: Any,
        context: Mapping[str, Any],
        route: Optional[str] = None,
    ) -> str:
        """`uid:client:METHOD:/route/{template}` (just `uid:client` without `per_route`), plus
        the context's `scope` when it has one; every part escaped (`traffik.buckets`).
        `route` replaces the connection's own route part (see `route_part`)."""
        key = f"{self._uid_part}:{{{client_part(ident)}}}"
        if self.per_route:
            if route is None:
                if connection is None:
                    raise ConfigurationError(f"{self!r} counts per route; name the route")
                route = route_part(connection.scope)
            key += ":" + route
        extra = context.get("scope")
        return key if extra is None else f"{key}:{escape(str(extra))}"

    # -- the hit -------------------------------------------------------------------------

    async def hit(
        self,
        connection: Any,
        *,
        cost: Optional[int] = None,
        context: Optional[Mapping[str, Any]] = None,
        skip_handler: Optional[bool] = None,
        response: Optional[Response] = None,
    ) -> Any:
        """Count one hit; throttled connections go to the handler (429 by default).

        Returns the connection, so the throttle works as a FastAPI dependency. With
        `response` (FastAPI injects it), allowed responses get the rate-limit headers.
        """
        if self._disabled:
            return connection
        ctx = self.context if context is None else {**self.context, **context}
        backend = self._backend or self.get_backend(connection)
        try:
            outcome = await self._decide(connection, ctx, cost, backend)
        except ConfigurationError as exc:
            logger.error("%r is misconfigured: %s", self, exc)
            raise
        except DecisionFailed as failed:
            outcome = await recover(self, failed.error, connection, ctx, cost, backend, failed)
        except Exception as exc:
            outcome = await recover(self, exc, connection, ctx, cost, backend, None)
        if outcome is None:
            return connection
        decision, rate = outcome
        scope = connection.scope
        state = scope.get("state")
        if state is None:
            scope["state"] = state = {}
        if decision.allowed:
            state[THROTTLED_STATE_KEY] = 0.0
            if response is not None and self.headers is not None and rate is not None:
                headers = self._headers or RateLimitHeaders(self.uid, rate, self.headers)
                response.raw_headers.extend(headers.raw(decision))
            return connection
        return await self._throttled(connection, decision, rate, ctx, state, skip_handler, backend)

    async def _decide(
        self,
        connection: Any,
        ctx: Mapping[str, Any],
        cost: Optional[int],
        backend: ThrottleBackend,
    ) -> Optional[tuple[Decision, Optional[Rate]]]:
        """The decision for `connection` on `backend` and the rate it was made under; None
        when there is nothing to decide (an unlimited rate, no cost, an exempted client).

        A failure of the strategy (the store) is raised as `DecisionFailed`, with the key."""
        rate = self._rate
        if self._rate_fn is not None:
            rate = await self._rate_for(connection, ctx)
        if rate.unlimited:
            return None
        if cost is None:
            cost = self.cost if self._cost_fn is None else await self._cost_for(connection, ctx)
        elif cost != self.cost:
            cost = _check_cost(cost, repr(self))
        if cost == 0:
            return None
        scope = connection.scope
        if self.identifier is None and backend.defaults.identifier is None:
            client = scope.get("client")
            key = f"{self._uid_part}:{{{client_part(client[0]) if client else ANONYMOUS_PART}}}"
        else:
            ident = await self.identify(connection, backend)
            if ident is EXEMPTED:
                return None
            key = f"{self._uid_part}:{{{client_part(ident)}}}"
        if self.per_route:
            key += ":" + route_part(scope)
        extra = ctx.get("scope")
        if extra is not None:
            key = f"{key}:{escape(str(extra))}"
        try:
            if self._strategy_decide is not None:
                decision = await self._strategy_decide(key, rate, backend, cost)
            else:
                decision = decision_from_wait(
                    await self.strategy(key, rate, backend, cost), rate.limit
                )
        except ConfigurationError:
            raise
        except Exception as exc:
            raise DecisionFailed(exc, key, rate, cost) from exc
        return decision, rate

    async def _throttled(
        self,
        connection: Any,
        decision: Decision,
        rate: Optional[Rate],
        ctx: Mapping[str, Any],
        state: dict[str, Any],
        skip_handler: Optional[bool],
        backend: ThrottleBackend,
    ) -> Any:
        wait = decision.wait_ms
        if self.min_wait_period is not None:
            wait = max(wait, self.min_wait_period)
        state[THROTTLED_STATE_KEY] = wait
        if skip_handler if skip_handler is not None else self.skip_handler:
            return connection
        if self.headers is not None and rate is not None:
            headers = self._headers or RateLimitHeaders(self.uid, rate, self.headers)
            extra = headers.text(decision, wait)
            if extra:
                own = ctx.get("headers")
                ctx = {**ctx, "headers": {**extra, **own} if own else extra}
        handler = self.handle_throttled
        if handler is None and self.use_backend_handler:
            handler = backend.handle_throttled
        result = await _resolve((handler or self.default_handler)(connection, wait, self, ctx))
        if isinstance(result, Response):
            answer_with(connection, result)
        return connection

    __call__ = hit
    """`await throttle(connection)` is `hit`; as a FastAPI dependency it returns the connection."""

    def _dependency_parameters(self) -> list[inspect.Parameter]:
        return [inspect.Parameter("connection", _POSITIONAL, annotation=self.connection_type)]


class HTTPThrottle(Throttle):
    """A throttle for HTTP requests; as a FastAPI dependency it returns the request.

    ```python
    throttle = HTTPThrottle("api", rate="100/min")

    @app.get("/items")
    async def items(request: Request = Depends(throttle)): ...
    ```
    """

    connection_type = Request

    def _dependency_parameters(self) -> list[inspect.Parameter]:
        response = inspect.Parameter("response", _KEYWORD, default=None, annotation=Response)
        return [*super()._dependency_parameters(), response]


RequestThrottle = HTTPThrottle


class WebSocketThrottle(Throttle):
    """A throttle for WebSockets: as a dependency it limits connection attempts; `await
    throttle.hit(websocket)` per message sends a `rate_limit` JSON message when throttled."""

    connection_type = WebSocket
    default_handler = staticmethod(websocket_throttled)
    use_backend_handler = False
