"""Which bucket a connection lands in: its client, its route template, and the key they make.

A key is `uid:{client}:ROUTE[:scope]`, where `ROUTE` is `METHOD:/mount/prefix/template` (`WS`
in place of the method for WebSockets; a method as `counted_method` counts it: HEAD as GET,
one the client made up as `OTHER`) or nothing for a throttle that counts across routes.
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
(`served_route`), so each inclusion counts apart. Routes under a `Mount` or a `Host` are
prefixed by the mounts and hosts as declared (`mount_prefix`: `/t/{tenant}`,
`//{sub}.example.com`), so two mounts or hosts never share a bucket and a client never opens
one by naming a new tenant or subdomain. A connection no router has routed (a bare ASGI app,
a middleware before the router) counts under `NO_ROUTE`, one bucket per client and method,
never one per path the client invents. Paths for middleware rules are relative to the mount
(`route_path`), as Starlette's own router matches them.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Mapping
from typing import Any, Generic, Optional, TypeVar

from traffik.exceptions import ConfigurationError
from traffik.keyparts import client_part, escape

__all__ = [
    "NO_ROUTE",
    "OTHER_METHOD",
    "STANDARD_METHODS",
    "bucket_prefix",
    "counted_method",
    "mount_prefix",
    "named_route_part",
    "route_part",
    "route_path",
    "route_template",
    "served_route",
    "without_method",
]

_V = TypeVar("_V")


class _ByIdentity(Generic[_V]):
    """What is known of an app's objects (routers, apps), by their identity: a Starlette
    router cannot be hashed, so a `WeakKeyDictionary` would remember none. An entry goes with
    its object; an object that cannot be weakly referenced is not remembered."""

    __slots__ = ("_entries",)

    def __init__(self) -> None:
        self._entries: dict[int, tuple[weakref.ref[Any], _V]] = {}

    def get(self, owner: Any) -> Optional[_V]:
        entry = self._entries.get(id(owner))
        return entry[1] if entry is not None and entry[0]() is owner else None

    def put(self, owner: Any, value: _V) -> _V:
        key, entries = id(owner), self._entries
        with contextlib.suppress(TypeError):  # (not weakly referenced: not remembered)
            entries[key] = (weakref.ref(owner, lambda _: entries.pop(key, None)), value)
        return value

    def values(self) -> list[_V]:
        return [value for _, value in self._entries.values()]


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


NO_ROUTE = "/**"
"""The template of a connection no router has routed: every path of the app, as a middleware
throttle with no pattern counts it."""


def mount_prefix(scope: Mapping[str, Any], route: Any = None) -> str:
    """The mounts and hosts between the application and this route (`scope["route"]`, else
    `route`), as declared (`/t/{tenant}`, `//{sub}.example.com/api`; `""` outside any). A
    `root_path` given by the server (`--root-path`) is not a mount. Where the routes cannot
    be followed (an app that is not a Starlette router), the mounts' path as served."""
    root: str = scope.get("root_path", "")
    served = root[len(scope["app_root_path"]) :] if "app_root_path" in scope else ""
    router = scope.get("router")
    routes = getattr(router, "routes", None)
    if not routes:
        return served
    leaf = scope.get("route")
    if leaf is None:
        leaf = route
    known = _PREFIXES.get(router)
    if known is None:
        known = _PREFIXES.put(router, (_has_hosts(routes), {}))
    hosts, table = known
    key = (served, id(leaf), _host_of(scope) if hosts else None)
    found = table.get(key)
    if found is None or found[0] is not leaf:  # (a route gone, its id reused)
        if len(table) >= _PREFIXES_MAX:  # (mount parameters and hosts: the client picks them)
            table.clear()
        declared = _declared_prefix(routes, scope, served, leaf)
        found = table[key] = (leaf, served if declared is None else declared)
    return found[1]


_PREFIXES: _ByIdentity[tuple[bool, dict[Any, tuple[Any, str]]]] = _ByIdentity()
_PREFIXES_MAX = 4096
"""`mount_prefix`'s answers per router, by the mount path as served, the route and (for a
router with a `Host`) the host asked for: older Starlette (0.42 among them) leaves no route in the scope,
so a plain Starlette app asks on every request. At most this many per router, then
forgotten at once."""


def _has_hosts(routes: Any) -> bool:
    """Whether a `Host` is among `routes` or the routes of their mounts."""
    from starlette.routing import Host

    for route in routes:
        if isinstance(route, Host):
            return True
        nested = getattr(route, "routes", None)
        if nested and _has_hosts(nested):
            return True
    return False


def _host_of(scope: Mapping[str, Any]) -> str:
    """The host asked for, as Starlette's `Host` route reads it (without the port)."""
    for name, value in scope.get("headers", ()):
        if name == b"host":
            return str(value.decode("latin-1").split(":")[0])
    return ""


def _same(host: Any, other: Any) -> bool:
    """Whether two hosts serve the same app, or the same route objects (which a throttle,
    knowing the route and not the host, cannot tell apart)."""
    if host.app is other.app:
        return True
    mine, theirs = host.routes, other.routes
    return bool(mine) and len(mine) == len(theirs) and all(a is b for a, b in zip(mine, theirs))


def _declared_prefix(routes: Any, scope: Mapping[str, Any], rest: str, leaf: Any) -> Optional[str]:
    """The mounts and hosts, as declared, by which `routes` serve the mount path `rest` (as
    served) and then `leaf`, matched as Starlette's router matches them; None when none does."""
    from starlette.routing import Host, Match, Mount

    if not rest and any(route is leaf for route in routes):
        return ""
    for route in routes:
        if isinstance(route, Host):
            view = {"type": scope.get("type", "http"), "headers": scope.get("headers", ())}
            if route.matches(view)[0] is not Match.FULL:
                continue
            found = _declared_prefix(route.routes, scope, rest, leaf)
            if found is not None:
                # Hosts serving the same routes serve one route: the first one names it.
                first = next(h for h in routes if isinstance(h, Host) and _same(h, route))
                return "//" + first.host + found
        elif isinstance(route, Mount):
            view = {"type": scope.get("type", "http"), "path": rest + "/", "root_path": ""}
            match, child = route.matches(view)
            if match is not Match.FULL:
                continue
            found = _declared_prefix(route.routes, scope, rest[len(child["root_path"]) :], leaf)
            if found is not None:
                return route.path + found
            if rest:
                return None  # (Starlette's router took this mount: no other serves `rest`)
    return "" if not rest else None


_ENDPOINT_ROUTES: _ByIdentity[dict[Any, tuple[Any, ...]]] = _ByIdentity()


def _routes_of(routes: Any, endpoint: Any, found: list[Any]) -> None:
    for route in routes:
        # (a `Mount` of a bare ASGI app has that app as the scope's endpoint)
        if getattr(route, "endpoint", None) is endpoint or getattr(route, "app", None) is endpoint:
            found.append(route)
        nested = getattr(route, "routes", None)
        if nested:
            _routes_of(nested, endpoint, found)


def _routes_for(app: Any, endpoint: Any) -> tuple[Any, ...]:
    """The routes of `app` (searched through its mounts) whose endpoint is `endpoint`; cached."""
    table = _ENDPOINT_ROUTES.get(app)
    if table is None:
        table = _ENDPOINT_ROUTES.put(app, {})
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
    """The declared path of the route serving `scope`, prefixed by its mounts and hosts;
    `NO_ROUTE` when no route is known (a bare ASGI app, a middleware before the router)."""
    route = served_route(scope)
    if route is None:
        route = _route_by_endpoint(scope)
    template = None if route is None else _template(route)
    if template is None:
        return NO_ROUTE  # (the app's every path: no mount applies)
    return mount_prefix(scope, route) + template


def _route_by_endpoint(scope: Mapping[str, Any]) -> Any:
    """The route whose endpoint (or mounted app) serves `scope`, for a router that leaves no
    route in the scope (older Starlette, 0.42 among them); None when none is found."""
    endpoint = scope.get("endpoint")
    app = scope.get("app")
    if endpoint is None or app is None:
        return None
    routes = _routes_for(app, endpoint)
    if len(routes) == 1:
        return routes[0]
    path = route_path(scope)
    for candidate in routes:
        regex = getattr(candidate, "path_regex", None)
        if regex is not None and regex.match(path):
            return candidate
    return None


_PARTS: dict[int, tuple[Any, dict[Any, str]]] = {}
_PARTS_MAX = 4096
"""Route parts remembered per route object (by identity: Starlette routes compare by value and
do not hash) or named template, then per method and mount: at most this many of each, then
forgotten all at once."""


STANDARD_METHODS = frozenset(
    ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT")
)
"""The methods counted each under its own name (HEAD counts as GET): HTTP's own (RFC 9110,
and PATCH)."""

OTHER_METHOD = "OTHER"
"""What every other method counts as (`PROPFIND`, `FOO`): the client names the method, so a
method of its own per request would otherwise be a fresh budget (on a route that serves any
method, a mounted app) and a store key per request."""


def counted_method(method: str) -> str:
    """The method a request counts under: upper case (`get` is GET, as an app that reads
    methods case-blind serves them alike), HEAD as GET (Starlette serves it through the GET
    endpoint, so it spends GET's budget), and any method outside `STANDARD_METHODS` as
    `OTHER_METHOD`."""
    if not method.isupper():
        method = method.upper()
    if method == "HEAD":
        return "GET"
    return method if method in STANDARD_METHODS else OTHER_METHOD


def route_part(scope: Mapping[str, Any], template: Optional[str] = None) -> str:
    """`METHOD:/template` (`WS:/template` for WebSockets), escaped: the route's share of a key.
    `template` replaces the route's own (a middleware rule's pattern, a route named by hand).
    The method is the one it counts under (`counted_method`)."""
    route = served_route(scope) if template is None else template
    method = scope.get("method")
    method = counted_method(method) if method else "WS" if scope.get("type") == "websocket" else ""
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
