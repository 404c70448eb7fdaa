"""The 429 response in the OpenAPI schema: `RATE_LIMITED_RESPONSE` by hand, `document_rate_limits(app)` for every throttled route."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from typing import Any, Callable, TypeVar, Union

import fastapi.routing
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute, Mount
from starlette.websockets import WebSocket

from traffik.headers import Header, RateLimitField
from traffik.middleware import MiddlewareThrottle, ThrottleMiddleware
from traffik.middleware_throttle import bypasses
from traffik.rules import Bypass
from traffik.throttles import Throttle

__all__ = ["RATE_LIMITED_RESPONSE", "document_rate_limits", "guarded_by_throttle"]

RATE_LIMITED_RESPONSE: dict[Union[int, str], dict[str, Any]] = {
    429: {
        "description": "Too Many Requests: a rate limit was reached; retry after `Retry-After` seconds.",
        "headers": {
            "Retry-After": {
                "description": "Whole seconds to wait before retrying.",
                "schema": {"type": "integer", "minimum": 1},
            },
        },
        "content": {
            "application/json": {
                "schema": {
                    "title": "RateLimited",
                    "type": "object",
                    "properties": {"detail": {"title": "Detail", "type": "string"}},
                    "required": ["detail"],
                },
                "example": {"detail": "Too many requests. Retry in 12 seconds."},
            },
        },
    },
}
"""For a route's `responses=`: `@app.get("/items", responses=RATE_LIMITED_RESPONSE)`."""


_FIELDS: dict[str, tuple[str, str]] = {
    "policy": ("string", 'The quota: `"name";q=<units>;w=<window in seconds>` per rate.'),
    "ratelimit": (
        "string",
        'Where the client stands: `"name";r=<units left>;t=<seconds until whole again, or to '
        "wait>` per rate.",
    ),
    "limit": ("integer", "Units the window allows."),
    "remaining": ("integer", "Units left in the window."),
    "reset": ("integer", "Seconds until the window is whole again (on a 429: to wait)."),
}
"""Each `RateLimitField` kind: the schema type and description of its header."""


def _http_throttles(call: Any) -> list[Throttle]:
    """The HTTP throttles a dependency's `call` applies."""
    if isinstance(call, MiddlewareThrottle):  # used as a dependency
        call = call.throttle
    owner = getattr(call, "__self__", None)  # a bound method: `Depends(throttle.hit)`
    if isinstance(owner, Throttle):
        call = owner
    # `throttled(a, b)`, one dependency for several; `throttle.charge_by_outcome`, for one
    combined = getattr(call, "throttles", None)
    if combined is not None:
        return [throttle for item in combined for throttle in _http_throttles(item)]
    if isinstance(call, Throttle) and not issubclass(call.connection_type, WebSocket):
        return [] if call.shadow else [call]  # (a shadow throttle never refuses)
    return []


def _throttles_guarding(dependant: Dependant) -> list[Throttle]:
    """The HTTP throttles among `dependant`'s dependencies, at any depth, each once."""
    found: dict[int, Throttle] = {}
    pending = list(dependant.dependencies)
    while pending:
        current = pending.pop()
        for throttle in _http_throttles(current.call):
            found.setdefault(id(throttle), throttle)
        pending.extend(current.dependencies)
    return list(found.values())


def guarded_by_throttle(dependant: Dependant) -> bool:
    """Whether an HTTP throttle is among `dependant`'s dependencies, at any depth."""
    return bool(_throttles_guarding(dependant))


Guard = tuple[MiddlewareThrottle, tuple[Bypass, ...]]
"""An HTTP throttle of a `ThrottleMiddleware`, with the exemptions of that middleware."""


def _middleware_guards(app: FastAPI) -> list[Guard]:
    """The HTTP throttles of every `ThrottleMiddleware` added to `app`."""
    guards: list[Guard] = []
    for entry in app.user_middleware:
        if not (isinstance(entry.cls, type) and issubclass(entry.cls, ThrottleMiddleware)):
            continue
        args: tuple[Any, ...] = tuple(entry.args)
        kwargs: dict[str, Any] = dict(entry.kwargs)
        listed = kwargs.get("middleware_throttles", args[0] if args else ())
        exempt = bypasses(kwargs.get("exempt", ()), "ThrottleMiddleware")
        for item in listed:
            rule = item if isinstance(item, MiddlewareThrottle) else MiddlewareThrottle(item)
            shadow = rule.throttle.shadow if rule.shadow is None else rule.shadow
            if not shadow and not issubclass(rule.connection_type, WebSocket):
                guards.append((rule, exempt))
    return guards


def _guards_route(guard: Guard, path: str, method: str) -> bool:
    """Whether a middleware throttle may count requests to the route `path` (its template)
    with `method`. Predicates cannot be told ahead: a rule with one may count, an exemption
    with one does not exempt."""
    rule, exempt = guard
    scope = {"type": "http", "path": path, "method": method}
    if not rule.rule.matches_scope(scope):
        return False
    return not any(
        bypass.predicate is None and bypass.matches_scope(scope)
        for bypass in (*rule.exempt, *exempt)
    )


def _header_entries(throttles: Iterable[Throttle]) -> dict[str, Any]:
    """The OpenAPI entries of the rate-limit headers `throttles` write."""
    entries: dict[str, Any] = {}
    for throttle in throttles:
        for name, value in (throttle.headers or {}).items():
            if name in entries or value.value == Header.DISABLE:
                continue
            field = value.value
            kind, description = (
                _FIELDS[field.kind]
                if isinstance(field, RateLimitField)
                else ("string", f"A rate-limit header of throttle `{throttle.uid}`.")
            )
            entries[name] = {"description": description, "schema": {"type": kind}}
    return entries


def _document(operation: dict[str, Any], throttles: Sequence[Throttle]) -> None:
    """Add the 429 (unless the operation has its own) and the throttles' headers."""
    responses = operation.setdefault("responses", {})
    headers = _header_entries(throttles)
    if "429" not in responses:
        entry = copy.deepcopy(RATE_LIMITED_RESPONSE[429])
        entry["headers"].update(copy.deepcopy(headers))
        responses["429"] = entry
    if not headers:
        return
    for status, response in responses.items():
        if status.startswith("2"):  # admitted: the throttles ran and wrote them
            response.setdefault("headers", {}).update(copy.deepcopy(headers))


def _route_contexts(routes: Sequence[BaseRoute]) -> Iterable[Any]:
    # FastAPI 0.160+ keeps included routers whole and builds each route's effective view
    # (the include's dependencies added) on demand; earlier releases copy the routes.
    iter_route_contexts = getattr(fastapi.routing, "iter_route_contexts", None)
    return routes if iter_route_contexts is None else iter_route_contexts(routes)


def _add_429s(schema: dict[str, Any], app: FastAPI) -> None:
    guards = _middleware_guards(app)
    for route in _route_contexts(app.routes):
        if not isinstance(getattr(route, "original_route", route), APIRoute):
            continue
        throttles = _throttles_guarding(route.dependant)
        operations = schema.get("paths", {}).get(route.path_format, {})
        for method in route.methods:
            operation = operations.get(method.lower())
            if operation is None:
                continue
            guarding = [
                *throttles,
                *(g[0].throttle for g in guards if _guards_route(g, route.path_format, method)),
            ]
            if guarding:
                _document(operation, guarding)


_DOCUMENTED = "_traffik_documents_rate_limits"
"""The attribute marking an app `document_rate_limits` already documents."""

App = TypeVar("App", bound=FastAPI)
"""The app `document_rate_limits` is given, and returns: a subclass keeps its type."""


def _mounted_apps(app: FastAPI) -> list[FastAPI]:
    return [
        route.app
        for route in app.routes
        if isinstance(route, Mount) and isinstance(route.app, FastAPI)
    ]


def document_rate_limits(app: App) -> App:
    """Document the 429 response and the rate-limit headers on every throttled route of `app`.

    Throttles count wherever FastAPI resolves them: `Depends(throttle)` in a parameter or in
    `dependencies=`, `throttled(...)`, router dependencies; and `ThrottleMiddleware` (or
    `throttle.as_middleware()`), on the routes whose path template (`/items/{item_id}`) and
    methods its rules match (a rule's predicate cannot be told ahead: a rule with one counts,
    an exemption with one does not exempt); a throttle with `shadow=True` never refuses and
    is left out. The 429 entry is the one of
    `RATE_LIMITED_RESPONSE` with the throttles' headers added, which the route's success
    responses list too; a route's own `429` entry is kept. Routes are inspected when the
    schema is first built, so routes added later count too. FastAPI apps mounted in `app`
    (`app.mount("/v2", v2)`), whose schemas are their own, are documented as well: those
    mounted now, and those mounted before `app`'s schema is first built. Throttles called
    inside endpoints are invisible here: add `responses=RATE_LIMITED_RESPONSE` to those routes.
    """
    if getattr(app, _DOCUMENTED, False):
        return app
    setattr(app, _DOCUMENTED, True)
    build: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        for mounted in _mounted_apps(app):
            document_rate_limits(mounted)
        schema = build()
        _add_429s(schema, app)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
    for mounted in _mounted_apps(app):
        document_rate_limits(mounted)
    return app
