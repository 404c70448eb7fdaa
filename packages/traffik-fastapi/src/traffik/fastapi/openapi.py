"""The 429 response in the OpenAPI schema: `RATE_LIMITED_RESPONSE` by hand, `document_rate_limits(app)` for every throttled route."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from typing import Any, Callable, Union

import fastapi.routing
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute
from starlette.websockets import WebSocket

from traffik.middleware import MiddlewareThrottle
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


def _guards_http(call: Any) -> bool:
    if isinstance(call, MiddlewareThrottle):  # used as a dependency
        call = call.throttle
    owner = getattr(call, "__self__", None)  # a bound method: `throttle.charge_by_outcome`
    if isinstance(owner, Throttle):
        call = owner
    combined = getattr(call, "throttles", None)  # `throttled(a, b)`: one dependency for several
    if combined is not None:
        return any(_guards_http(throttle) for throttle in combined)
    return isinstance(call, Throttle) and not issubclass(call.connection_type, WebSocket)


def guarded_by_throttle(dependant: Dependant) -> bool:
    """Whether an HTTP throttle is among `dependant`'s dependencies, at any depth."""
    pending = list(dependant.dependencies)
    while pending:
        current = pending.pop()
        if _guards_http(current.call):
            return True
        pending.extend(current.dependencies)
    return False


def _route_contexts(routes: Sequence[BaseRoute]) -> Iterable[Any]:
    # FastAPI 0.160+ keeps included routers whole and builds each route's effective view
    # (the include's dependencies added) on demand; earlier releases copy the routes.
    iter_route_contexts = getattr(fastapi.routing, "iter_route_contexts", None)
    return routes if iter_route_contexts is None else iter_route_contexts(routes)


def _add_429s(schema: dict[str, Any], routes: Sequence[BaseRoute]) -> None:
    for route in _route_contexts(routes):
        if not isinstance(getattr(route, "original_route", route), APIRoute):
            continue
        if not guarded_by_throttle(route.dependant):
            continue
        operations = schema.get("paths", {}).get(route.path_format, {})
        for method in route.methods:
            operation = operations.get(method.lower())
            if operation is not None:
                operation.setdefault("responses", {}).setdefault(
                    "429", copy.deepcopy(RATE_LIMITED_RESPONSE[429])
                )


def document_rate_limits(app: FastAPI) -> FastAPI:
    """Document the 429 response on every route of `app` guarded by a throttle.

    Throttles count wherever FastAPI resolves them: `Depends(throttle)` in a parameter or in
    `dependencies=`, `throttled(...)`, router dependencies. A route's own `429` entry is kept.
    Routes are inspected when the schema is first built, so routes added later count too.
    The entry is the one of `RATE_LIMITED_RESPONSE`.
    Throttles applied by `ThrottleMiddleware` or called inside endpoints are invisible here:
    add `responses=RATE_LIMITED_RESPONSE` to those routes.
    """
    build: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        _add_429s(schema, app.routes)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
