"""Getting around a limit, or hurting the service through it, as an attacker would try.

Each test drives a real app (Starlette or FastAPI through httpx's `ASGITransport`) the way a
client could, and checks that the limit holds: a path the router still serves, a method the
client made up, a request dressed as a CORS preflight, an address written another way, a
proxy on a unix socket, identifiers made to collide; and that a refusal tells the client
nothing about the store.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

import httpx
import pytest
from fastapi import Depends, FastAPI
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from traffik import HTTPThrottle, InMemoryBackend
from traffik.identity import grouped_address, remote_address
from traffik.middleware import MiddlewareThrottle, ThrottleMiddleware, glob
from traffik.rules import PathPattern

pytestmark = pytest.mark.anyio


def _client(app: Any, peer: str = "203.0.113.7") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(peer, 5000))
    return httpx.AsyncClient(transport=transport, base_url="http://test")


async def _endpoint(request: Any) -> PlainTextResponse:
    return PlainTextResponse("served")


def _guarded(
    pattern: Optional[PathPattern], routes: Sequence[Any]
) -> tuple[Starlette, InMemoryBackend]:
    backend = InMemoryBackend()
    throttle = HTTPThrottle("guarded", rate="1/min", backend=backend)
    guard = MiddlewareThrottle(throttle, path=pattern)
    app = Starlette(
        routes=list(routes),
        middleware=[Middleware(ThrottleMiddleware, middleware_throttles=[guard])],
    )
    return app, backend


# -- paths the router serves ------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "first", "variant"),
    [
        (glob("/api/items"), "/api/items", "/api/items%0A"),
        (glob("/api/**"), "/api/1/edit", "/api/1%0A/edit"),
        (glob("/api/*/edit"), "/api/1/edit", "/api/1%0A2/edit"),
        ("/api/**/edit", "/api/1/edit", "/api/1%0A/edit"),
    ],
    ids=["glob-exact", "glob-double-star", "glob-star", "regex-double-star"],
)
async def test_a_newline_in_the_path_does_not_escape_a_path_rule(
    pattern: PathPattern, first: str, variant: str
) -> None:
    # Starlette routes `/api/items\n` to `/api/items` (its `$` matches before a final
    # newline) and a `{param}` takes a newline: a rule must count what reaches the route.
    routes = [Route("/api/items", _endpoint), Route("/api/{item}/edit", _endpoint)]
    app, _ = _guarded(pattern, routes)
    async with _client(app) as http:
        allowed = await http.get(first)
        sneaky = await http.get(variant)
    assert allowed.status_code == 200
    assert sneaky.status_code == 429, f"{variant!r} reached the route uncounted"


async def test_a_newline_in_the_path_does_not_escape_an_app_wide_throttle_on_a_mount() -> None:
    routes = [Mount("/api", routes=[Route("/items", _endpoint)])]
    app, _ = _guarded(glob("/api/items"), routes)
    async with _client(app) as http:
        codes = [(await http.get(path)).status_code for path in ("/api/items", "/api/items%0A")]
    assert codes == [200, 429]


# -- CORS preflights --------------------------------------------------------------------

PREFLIGHT = {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}


async def test_a_request_dressed_as_a_preflight_that_reaches_the_endpoint_is_counted() -> None:
    # No CORSMiddleware answers it: the OPTIONS request reaches the endpoint, which serves it.
    app, _ = _guarded(None, [Route("/rpc", _endpoint, methods=["GET", "POST", "OPTIONS"])])
    async with _client(app) as http:
        answers = [await http.options("/rpc", headers=PREFLIGHT) for _ in range(3)]
    assert [r.status_code for r in answers] == [200, 429, 429]


async def test_a_preflight_a_cors_middleware_answers_is_not_counted() -> None:
    from starlette.middleware.cors import CORSMiddleware

    backend = InMemoryBackend()
    throttle = HTTPThrottle("cors", rate="1/min", backend=backend)
    app = Starlette(
        routes=[Route("/rpc", _endpoint, methods=["GET", "POST", "OPTIONS"])],
        middleware=[
            Middleware(ThrottleMiddleware, middleware_throttles=[throttle]),
            Middleware(CORSMiddleware, allow_origins=["*"], allow_methods=["*"]),
        ],
    )
    async with _client(app) as http:
        preflights = [await http.options("/rpc", headers=PREFLIGHT) for _ in range(3)]
        post = await http.post("/rpc", headers={"Origin": PREFLIGHT["Origin"]})
    assert [r.status_code for r in preflights] == [200, 200, 200]
    assert "served" not in {r.text for r in preflights}  # CORSMiddleware answered them
    assert post.status_code == 200
    assert await backend.keys() == ["inmemory:cors:{203.0.113.7}:POST:/**:fw"]


# -- methods ----------------------------------------------------------------------------


async def test_made_up_methods_share_one_bucket() -> None:
    # A mounted ASGI app serves any method: a method the client makes up per request must
    # not open a budget per method, nor a store key per request.
    async def any_method(scope: Any, receive: Any, send: Any) -> None:
        await PlainTextResponse("served")(scope, receive, send)

    app, backend = _guarded(None, [Mount("/legacy", app=any_method)])
    async with _client(app) as http:
        codes = [
            (await http.request(method, "/legacy/x")).status_code
            for method in ("FOO", "BAR", "BAZ", "QUX")
        ]
    assert codes == [200, 429, 429, 429]
    assert len(await backend.keys()) == 1


async def test_the_standard_methods_still_count_apart() -> None:
    app, _ = _guarded(None, [Route("/x", _endpoint, methods=["GET", "POST", "DELETE"])])
    async with _client(app) as http:
        codes = [
            (await http.request(method, "/x")).status_code
            for method in ("GET", "POST", "DELETE", "GET", "HEAD")
        ]
    assert codes == [200, 200, 200, 429, 429]  # HEAD spends GET's budget


async def test_a_route_of_made_up_methods_counts_them_in_one_bucket() -> None:
    throttle = HTTPThrottle("webdav", rate="1/min", backend=InMemoryBackend())
    app = FastAPI()

    @app.api_route("/dav", methods=["PROPFIND", "MKCOL", "LOCK"], dependencies=[Depends(throttle)])
    async def dav() -> str:
        return "ok"

    async with _client(app) as http:
        codes = [(await http.request(m, "/dav")).status_code for m in ("PROPFIND", "MKCOL")]
    assert codes == [200, 429]
    assert await throttle.stat("203.0.113.7", path="/dav", method="LOCK") is not None


# -- addresses --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("peer", "counted_as"),
    [
        ("64:ff9b::203.0.113.7", "203.0.113.7"),
        ("64:ff9b::cb00:7109", "203.0.113.9"),
        ("64:FF9B:0:0:0:0:CB00:7109", "203.0.113.9"),
    ],
)
def test_a_nat64_address_counts_as_the_ipv4_client_it_carries(peer: str, counted_as: str) -> None:
    assert grouped_address(peer) == counted_as


async def test_clients_behind_nat64_do_not_share_one_bucket() -> None:
    # Behind SIIT-DC or a NAT64 in front of an IPv6-only server, every IPv4 client arrives
    # as 64:ff9b::a.b.c.d: grouped by /64 they would all be one client.
    throttle = HTTPThrottle("nat64", rate="1/min", backend=InMemoryBackend())
    app = FastAPI()

    @app.get("/x", dependencies=[Depends(throttle)])
    async def x() -> str:
        return "ok"

    codes = []
    for peer in ("64:ff9b::203.0.113.7", "64:ff9b::198.51.100.9", "64:ff9b::203.0.113.7"):
        async with _client(app, peer=peer) as http:
            codes.append((await http.get("/x")).status_code)
    assert codes == [200, 200, 429]


# -- behind a proxy on a unix socket ----------------------------------------------------


def _behind_a_unix_socket(identifier: Any) -> FastAPI:
    throttle = HTTPThrottle("uds", rate="1/min", backend=InMemoryBackend(), identifier=identifier)
    app = FastAPI()

    @app.get("/x", dependencies=[Depends(throttle)])
    async def x() -> str:
        return "ok"

    return app


async def _codes_on_a_unix_socket(app: Any, forwarded: Sequence[str]) -> list[int]:
    # A server on a unix socket gives no peer address (`scope["client"]` is None).
    transport = httpx.ASGITransport(app=app, client=None)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        return [
            (await http.get("/x", headers={"X-Forwarded-For": value})).status_code
            for value in forwarded
        ]


async def test_clients_of_a_proxy_on_a_unix_socket_are_told_apart() -> None:
    # nginx in front of `uvicorn --uds`: only processes of the host reach the socket, so
    # its header is the proxy's; without it every client is the one anonymous client.
    app = _behind_a_unix_socket(remote_address(["unix"]))
    forwarded = ["203.0.113.7", "198.51.100.9", "203.0.113.7"]
    assert await _codes_on_a_unix_socket(app, forwarded) == [200, 200, 429]


async def test_behind_a_unix_socket_the_client_still_cannot_pick_its_address() -> None:
    app = _behind_a_unix_socket(remote_address(["unix", "10.0.0.0/8"]))
    # nginx appends the address it saw: what the client wrote is further left.
    forwarded = [f"192.0.2.{n}, 203.0.113.7" for n in range(3)] + ["10.0.0.5, 203.0.113.7"]
    assert await _codes_on_a_unix_socket(app, forwarded) == [200, 429, 429, 429]


async def test_a_unix_socket_is_not_trusted_unless_named() -> None:
    app = _behind_a_unix_socket(remote_address(["10.0.0.0/8"]))
    assert await _codes_on_a_unix_socket(app, ["203.0.113.7", "198.51.100.9"]) == [200, 429]


# -- one client's key never reaches another's, on every store ----------------------------

HOSTILE_IDENTIFIERS = [
    "a",
    "a:b",
    "a%3Ab",
    "{a}",
    "a b",
    "a_b",
    "a\r\nset x 0 0 1",
    "a#b",
    "\u00e9",
    "e\u0301",
    "x" * 300,
    "x" * 299 + "y",
    "x" * 64 + "%%" + "0" * 64,
]


@pytest.fixture(params=["memory", "redis", "memcached"])
def store_url(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return "memory://hostile"
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


async def test_hostile_identifiers_never_share_a_bucket(store_url: str) -> None:
    from traffik.backends import from_url

    backend = from_url(store_url, namespace="hostile", persistent=False)
    throttle = HTTPThrottle(
        "hostile",
        rate="1/min",
        backend=backend,
        identifier=lambda request: HOSTILE_IDENTIFIERS[int(request.headers["x-n"])],
    )
    app = FastAPI()

    @app.get("/x", dependencies=[Depends(throttle)])
    async def x() -> str:
        return "ok"

    try:
        async with _client(app) as http:
            rounds = []
            for _ in range(2):  # (no `await` in a nested comprehension: Python 3.9 refuses it)
                rounds.append(
                    [
                        (await http.get("/x", headers={"x-n": str(n)})).status_code
                        for n in range(len(HOSTILE_IDENTIFIERS))
                    ]
                )
    finally:
        await backend.reset()
        await backend.close()
    assert rounds == [[200] * len(HOSTILE_IDENTIFIERS), [429] * len(HOSTILE_IDENTIFIERS)]


# -- what a refused client learns ---------------------------------------------------------


@pytest.mark.parametrize("on_error", ["throttle", "raise"])
async def test_a_failing_store_tells_the_client_nothing_about_it(on_error: str) -> None:
    pytest.importorskip("traffik.backends.redis")
    from traffik.backends import from_url
    from traffik.testing.servers import free_port

    url = f"redis://admin:s3cret-pw@127.0.0.1:{free_port()}/0"  # nothing listens there
    backend = from_url(url, namespace="private-ns", on_error=on_error, connect_timeout=0.5)
    throttle = HTTPThrottle("public-name", rate="1/min", backend=backend)
    app = FastAPI()

    @app.get("/x", dependencies=[Depends(throttle)])
    async def x() -> str:
        return "ok"

    guarded = FastAPI()
    guarded.add_middleware(
        ThrottleMiddleware,
        middleware_throttles=[HTTPThrottle("public-too", rate="1/min", backend=backend)],
    )

    @guarded.get("/x")
    async def y() -> str:
        return "ok"

    told = []
    for served in (app, guarded):
        transport = httpx.ASGITransport(app=served, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            answer = await http.get("/x")
        told.append((answer.status_code, f"{answer.text} {answer.headers}".lower()))
    await backend.close()
    assert {status for status, _ in told} == ({429} if on_error == "throttle" else {500})
    for _, text in told:
        for secret in ("s3cret", "admin", "private-ns", "127.0.0.1", "redis", "traceback"):
            assert secret not in text
