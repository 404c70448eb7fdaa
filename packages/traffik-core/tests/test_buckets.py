"""Which bucket a request lands in: (scope, headers, Starlette version) -> identity and key.

The route cases run real Starlette and FastAPI apps, so the scope is whatever the installed
Starlette builds: CI runs this module on the newest Starlette and on a 0.4x release (which
sets no `scope["route"]`), and the expected keys are the same on both.
"""

from __future__ import annotations

from typing import Any, Callable

import httpx
import pytest
import starlette
from fastapi import APIRouter, Depends, FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket

from traffik import HTTPThrottle, InMemoryBackend, WebSocketThrottle, buckets
from traffik.buckets import route_path, route_template
from traffik.identity import ProxyHeaders, get_remote_address, remote_address
from traffik.keyparts import client_part, escape

pytestmark = pytest.mark.anyio

STARLETTE = starlette.__version__

# -- identity ------------------------------------------------------------------------------

PROXY = "10.0.0.1"
TRUSTED = ["10.0.0.0/24"]


def scope_with(peer: str | None, *headers: tuple[str, str]) -> dict[str, Any]:
    return {
        "type": "http",
        "client": (peer, 1234) if peer else None,
        "headers": [(k.lower().encode(), v.encode("latin-1")) for k, v in headers],
    }


IDENTITY_CASES = [
    # (case, peer, headers, proxy_headers, expected identity)
    ("no proxy: the peer", "203.0.113.9", [], ProxyHeaders.X_FORWARDED_FOR, "203.0.113.9"),
    (
        "untrusted peer: its headers are ignored",
        "203.0.113.9",
        [("X-Forwarded-For", "1.1.1.1")],
        ProxyHeaders.X_FORWARDED_FOR,
        "203.0.113.9",
    ),
    (
        "nginx appends the peer to X-Forwarded-For",
        PROXY,
        [("X-Forwarded-For", "203.0.113.7")],
        ProxyHeaders.X_FORWARDED_FOR,
        "203.0.113.7",
    ),
    (
        "a client-written Forwarded is not read when X-Forwarded-For is the header",
        PROXY,
        [("X-Forwarded-For", "203.0.113.7"), ("Forwarded", "for=1.1.1.1")],
        ProxyHeaders.X_FORWARDED_FOR,
        "203.0.113.7",
    ),
    (
        "a client-prepended X-Forwarded-For hop is not believed",
        PROXY,
        [("X-Forwarded-For", "6.6.6.6, 203.0.113.7")],
        ProxyHeaders.X_FORWARDED_FOR,
        "203.0.113.7",
    ),
    (
        "trusted hops are walked through",
        PROXY,
        [("X-Forwarded-For", "203.0.113.7, 10.0.0.5")],
        ProxyHeaders.X_FORWARDED_FOR,
        "203.0.113.7",
    ),
    (
        "an unparseable hop ends the walk at the nearest trusted peer",
        PROXY,
        [("X-Forwarded-For", "9.9.9.9, unknown")],
        ProxyHeaders.X_FORWARDED_FOR,
        PROXY,
    ),
    (
        "an unparseable hop behind a trusted hop: that trusted hop",
        PROXY,
        [("X-Forwarded-For", "9.9.9.9, garbage, 10.0.0.7")],
        ProxyHeaders.X_FORWARDED_FOR,
        "10.0.0.7",
    ),
    (
        "every hop trusted: the leftmost trusted one",
        PROXY,
        [("X-Forwarded-For", "10.0.0.3, 10.0.0.4")],
        ProxyHeaders.X_FORWARDED_FOR,
        "10.0.0.3",
    ),
    (
        "several X-Forwarded-For lines form one chain",
        PROXY,
        [("X-Forwarded-For", "6.6.6.6"), ("X-Forwarded-For", "203.0.113.7")],
        ProxyHeaders.X_FORWARDED_FOR,
        "203.0.113.7",
    ),
    (
        "ports and IPv6 brackets",
        PROXY,
        [("X-Forwarded-For", "[2001:db8::1]:4711")],
        ProxyHeaders.X_FORWARDED_FOR,
        "2001:db8::/64",  # an IPv6 client is its /64 (traffik.identity.set_ipv6_prefix)
    ),
    (
        "Forwarded when chosen, walked right to left",
        PROXY,
        [("Forwarded", 'for=6.6.6.6, for="203.0.113.7:80";proto=https')],
        ProxyHeaders.FORWARDED,
        "203.0.113.7",
    ),
    (
        "Forwarded chosen: X-Forwarded-For is not read",
        PROXY,
        [("Forwarded", "for=203.0.113.7"), ("X-Forwarded-For", "1.1.1.1")],
        ProxyHeaders.FORWARDED,
        "203.0.113.7",
    ),
    (
        "an obfuscated Forwarded hop ends the walk",
        PROXY,
        [("Forwarded", "for=203.0.113.7, for=_hidden")],
        ProxyHeaders.FORWARDED,
        PROXY,
    ),
    (
        "X-Real-IP from a trusted proxy",
        PROXY,
        [("X-Real-IP", "203.0.113.7"), ("X-Forwarded-For", "1.1.1.1")],
        ProxyHeaders.X_REAL_IP,
        "203.0.113.7",
    ),
    (
        "the header absent: the trusted peer",
        PROXY,
        [],
        ProxyHeaders.X_FORWARDED_FOR,
        PROXY,
    ),
    ("no peer at all", None, [("X-Forwarded-For", "1.1.1.1")], ProxyHeaders.X_FORWARDED_FOR, None),
]


@pytest.mark.parametrize(
    ("peer", "headers", "proxy_headers", "expected"),
    [case[1:] for case in IDENTITY_CASES],
    ids=[case[0] for case in IDENTITY_CASES],
)
def test_identity(
    peer: str | None, headers: list[tuple[str, str]], proxy_headers: ProxyHeaders, expected: str
) -> None:
    scope = scope_with(peer, *headers)
    found = get_remote_address(scope, trusted_proxies=TRUSTED, proxy_headers=proxy_headers)
    assert found == expected
    request = Request(scope)
    assert remote_address(TRUSTED, proxy_headers)(request) == (expected or "__anonymous__")


def test_a_spoofed_header_never_changes_the_bucket() -> None:
    identify = remote_address([PROXY])
    seen = {
        identify(Request(scope_with(PROXY, ("X-Forwarded-For", "203.0.113.7"), spoof)))
        for spoof in [("Forwarded", f"for=1.1.1.{n}") for n in range(20)]
        + [("X-Real-IP", f"2.2.2.{n}") for n in range(20)]
        + [("X-Forwarded-For", f"3.3.3.{n}, 203.0.113.7") for n in range(20)]
    }
    assert seen == {"203.0.113.7"}


def test_huge_headers_are_read_from_the_right_within_bounds() -> None:
    chain = ", ".join(f"6.6.6.{n % 250}" for n in range(20_000)) + ", 203.0.113.7"
    scope = scope_with(PROXY, ("X-Forwarded-For", chain))
    assert get_remote_address(scope, trusted_proxies=TRUSTED) == "203.0.113.7"
    trusted_chain = ", ".join(["10.0.0.9"] * 5_000)
    scope = scope_with(PROXY, ("X-Forwarded-For", trusted_chain))
    # Past the hop and byte bounds the walk stops at the nearest trusted hop it read.
    assert get_remote_address(scope, trusted_proxies=TRUSTED) == "10.0.0.9"


@pytest.mark.parametrize("flags", [ProxyHeaders.ALL, ProxyHeaders.FORWARDED | 2])
def test_several_proxy_headers_are_refused(flags: ProxyHeaders) -> None:
    with pytest.raises(ValueError, match="name the one header your proxy sets"):
        remote_address([PROXY], flags)


# -- key parts ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ident", "part"),
    [
        ("1.2.3.4", "1.2.3.4"),
        ("2001:db8::1", "2001%3Adb8%3A%3A1"),
        ("a:b", "a%3Ab"),
        ("{tag}", "%7Btag%7D"),
        ("50%", "50%25"),
        ("two words\r\n", "two%20words%0D%0A"),
        ("user-\ud800", "user-%uD800"),
        (5, "%int=5"),
        (None, "__anonymous__"),
        (b"x", "%bytes=78"),
        (1.5, "%float=1.5"),
    ],
)
def test_client_parts(ident: Any, part: str) -> None:
    assert client_part(ident) == part
    part.encode("utf-8")  # every part is valid UTF-8


def test_distinct_identifiers_never_share_a_part() -> None:
    idents: list[Any] = [
        5,
        "5",
        "%int=5",
        None,
        "None",
        b"x",
        "b'x'",
        "%bytes=78",
        "a:b",
        "a%3Ab",
        True,
        "True",
        1,
        1.0,
        "user-\ud800",
        "user-%uD800",
    ]
    parts = [client_part(ident) for ident in idents]
    assert len(set(parts)) == len(parts)


def test_escape_keeps_distinct_texts_distinct() -> None:
    texts = ["", "%", "%25", ":", "%3A", "{", "}", " ", "\x00", "\x7f", "\udfff", "a:b:c"]
    assert len({escape(t) for t in texts}) == len(texts)
    assert all(":" not in escape(t) and "{" not in escape(t) for t in texts)


def test_a_long_identifier_keeps_a_short_part_of_its_own() -> None:
    long = "k:" * 5_000  # 10 KB, and every ':' escaped three times over
    part = client_part(long)
    assert len(part) <= 200 and part.startswith("k%3Ak%3A")
    assert client_part(long) == part  # the same client every time
    others = [long + "x", long[:-1], "x" + long, "k:" * 4_999 + "k;", b"k:" * 5_000]
    assert len({part, *(client_part(other) for other in others)}) == 1 + len(others)
    shorts = ["k:" * 64, escape("k:" * 64), "%%" + part]  # what a short text can spell
    assert part not in {client_part(short) for short in shorts}
    assert ":" not in part and "{" not in part and " " not in part


def test_long_identifiers_are_not_kept_by_the_escaping_cache() -> None:
    import gc
    import tracemalloc

    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(2_000):  # a client sending 2000 distinct 8 KB API keys
            client_part(f"{n}:" + ":" * 8_000)
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert kept < 2_000_000  # it kept every text and its 24 KB escape: about 60 MB


async def test_a_10kb_api_key_is_counted_under_a_short_key() -> None:
    backend = InMemoryBackend(namespace="long")
    throttle = HTTPThrottle(
        "long", rate="1/min", backend=backend, identifier=lambda r: r.headers["x-api-key"]
    )
    app = FastAPI()

    @app.get("/items", dependencies=[Depends(throttle)])
    async def items() -> list[Any]:
        return []

    keys = ["a:" * 5_000, "a:" * 4_999 + "b:"]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        codes = [
            (await http.get("/items", headers={"x-api-key": key})).status_code
            for key in (keys[0], keys[1], keys[0], keys[1])
        ]
    assert codes == [200, 200, 429, 429]
    stat = await throttle.stat(keys[0], path="/items")
    assert stat is not None and stat.hits_remaining == 0 and len(str(stat.key)) < 300


# -- route templates through real apps --------------------------------------------------


async def ok(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


async def other(request: Request) -> PlainTextResponse:
    return PlainTextResponse("other")


def throttled_endpoint(throttle: HTTPThrottle) -> Callable[[Request], Any]:
    async def endpoint(request: Request) -> PlainTextResponse:
        await throttle.hit(request)
        return PlainTextResponse("ok")

    return endpoint


def starlette_routes(throttle: HTTPThrottle) -> list[Any]:
    endpoint = throttled_endpoint(throttle)
    inner = Starlette(routes=[Route("/items/{item_id}", endpoint)])
    return [
        Route("/items/{item_id}", endpoint),
        Route("/things/{thing_id:int}", endpoint),
        Mount("/m", routes=[Route("/items/{item_id}", endpoint)]),
        Mount("/outer", routes=[Mount("/inner", routes=[Route("/items/{item_id}", endpoint)])]),
        Mount("/sub", app=inner),
        Mount("/t/{tenant}", routes=[Route("/items/{item_id}", endpoint)]),
    ]


STARLETTE_ROUTE_CASES = [
    ("/items/1", "GET:/items/%7Bitem_id%7D"),
    ("/items/2", "GET:/items/%7Bitem_id%7D"),
    ("/things/3", "GET:/things/%7Bthing_id%3Aint%7D"),
    ("/m/items/1", "GET:/m/items/%7Bitem_id%7D"),
    ("/outer/inner/items/1", "GET:/outer/inner/items/%7Bitem_id%7D"),
    ("/sub/items/1", "GET:/sub/items/%7Bitem_id%7D"),
    # a mount path with parameters counts as its template (a client naming a new tenant
    # opens no budget)
    ("/t/acme/items/1", "GET:/t/%7Btenant%7D/items/%7Bitem_id%7D"),
]


@pytest.mark.parametrize(("path", "route"), STARLETTE_ROUTE_CASES)
async def test_starlette_route_keys(path: str, route: str) -> None:
    backend = InMemoryBackend(namespace="keys")
    throttle = HTTPThrottle("t", rate="10/min", backend=backend)
    app = Starlette(routes=starlette_routes(throttle))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as client:
        assert (await client.get(path)).status_code == 200
    assert await backend.keys() == [f"keys:t:{{127.0.0.1}}:{route}:fw"]


async def test_one_endpoint_on_two_routes_keeps_each_route() -> None:
    backend = InMemoryBackend(namespace="keys")
    throttle = HTTPThrottle("t", rate="10/min", backend=backend)
    endpoint = throttled_endpoint(throttle)
    app = Starlette(routes=[Route("/a/{x}", endpoint), Route("/b/{y}", endpoint)])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as client:
        await client.get("/a/1")
        await client.get("/b/1")
    assert sorted(await backend.keys()) == [
        "keys:t:{127.0.0.1}:GET:/a/%7Bx%7D:fw",
        "keys:t:{127.0.0.1}:GET:/b/%7By%7D:fw",
    ]


async def test_per_route_budgets_share_a_template_and_never_cross_mounts() -> None:
    backend = InMemoryBackend(namespace="budget")
    throttle = HTTPThrottle("t", rate="2/min", backend=backend)
    app = Starlette(routes=starlette_routes(throttle))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as client:
        top = [(await client.get(f"/items/{n}")).status_code for n in (1, 2, 3)]
        mounted = [(await client.get(f"/m/items/{n}")).status_code for n in (1, 2, 3)]
    assert top == [200, 200, 429]  # /items/1, /items/2, /items/3 share one budget
    assert mounted == [200, 200, 429]  # the mount has its own


async def test_head_counts_in_the_budget_of_get() -> None:
    # Starlette serves HEAD through a GET route's endpoint: one budget, not two.
    backend = InMemoryBackend(namespace="head")
    throttle = HTTPThrottle("t", rate="2/min", backend=backend)
    app = Starlette(routes=[Route("/x", throttled_endpoint(throttle))])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as client:
        statuses = [(await client.get("/x")).status_code, (await client.head("/x")).status_code]
        statuses.append((await client.head("/x")).status_code)
    assert statuses == [200, 200, 429]
    assert await backend.keys() == ["head:t:{127.0.0.1}:GET:/x:fw"]


async def test_the_case_of_a_method_never_opens_another_budget() -> None:
    # A mounted app that reads methods case-blind (WSGI frameworks upper-case them) serves
    # `get` as GET: behind the middleware, `get` and `Get` spend GET's budget.
    from traffik.middleware import ThrottleMiddleware

    async def case_blind(scope: Any, receive: Any, send: Any) -> None:
        await PlainTextResponse(scope["method"].upper())(scope, receive, send)

    site = HTTPThrottle("case", rate="2/min", backend=InMemoryBackend())
    app = ThrottleMiddleware(case_blind, middleware_throttles=[site])

    async def status(method: str) -> int:  # raw ASGI: httpx would upper-case the method
        scope = {**scope_with("203.0.113.7"), "method": method, "path": "/items"}
        sent: list[Any] = []

        async def receive() -> Any:
            return {"type": "http.request", "body": b""}

        async def send(message: Any) -> None:
            sent.append(message)

        await app(scope, receive, send)
        return int(sent[0]["status"])

    assert [await status(method) for method in ("GET", "get", "Get", "head")] == [
        200,
        200,
        429,
        429,
    ]


def test_the_route_parts_of_one_route_are_bounded() -> None:
    # A mount path with parameters gives each value its own part: the client picks the values,
    # so what is remembered per route must stay bounded.
    from traffik import buckets

    route = Route("/items/{item_id}", ok)
    for tenant in range(buckets._PARTS_MAX + 10):
        root = f"/t/{tenant}"
        scope = {"type": "http", "method": "GET", "route": route}
        scope.update(root_path=root, app_root_path="", path=root + "/items/1")
        assert buckets.route_part(scope) == f"GET:{escape(root)}/items/%7Bitem_id%7D"
    assert len(buckets._PARTS[id(route)][1]) <= buckets._PARTS_MAX


def fastapi_app(throttle: HTTPThrottle) -> FastAPI:
    app = FastAPI()
    router = APIRouter(prefix="/v1")

    @router.get("/items/{item_id}", dependencies=[Depends(throttle)])
    async def item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    app.include_router(router)
    sub = FastAPI()

    @sub.get("/items/{item_id}", dependencies=[Depends(throttle)])
    async def sub_item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    app.mount("/sub", sub)
    return app


@pytest.mark.parametrize(
    ("path", "route"),
    [
        ("/v1/items/1", "GET:/v1/items/%7Bitem_id%7D"),
        ("/sub/items/1", "GET:/sub/items/%7Bitem_id%7D"),
    ],
)
async def test_fastapi_route_keys(path: str, route: str) -> None:
    backend = InMemoryBackend(namespace="keys")
    throttle = HTTPThrottle("t", rate="10/min", backend=backend)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=fastapi_app(throttle)), base_url="http://test"
    ) as client:
        assert (await client.get(path)).status_code == 200
    assert await backend.keys() == [f"keys:t:{{127.0.0.1}}:{route}:fw"]


def test_websocket_route_keys() -> None:
    backend = InMemoryBackend(namespace="keys")
    throttle = WebSocketThrottle("ws", rate="10/min", backend=backend)

    async def socket(websocket: WebSocket) -> None:
        await websocket.accept()
        await throttle.hit(websocket)
        await websocket.send_text("ok")
        await websocket.close()

    app = Starlette(routes=[Mount("/m", routes=[WebSocketRoute("/rooms/{room}", socket)])])
    with TestClient(app).websocket_connect("/m/rooms/1") as websocket:
        assert websocket.receive_text() == "ok"
    import asyncio

    keys = asyncio.run(backend.keys())
    assert keys == ["keys:ws:{testclient}:WS:/m/rooms/%7Broom%7D:fw"]


@pytest.mark.parametrize(
    ("scope", "expected"),
    [
        ({"path": "/v1/items/1", "root_path": "/v1"}, "/items/1"),
        ({"path": "/v1", "root_path": "/v1"}, ""),
        ({"path": "/v10/items", "root_path": "/v1"}, "/v10/items"),
        ({"path": "/items", "root_path": ""}, "/items"),
    ],
)
def test_route_path(scope: dict[str, Any], expected: str) -> None:
    assert route_path(scope) == expected


def test_a_server_root_path_is_not_a_mount() -> None:
    async def ok(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    scope = {
        "type": "http",
        "path": "/api/items",
        "root_path": "/api",
        "route": Route("/items", ok),
    }
    assert route_template(scope) == "/items"


async def test_a_routers_mount_prefix_is_worked_out_once_per_route(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`mount_prefix` walks the app's routes once per route and mount path, then answers
    from memory: also for a router that cannot be hashed (Starlette's from 1.0 on)."""
    walks = []
    walk = buckets._declared_prefix

    def counted(*args: Any) -> Any:
        walks.append(args[2])
        return walk(*args)

    monkeypatch.setattr(buckets, "_declared_prefix", counted)

    async def endpoint(request: Request) -> PlainTextResponse:
        return PlainTextResponse(buckets.mount_prefix(request.scope))

    app = Starlette(routes=[Mount("/t/{tenant}", routes=[Route("/items/{item_id}", endpoint)])])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as client:
        answers = [(await client.get("/t/acme/items/0")).text]
        first = list(walks)
        answers += [(await client.get(f"/t/acme/items/{n}")).text for n in (1, 2)]
    assert answers == ["/t/{tenant}"] * 3
    assert first and walks == first  # (the first request's walks, none since)
