"""Which bucket a connection lands in: its client, its route template, and the key they make.

A key is `uid:{client}:ROUTE[:scope]`, where `ROUTE` is `METHOD:/mount/prefix/template` (`WS`
in place of the method for WebSockets) or nothing for a throttle that counts across routes.
Every part is escaped (`escape`), so no identifier, path or scope can reach into another
part: `a:b` as an identifier and `a` followed by a route `b` give different keys. Clients are
keyed by type as well as value (`5` and `"5"` differ); `None` is the anonymous client. The
braces around the client are a Redis Cluster hash tag: every key of one client, across
throttles, routes and rates, lives on one node, so a decision over several is one script.

The route template is the route as declared (`/items/{item_id}`), so every item shares one
budget: `scope["route"]` when the router sets it (Starlette 1.x, FastAPI), otherwise the
route whose endpoint is `scope["endpoint"]`, found once per app and endpoint (Starlette
0.4x). FastAPI 0.16x includes a router's routes by reference, so `scope["route"]` is the same
object under every prefix the router is included with: the inclusion's own route context,
which FastAPI leaves in the scope with the prefixed path, stands for the route then
(`served_route`), so each inclusion counts apart. Routes under a `Mount` are prefixed by the
mount's path as served (`root_path` beyond the app's own), so two mounts never share a
bucket; a mount whose path has parameters therefore counts each value apart. Paths for middleware rules are relative to the mount
(`route_path`), as Starlette's own router matches them.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import Any, Optional

from traffik.exceptions import ConfigurationError
from traffik.keyparts import client_part, escape

__all__ = [
    "bucket_prefix",
    "mount_prefix",
    "named_route_part",
    "route_part",
    "route_path",
    "route_template",
    "served_route",
    "without_method",
]


def bucket_prefix(uid: Optional[str] = None, client: Any = None) -> str:
    """The start shared by the keys of a throttle (`uid:`), or of one client of it
    (`uid:{client}:`); "" for neither. `client` is an identifier as the throttle's
    identifier returns it."""
    if uid is None:
        return ""
    if client is None:
        return escape(uid) + ":"
    return f"{escape(uid)}:{{{client_part(client)}}}:"


def served_route(scope: Mapping[str, Any]) -> Any:
    """The route serving `scope` as the app serves it: `scope["route"]`, or, for a route of a
    router FastAPI includes by reference (0.16x), that inclusion's route context, whose `path`
    carries the prefixes (a router included at `/v1` and at `/v2` serves two routes)."""
    route = scope.get("route")
    fastapi = scope.get("fastapi")
    if fastapi is not None and route is not None:
        included = fastapi.get("effective_route_context")
        if (
            included is not None
            and getattr(included, "original_route", None) is route
            and getattr(route, "routes", None) is None  # (a mount: its path is in root_path)
        ):
            return included
    return route


def route_path(scope: Mapping[str, Any]) -> str:
    """The path as the router of the current app sees it: `path` without `root_path`."""
    path: str = scope.get("path", "")
    root = scope.get("root_path", "")
    if root and path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/"):
        return path[len(root) :]
    return path


def mount_prefix(scope: Mapping[str, Any]) -> str:
    """The path of the mounts between the application and this route, as served (`""` outside
    any mount). A `root_path` given by the server (`--root-path`) is not a mount."""
    if "app_root_path" not in scope:
        return ""
    root: str = scope.get("root_path", "")
    return root[len(scope["app_root_path"]) :]


_ENDPOINT_ROUTES: weakref.WeakKeyDictionary[Any, dict[Any, tuple[Any, ...]]] = (
    weakref.WeakKeyDictionary()
)


def _routes_of(routes: Any, endpoint: Any, found: list[Any]) -> None:
    for route in routes:
        if getattr(route, "endpoint", None) is endpoint:
            found.append(route)
        nested = getattr(route, "routes", None)
        if nested:
            _routes_of(nested, endpoint, found)


def _routes_for(app: Any, endpoint: Any) -> tuple[Any, ...]:
    """The routes of `app` (searched through its mounts) whose endpoint is `endpoint`; cached."""
    try:
        table = _ENDPOINT_ROUTES.setdefault(app, {})
    except TypeError:  # an app that cannot be weakly referenced: search every time
        table = {}
    routes = table.get(endpoint)
    if routes is None:
        found: list[Any] = []
        _routes_of(getattr(app, "routes", ()), endpoint, found)
        routes = table[endpoint] = tuple(found)
    return routes


def _template(route: Any) -> Optional[str]:
    if getattr(route, "routes", None) is not None:
        return ""  # a mount: its path is already in the mount prefix
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else None


def route_template(scope: Mapping[str, Any]) -> str:
    """The declared path of the route serving `scope`, prefixed by its mounts; the concrete
    path when no route is known (a bare ASGI app)."""
    template = None
    route = served_route(scope)
    if route is not None:
        template = _template(route)
    else:
        endpoint = scope.get("endpoint")
        app = scope.get("app")
        if endpoint is not None and app is not None:
            routes = _routes_for(app, endpoint)
            if len(routes) == 1:
                template = _template(routes[0])
            else:
                path = route_path(scope)
                for candidate in routes:
                    regex = getattr(candidate, "path_regex", None)
                    if regex is not None and regex.match(path):
                        template = _template(candidate)
                        break
    if template is None:
        template = route_path(scope)
    return mount_prefix(scope) + template


_PARTS: dict[int, tuple[Any, dict[Any, str]]] = {}
_PARTS_MAX = 4096
"""Route parts remembered per route object (by identity: Starlette routes compare by value and
do not hash) or named template, then per method and mount: at most this many of each, then
forgotten all at once."""


def route_part(scope: Mapping[str, Any], template: Optional[str] = None) -> str:
    """`METHOD:/template` (`WS:/template` for WebSockets), escaped: the route's share of a key.
    `template` replaces the route's own (a middleware rule's pattern, a route named by hand).
    HEAD counts as GET: Starlette serves it through the GET endpoint, so it spends GET's
    budget instead of opening one of its own. A method counts in upper case (`get` is GET):
    an app that reads methods case-blind serves them alike, so they share one budget."""
    route = served_route(scope) if template is None else template
    method = scope.get("method") or ("WS" if scope.get("type") == "websocket" else "")
    if not method.isupper():
        method = method.upper()
    if method == "HEAD":
        method = "GET"
    if route is None:
        return f"{escape(method)}:{escape(route_template(scope))}"
    entry = _PARTS.get(id(route))
    if entry is None or entry[0] is not route:
        if len(_PARTS) >= _PARTS_MAX:
            _PARTS.clear()
        entry = _PARTS[id(route)] = (route, {})
    variant = (
        (method, scope["root_path"], scope["app_root_path"]) if "app_root_path" in scope else method
    )
    variants = entry[1]
    part = variants.get(variant)
    if part is None:
        if len(variants) >= _PARTS_MAX:  # (a mount path's parameters: the client picks them)
            variants.clear()
        full = route_template(scope) if template is None else template
        part = variants[variant] = f"{escape(method)}:{escape(full)}"
    return part


def without_method(part: str) -> str:
    """A route part with its method left out (`:/template`): every method shares the bucket."""
    return part[part.index(":") :]


def named_route_part(
    path: Optional[str], method: Optional[str], websocket: bool, owner: Any
) -> Optional[str]:
    """The route part for a route named by hand (`path` as declared, mounts included; `method`
    default GET, none for WebSockets), or None when `path` is None."""
    if path is None:
        if method is not None:
            raise ConfigurationError(f"{owner!r}: method={method!r} needs path= too")
        return None
    if not isinstance(path, str) or not path.startswith("/"):
        raise ConfigurationError(
            f"{owner!r}: path={path!r} must be a route path as declared, like '/items/{{item_id}}'"
        )
    if websocket and method is not None:
        raise ConfigurationError(f"{owner!r}: WebSocket routes have no method; drop method=")
    scope = {"type": "websocket"} if websocket else {"method": (method or "GET").upper()}
    return route_part(scope, template=path)
