"""`ThrottleMiddleware`: throttles applied to HTTP requests and WebSocket handshakes, scoped by `MiddlewareThrottle`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Callable, Optional, Union

from traffik import _starlette_missing

try:
    from starlette.middleware.cors import CORSMiddleware
    from starlette.requests import HTTPConnection, Request
    from starlette.types import ASGIApp, Receive, Scope, Send
    from starlette.websockets import WebSocket
except ImportError as exc:
    raise _starlette_missing("traffik.middleware") from exc

from traffik.backends.base import ThrottleBackend
from traffik.backends.context import SCOPE_BACKEND_KEY
from traffik.buckets import route_path
from traffik.middleware_answers import MiddlewareAnswers
from traffik.middleware_options import checked_options, listed
from traffik.middleware_sends import HeaderSink, Settling
from traffik.middleware_throttle import (
    SORT_MODES,
    Exemption,
    MiddlewareThrottle,
    bypasses,
    sort_throttles,
)
from traffik.outcomes import CHARGES_KEY, Outcome, settle
from traffik.rules import applies, glob
from traffik.throttle_answers import PendingRequest, no_body
from traffik.throttles import Throttle
from traffik.together import Entry, hit_together

__all__ = ["SORT_MODES", "MiddlewareThrottle", "ThrottleMiddleware", "glob"]

ExceptionHandlerGetter = Callable[[Exception], Optional[Callable[..., Any]]]

_Settled = tuple[
    MiddlewareThrottle,
    Optional[Callable[[str], Any]],
    Throttle,
    Optional[dict[str, Any]],
    Optional[bool],
    dict[str, Any],
]
"""A `MiddlewareThrottle` as `ThrottleMiddleware` runs it, worked out when the app is built
(`_settled`): the `MiddlewareThrottle`, its path match (None when the rule reads more than
the path), its throttle, the context and the `skip_handler` its hits get, and what its copy
of the scope adds (its pattern as the route, and this middleware's backend when it has
one)."""


def _is_preflight(scope: Scope) -> bool:
    """Whether an OPTIONS request is a CORS preflight (`Origin` and
    `Access-Control-Request-Method`), as `CORSMiddleware` tells one (it answers every such
    request itself)."""
    names = {name for name, _ in scope.get("headers", ())}
    return b"origin" in names and b"access-control-request-method" in names


def _connection(scope: Scope, receive: Receive, send: Send) -> HTTPConnection:
    return Request(scope, no_body) if scope["type"] == "http" else WebSocket(scope, receive, send)


class ThrottleMiddleware(MiddlewareAnswers):
    """ASGI middleware applying throttles to HTTP requests and WebSocket handshakes.

    ```python
    app.add_middleware(
        ThrottleMiddleware,
        middleware_throttles=[
            MiddlewareThrottle(api_throttle, path="/api/**", exempt=["/api/health"]),
            MiddlewareThrottle(write_throttle, methods=["POST", "PUT", "DELETE"]),
        ],
        exempt=["/docs", "/openapi.json"],
    )
    ```

    `middleware_throttles` are `MiddlewareThrottle`s or plain throttles (applied to every
    connection of their kind, as their own `rules` allow). `sort` sets the order they run
    in: `"cheap_first"` (the default, as in traffik 1.2: by cost, a cost callable last, then
    those without a predicate first; ties keep the given order), `"cheap_last"`, None or
    False for the given order, or a key function called with each item as given. Those that
    apply on one backend are decided as one step (`traffik.together`); a refusal stops the
    rest and the app, answered by the throttle that refused with the longest wait. `exempt`
    lists paths, `Rule`s or `Bypass`es no throttle applies to. `backend`, when given, is the
    default for throttles that have none. `context` and `skip_handler` apply to
    every throttle; with `skip_handler=True` throttled requests reach the app, which can
    check `is_throttled(request)`. The arguments keep traffik 1.2's positional order (`app,
    middleware_throttles, backend, exception_handler_getter, context, sort, skip_handler`);
    `exempt` is keyword-only. `throttle.as_middleware(...)` builds the entry for one throttle.

    A throttled connection gets the Response its throttle's `handle_throttled` returned, if
    it returned one; else the response of the app's exception handler for the
    exception (status-code handlers first, then by class, as Starlette does), or of
    `exception_handler_getter(exc)` when given; with no handler, what the app answers an
    `HTTPException` with by default (Starlette: the detail as text; FastAPI registers its
    JSON `{"detail": ...}`), a 429 with `Retry-After` and the rate-limit headers; an
    exception handler that returns None leaves the request to the server's 500 (a
    `handle_throttled` returning None lets it through). A WebSocket handshake
    gets that response as a denial, or a close with code 1008 when the server cannot send
    one. An HTTP refusal also gets the headers each `CORSMiddleware` this one wraps would add.
    Allowed HTTP responses carry the throttles' rate-limit headers, added to the app's own;
    `charge_when` settles on the status the response starts with. Any other
    exception (e.g. `on_error="raise"`) propagates to the server error handling, a plain 500.

    Args:
        app: The ASGI app to guard.
        middleware_throttles: `MiddlewareThrottle`s, or throttles applied to every
            connection of their kind.
        backend: The default backend (a `ThrottleBackend` or a backend URL) for throttles
            that have none; None for none.
        exception_handler_getter: A function `(exc) -> handler or None` consulted before
            the app's exception handlers for a throttled connection.
        context: Context passed to every throttle (a mapping).
        sort: The order the throttles run in: `"cheap_first"`, `"cheap_last"`, None or
            False for the given order, or a key function called with each item as given.
        skip_handler: Whether throttled requests reach the app (which can check
            `is_throttled(request)`); None for each throttle's setting.
        exempt: Paths, `Rule`s or `Bypass`es no throttle applies to.

    Raises:
        ConfigurationError: When `middleware_throttles` is not a list, `backend` is neither
            a backend nor a URL, `exception_handler_getter` is not callable, `context` is
            not a mapping, `sort` or `skip_handler` is invalid, or an exemption is invalid.
        TypeError: When an item of `middleware_throttles` is not a throttle.
    """

    def __init__(
        self,
        app: ASGIApp,
        middleware_throttles: Iterable[Union[MiddlewareThrottle, Throttle]],
        backend: Union[ThrottleBackend, str, None] = None,
        exception_handler_getter: Optional[ExceptionHandlerGetter] = None,
        context: Optional[Mapping[str, Any]] = None,
        sort: Any = "cheap_first",
        skip_handler: Optional[bool] = None,
        *,
        exempt: Iterable[Exemption] = (),
    ) -> None:
        options = checked_options(backend, exception_handler_getter, context, skip_handler)
        throttles = [
            t if isinstance(t, MiddlewareThrottle) else MiddlewareThrottle(t)
            for t in sort_throttles(listed(middleware_throttles), sort)
        ]
        self.app = app
        self.http_throttles = tuple(
            t for t in throttles if not issubclass(t.connection_type, WebSocket)
        )
        self.websocket_throttles = tuple(
            t for t in throttles if issubclass(t.connection_type, WebSocket)
        )
        self.backend: Optional[ThrottleBackend] = options["backend"]
        self.context: dict[str, Any] = options["context"]
        self.skip_handler: Optional[bool] = options["skip_handler"]
        self.exempt = bypasses(exempt, "ThrottleMiddleware")
        self.exception_handler_getter: Optional[ExceptionHandlerGetter] = options[
            "exception_handler_getter"
        ]
        self._cors: Optional[tuple[CORSMiddleware, ...]] = None  # (`_cors_inside`)
        # Whether a throttle of this middleware settles its charges on the response's status
        # (`charge_when`): decided when the app is built, as `throttled(...)` decides it.
        self._settles = any(t.throttle.charge_when is not None for t in throttles)
        # Whether the one-throttle path may hand the throttle a `PendingRequest` (the scope
        # alone, a `Request` made only when the app's callables need one): not for a
        # throttle class whose own `hit` or `get_backend` (traffik 1.2 hooks) may read it.
        first = self.http_throttles[0].throttle if self.http_throttles else None
        self._pending = (
            first is not None
            and type(first).hit is Throttle.hit
            and type(first).get_backend is Throttle.get_backend
        )
        self._http_each = tuple(self._settled(t) for t in self.http_throttles)
        self._websocket_each = tuple(self._settled(t) for t in self.websocket_throttles)
        self._http_one = self._one(self._http_each)
        self._websocket_one = self._one(self._websocket_each)

    @property
    def middleware_throttles(self) -> Mapping[str, tuple[MiddlewareThrottle, ...]]:
        """traffik 1.2's name: the throttles by kind, `"http"` (`http_throttles`) and
        `"websocket"` (`websocket_throttles`), in the order they run. Read-only: the
        middleware settles them when it is built."""
        return MappingProxyType(
            {"http": self.http_throttles, "websocket": self.websocket_throttles}
        )

    @property
    def get_exception_handler(self) -> Optional[ExceptionHandlerGetter]:
        """traffik 1.2's name for `exception_handler_getter`."""
        return self.exception_handler_getter

    def _settled(self, throttle: MiddlewareThrottle) -> _Settled:
        """How `throttle` runs here (`_Settled`), worked out when the app is built."""
        context = {**self.context, **throttle.context} if self.context or throttle.context else None
        skip = throttle.skip_handler if self.skip_handler is None else self.skip_handler
        added: dict[str, Any] = {"route": throttle.route}
        if self.backend is not None:
            added[SCOPE_BACKEND_KEY] = self.backend
        return (throttle, throttle.path_match, throttle.throttle, context, skip, added)

    @staticmethod
    def _one(each: tuple[_Settled, ...]) -> Optional[_Settled]:
        """The one-throttle path's throttle: a single one whose rule the scope alone decides
        (no predicate, no exemption of its own); None otherwise."""
        return each[0] if len(each) == 1 and not each[0][0].checks_more else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            throttles = self._http_each
            one = self._http_one
            if scope["method"] == "OPTIONS" and _is_preflight(scope) and self._cors_inside():
                # A browser's question before a request, which a `CORSMiddleware` inside
                # answers: the request counts. (Counting the question would charge each
                # request twice, and refuse it without the CORS headers.) With none inside,
                # the OPTIONS request reaches the app like any other, and counts like one:
                # else headers any client can send would buy an endpoint that serves OPTIONS
                # free requests.
                throttles = ()
        elif kind == "websocket":
            throttles = self._websocket_each
            one = self._websocket_one
        else:
            throttles = ()
        if not throttles:
            await self.app(scope, receive, send)
            return
        # Throttles see copies of the scope (with their pattern as the route) sharing its
        # state, where each notes what it charged (`traffik.outcomes.Charge`): settling, and
        # `throttle.refund(request)` in the app, give back on the bucket it was taken from.
        state = scope.get("state")
        if state is None:
            scope["state"] = {CHARGES_KEY: []}
        elif CHARGES_KEY not in state:
            state[CHARGES_KEY] = []
        sink: Any = None  # (where the throttles write the headers of an admitted request)
        try:
            if self.exempt and await self._exempted(_connection(scope, receive, send)):
                pass
            elif one is None:
                if kind == "http":
                    sink = HeaderSink()
                    sink.raw_headers = []
                    sink.send = send
                await self._run(throttles, scope, receive, send, sink)
            else:
                # One throttle whose rule the scope alone decides (the common case): `_run`
                # written out for it, as a call here costs about as much as the scope's copy.
                alone, match, throttle, context, skip, added = one
                if match is not None:  # (the path `route_path` reads, without the call)
                    path = route_path(scope) if scope.get("root_path") else scope["path"]
                    matched = match(path) is not None
                else:
                    matched = alone.matches_any or alone.rule.matches_scope(scope)
                if matched:
                    view = {**scope, **added}
                    if kind == "websocket":
                        scoped: Any = WebSocket(view, receive, send)
                    else:  # (the Request is made only if a callable of the app gets it)
                        if self._pending:
                            scoped = PendingRequest()
                            scoped.scope = view
                        else:
                            scoped = Request(view, no_body)
                        if throttle.headers is not None:  # (none for a throttle writing none)
                            sink = HeaderSink()
                            sink.raw_headers = []
                            sink.send = send
                    await throttle.hit(
                        scoped,
                        cost=alone.cost,
                        context=context,
                        skip_handler=skip,
                        response=sink,
                        shadow=alone.shadow,
                    )
        except Exception as exc:
            await self._reject(exc, _connection(scope, receive, send), scope, receive, send)
            return
        if sink is not None and sink.raw_headers:
            send = sink.send_with_headers
        if not self._settles:
            await self.app(scope, receive, send)
            return
        settling = Settling(_connection(scope, receive, send), send)
        try:
            await self.app(scope, receive, settling)
        except Exception as exc:
            if not settling.started:
                await settle(settling.connection, Outcome.of_exception(exc))
            raise
        if not settling.started:  # (a WebSocket's handshake, or an app that answered nothing)
            await settle(settling.connection, Outcome(500))

    async def _exempted(self, connection: HTTPConnection) -> bool:
        return not await applies(self.exempt, connection, self.context)

    async def _run(
        self,
        throttles: Sequence[_Settled],
        scope: Scope,
        receive: Receive,
        send: Send,
        sink: Any,
    ) -> None:
        # Each throttle sees a copy of the scope with its pattern as the route (and this
        # middleware's backend, for throttles that have none), sharing the scope's state;
        # those that apply are decided as one (`traffik.together`).
        http = scope["type"] == "http"
        path: Optional[str] = None
        applied: list[Entry] = []
        for alone, match, throttle, context, skip, added in throttles:
            if match is not None:  # (the path alone: read once for every throttle)
                if path is None:
                    path = route_path(scope)
                if match(path) is None:
                    continue
            elif not (alone.matches_any or alone.rule.matches_scope(scope)):
                continue  # (a path rule reads the mount's path)
            view = {**scope, **added}
            scoped = Request(view, no_body) if http else WebSocket(view, receive, send)
            if alone.checks_more and not await alone.applies(scoped, context or {}):
                continue
            applied.append(Entry(throttle, scoped, alone.cost, context, skip, alone.shadow))
        if len(applied) == 1:  # (the common case: decided alone)
            await applied[0].hit(sink)
        elif applied:
            await hit_together(applied, applied[0].connection, response=sink)
