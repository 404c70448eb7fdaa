"""The ASGI driver: requests made by calling the app with a prepared scope, no HTTP client."""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Sequence
from typing import Any, Callable, Optional

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

__all__ = ["Client", "Target", "asgi_target", "bare_request", "clients", "scoped_target"]

Client = tuple[str, int]

_SCOPE: dict[str, Any] = {
    "type": "http",
    "asgi": {"version": "3.0", "spec_version": "2.3"},
    "http_version": "1.1",
    "method": "GET",
    "scheme": "http",
    "path": "/",
    "raw_path": b"/",
    "query_string": b"",
    "root_path": "",
    "headers": [(b"host", b"bench"), (b"user-agent", b"traffik-bench")],
    "server": ("bench", 80),
}
_BODY = {"type": "http.request", "body": b"", "more_body": False}


async def _receive() -> dict[str, Any]:
    return _BODY


def clients(count: int) -> list[Client]:
    """`count` distinct peers, 10.0.0.0 upwards: each one is a client key of its own."""
    return [(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", 40000) for i in range(count)]


class Target:
    """One measured variant: `one(i)` makes its i-th request (or raw round trip).

    `cursor` carries the request index across blocks, so a many-key workload keeps cycling
    through all its keys; `statuses` counts the HTTP statuses answered (empty for raw ones).
    """

    def __init__(
        self,
        name: str,
        one: Callable[[int], Awaitable[Any]],
        statuses: Optional[Counter[int]] = None,
    ) -> None:
        self.name = name
        self.one = one
        self.statuses: Counter[int] = Counter() if statuses is None else statuses
        self.cursor = 0


def asgi_target(name: str, app: Any, peers: Sequence[Client], path: str = "/") -> Target:
    """Request i goes to `app` from peer `i % len(peers)`, with a fresh copy of one scope
    (a GET of `path`)."""
    statuses: Counter[int] = Counter()
    count = len(peers)
    scope = _SCOPE if path == "/" else {**_SCOPE, "path": path, "raw_path": path.encode()}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses[message["status"]] += 1

    async def one(i: int) -> None:
        await app({**scope, "client": peers[i % count]}, _receive, send)

    return Target(name, one, statuses)


def scoped_target(name: str, app: Any, scope_of: Callable[[int], dict[str, Any]]) -> Target:
    """Request i goes to `app` with the scope `scope_of(i)` builds (a new dict each time)."""
    statuses: Counter[int] = Counter()

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses[message["status"]] += 1

    async def one(i: int) -> None:
        await app(scope_of(i), _receive, send)

    return Target(name, one, statuses)


async def _root(request: Request) -> Response:
    return Response()


_ROUTE = Route("/", _root)
"""The benchmark's route as a request outside any app names it: a `Request` with no route
counts under `/**`, every path of an app (`traffik.buckets.NO_ROUTE`)."""


def bare_request(peer: Client) -> Request:
    """A `Request` outside any app, keyed like the benchmark's route (`GET:/`)."""
    return Request({**_SCOPE, "client": peer, "route": _ROUTE})
