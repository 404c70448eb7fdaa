"""Which bucket a request lands in, across the ways Starlette and FastAPI route it.

Each case runs a real app through httpx and reads the bucket back from the backend: a client
must not escape its budget by varying a URL the router maps to one route (a mount path's
parameters, a subdomain, a path no route knows), and two routes the app serves apart (two
hosts) must not share one.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Host, Mount, Route, Router

from traffik import HTTPThrottle, InMemoryBackend
from traffik.exceptions import ConnectionThrottled

pytestmark = pytest.mark.anyio


def http(app: Any, host: str = "test") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 5000))
    return httpx.AsyncClient(transport=transport, base_url=f"http://{host}")


def counted(throttle: HTTPThrottle) -> Any:
    async def endpoint(request: Request) -> PlainTextResponse:
        await throttle.hit(request)
        return PlainTextResponse("ok")

    return endpoint


async def statuses(client: httpx.AsyncClient, *urls: str) -> list[int]:
    return [(await client.get(url)).status_code for url in urls]


# -- a mount path's parameters ------------------------------------------------------------


async def test_a_mount_path_parameter_is_one_budget() -> None:
    # `/tenants/{tenant}` accepts any value: a client naming a new tenant per request
    # must not get a new budget per request, as `/items/{item_id}` does not.
    backend = InMemoryBackend(namespace="tenants")
    throttle = HTTPThrottle("t", rate="2/min", backend=backend)
    endpoint = counted(throttle)
    app = Starlette(
        routes=[Mount("/tenants/{tenant}", routes=[Route("/items/{item_id}", endpoint)])]
    )
    async with http(app) as client:
        codes = await statuses(
            client, "/tenants/a/items/1", "/tenants/b/items/1", "/tenants/c/items/1"
        )
    assert codes == [200, 200, 429]
    assert await backend.keys() == [
        "tenants:t:{203.0.113.7}:GET:/tenants/%7Btenant%7D/items/%7Bitem_id%7D:fw"
    ]


async def test_nested_mounts_with_parameters_and_a_sub_app() -> None:
    backend = InMemoryBackend(namespace="nested")
    throttle = HTTPThrottle("t", rate="10/min", backend=backend)
    inner = Starlette(routes=[Route("/items/{item_id:int}", counted(throttle))])
    app = Starlette(
        routes=[
            Mount(
                "/orgs/{org}",
                routes=[Mount("/projects/{project}", routes=[Mount("/api", app=inner)])],
            )
        ]
    )
    async with http(app) as client:
        await statuses(client, "/orgs/x/projects/1/api/items/1", "/orgs/y/projects/2/api/items/2")
    assert await backend.keys() == [
        "nested:t:{203.0.113.7}:GET:/orgs/%7Borg%7D/projects/%7Bproject%7D/api/items/"
        "%7Bitem_id%3Aint%7D:fw"
    ]


async def test_one_router_under_two_parameterised_mounts_keeps_each_mount() -> None:
    backend = InMemoryBackend(namespace="two")
    throttle = HTTPThrottle("t", rate="10/min", backend=backend)
    routes = [Route("/items", counted(throttle))]
    app = Starlette(routes=[Mount("/a/{x}", routes=routes), Mount("/b/{y}", routes=routes)])
    async with http(app) as client:
        await statuses(client, "/a/1/items", "/a/2/items", "/b/1/items")
    assert sorted(await backend.keys()) == [
        "two:t:{203.0.113.7}:GET:/a/%7Bx%7D/items:fw",
        "two:t:{203.0.113.7}:GET:/b/%7By%7D/items:fw",
    ]


async def test_a_fastapi_sub_app_under_a_parameterised_mount() -> None:
    backend = InMemoryBackend(namespace="fastapi")
    throttle = HTTPThrottle("t", rate="2/min", backend=backend)
    sub = FastAPI()
    router = APIRouter(prefix="/v1", dependencies=[Depends(throttle)])

    @router.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    sub.include_router(router)
    app = FastAPI()
    app.mount("/t/{tenant}", sub)
    async with http(app) as client:
        codes = await statuses(client, "/t/a/v1/items/1", "/t/b/v1/items/2", "/t/c/v1/items/3")
    assert codes == [200, 200, 429]
    assert await backend.keys() == [
        "fastapi:t:{203.0.113.7}:GET:/t/%7Btenant%7D/v1/items/%7Bitem_id%7D:fw"
    ]


async def test_a_mount_of_a_bare_asgi_app_is_one_budget_per_mount_template() -> None:
    backend = InMemoryBackend(namespace="bare")
    throttle = HTTPThrottle("t", rate="2/min", backend=backend)

    async def files(scope: Any, receive: Any, send: Any) -> None:
        await throttle.hit(Request(scope))
        await PlainTextResponse("file")(scope, receive, send)

    app = Starlette(routes=[Mount("/u/{user}/files", app=files)])
    async with http(app) as client:
        codes = await statuses(client, "/u/a/files/x", "/u/b/files/y", "/u/c/files/z")
    assert codes == [200, 200, 429]
    assert await backend.keys() == ["bare:t:{203.0.113.7}:GET:/u/%7Buser%7D/files:fw"]


# -- host routing -------------------------------------------------------------------------


async def test_two_hosts_never_share_a_budget() -> None:
    backend = InMemoryBackend(namespace="hosts")
    throttle = HTTPThrottle("t", rate="2/min", backend=backend)
    endpoint = counted(throttle)
    api = Router(routes=[Route("/items", endpoint)])
    admin = Router(routes=[Route("/items", endpoint)])
    app = Starlette(routes=[Host("api.example.com", app=api), Host("admin.example.com", app=admin)])
    async with http(app, "api.example.com") as client:
        api_codes = await statuses(client, "/items", "/items", "/items")
    async with http(app, "admin.example.com") as client:
        admin_codes = await statuses(client, "/items", "/items")
    assert api_codes == [200, 200, 429]
    assert admin_codes == [200, 200]  # another host: another route, another budget
    assert sorted(await backend.keys()) == [
        "hosts:t:{203.0.113.7}:GET://admin.example.com/items:fw",
        "hosts:t:{203.0.113.7}:GET://api.example.com/items:fw",
    ]


async def test_subdomains_of_one_host_pattern_share_a_budget() -> None:
    backend = InMemoryBackend(namespace="sub")
    throttle = HTTPThrottle("t", rate="2/min", backend=backend)
    tenant = Router(routes=[Mount("/api", routes=[Route("/items", counted(throttle))])])
    app = Starlette(routes=[Host("{sub}.example.com", app=tenant)])
    codes = []
    for sub in ("a", "b", "c"):
        async with http(app, f"{sub}.example.com") as client:
            codes += await statuses(client, "/api/items")
    assert codes == [200, 200, 429]
    assert await backend.keys() == ["sub:t:{203.0.113.7}:GET://%7Bsub%7D.example.com/api/items:fw"]


# -- no route -----------------------------------------------------------------------------


async def test_a_throttle_before_routing_counts_a_client_once_whatever_the_path() -> None:
    # `throttle.hit(request)` in a BaseHTTPMiddleware runs before the router: no route is
    # known, so every path counts in one bucket per client (and method), as a middleware
    # throttle with no pattern does, instead of one per path the client invents.
    backend = InMemoryBackend(namespace="before")
    throttle = HTTPThrottle("t", rate="2/min", backend=backend)

    class Limit(BaseHTTPMiddleware):
        async def dispatch(self, request: Request, call_next: Any) -> Any:
            try:
                await throttle.hit(request)
            except ConnectionThrottled:  # (raised outside the app's exception handlers)
                return PlainTextResponse("slow down", 429)
            return await call_next(request)

    async def ok(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/items", ok)], middleware=[Middleware(Limit)])
    async with http(app) as client:
        codes = await statuses(client, "/items", "/nowhere/1", "/nowhere/2", "/items")
    assert codes == [200, 404, 429, 429]
    assert await backend.keys() == ["before:t:{203.0.113.7}:GET:/**:fw"]


async def test_a_bare_asgi_app_counts_a_client_once_whatever_the_path() -> None:
    backend = InMemoryBackend(namespace="asgi")
    throttle = HTTPThrottle("t", rate="2/min", backend=backend)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        try:
            await throttle.hit(Request(scope))
        except ConnectionThrottled:
            await PlainTextResponse("slow down", 429)(scope, receive, send)
            return
        await PlainTextResponse("ok")(scope, receive, send)

    async with http(app) as client:
        codes = await statuses(client, *(f"/p/{n}" for n in range(4)))
    assert codes == [200, 200, 429, 429]
    assert await backend.keys() == ["asgi:t:{203.0.113.7}:GET:/**:fw"]


# -- more ways in -------------------------------------------------------------------------


@pytest.mark.parametrize("root_path", ["", "/api"])
async def test_a_server_root_path_with_a_parameterised_mount(root_path: str) -> None:
    # Behind a proxy (`uvicorn --root-path /api`) the server's root path is not a mount.
    backend = InMemoryBackend(namespace="root")
    throttle = HTTPThrottle("t", rate="10/min", backend=backend)
    app = Starlette(routes=[Mount("/t/{tenant}", routes=[Route("/items", counted(throttle))])])
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 5000), root_path=root_path)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        assert (await client.get(f"{root_path}/t/a/items")).status_code == 200
    assert await backend.keys() == ["root:t:{203.0.113.7}:GET:/t/%7Btenant%7D/items:fw"]


async def test_fastapi_root_path_and_included_routers() -> None:
    backend = InMemoryBackend(namespace="fa")
    throttle = HTTPThrottle("t", rate="10/min", backend=backend)
    app = FastAPI()
    inner = APIRouter(prefix="/inner")

    @inner.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    outer = APIRouter(prefix="/outer", dependencies=[Depends(throttle)])
    outer.include_router(inner)
    app.include_router(outer, prefix="/v1")
    app.include_router(outer, prefix="/v2")
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 5000), root_path="/api")
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        paths = ("/api/v1/outer/inner/items/1", "/api/v2/outer/inner/items/2")
        assert await statuses(client, *paths) == [200, 200]
    assert sorted(await backend.keys()) == [
        "fa:t:{203.0.113.7}:GET:/v1/outer/inner/items/%7Bitem_id%7D:fw",
        "fa:t:{203.0.113.7}:GET:/v2/outer/inner/items/%7Bitem_id%7D:fw",
    ]


def test_a_websocket_under_a_parameterised_mount() -> None:
    import asyncio

    from starlette.routing import WebSocketRoute
    from starlette.testclient import TestClient
    from starlette.websockets import WebSocket

    from traffik import WebSocketThrottle

    backend = InMemoryBackend(namespace="ws")
    throttle = WebSocketThrottle("ws", rate="10/min", backend=backend)

    async def socket(websocket: WebSocket) -> None:
        await websocket.accept()
        await throttle.hit(websocket)
        await websocket.send_text("ok")
        await websocket.close()

    app = Starlette(routes=[Mount("/rooms/{house}", routes=[WebSocketRoute("/{room}", socket)])])
    client = TestClient(app)
    for house in ("a", "b"):
        with client.websocket_connect(f"/rooms/{house}/1") as websocket:
            assert websocket.receive_text() == "ok"
    assert asyncio.run(backend.keys()) == ["ws:ws:{testclient}:WS:/rooms/%7Bhouse%7D/%7Broom%7D:fw"]


async def test_the_same_router_under_two_hosts_is_one_route() -> None:
    # One router served under two domains: the throttle knows the route, not the host, so
    # the first host names the route's bucket, whichever domain a request came by.
    backend = InMemoryBackend(namespace="alias")
    throttle = HTTPThrottle("t", rate="2/min", backend=backend)
    api = Router(routes=[Route("/items", counted(throttle))])
    app = Starlette(routes=[Host("api.example.com", app=api), Host("api.example.org", app=api)])
    codes = []
    for host in ("api.example.org", "api.example.com", "api.example.org"):
        async with http(app, host) as client:
            codes += await statuses(client, "/items")
    assert codes == [200, 200, 429]
    assert await backend.keys() == ["alias:t:{203.0.113.7}:GET://api.example.com/items:fw"]


async def test_a_route_beside_a_host_is_not_under_it() -> None:
    backend = InMemoryBackend(namespace="beside")
    throttle = HTTPThrottle("t", rate="10/min", backend=backend)
    endpoint = counted(throttle)
    app = Starlette(
        routes=[
            Route("/health", endpoint),
            Host("api.example.com", app=Router(routes=[Route("/health", endpoint)])),
        ]
    )
    async with http(app, "api.example.com") as client:
        assert await statuses(client, "/health") == [200]
    assert await backend.keys() == ["beside:t:{203.0.113.7}:GET:/health:fw"]
