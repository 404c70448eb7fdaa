"""Rate-limit headers from several writers on one response: each field once, or as a list.

A response can get headers from a `ThrottleMiddleware`'s throttles, from the route's (a
dependency, a decorator), from a refusal (`Retry-After`) and from the endpoint (an
`HTTPException`'s headers, a copy of `get_headers`, as traffik 1.2 apps wrote).
`traffik.header_merge.merge_headers` puts them together; these tests drive it through every
integration.
"""

from __future__ import annotations

from typing import Any, cast

import httpx
import pytest
from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from traffik import (
    DEFAULT_HEADERS_ALWAYS,
    DEFAULT_HEADERS_THROTTLED,
    Header,
    HTTPThrottle,
    InMemoryBackend,
)
from traffik.fastapi import throttled as fastapi_throttled
from traffik.header_merge import merge_headers
from traffik.middleware import MiddlewareThrottle, ThrottleMiddleware
from traffik.throttles import throttled

pytestmark = pytest.mark.anyio

_RATE_LIMIT = ("ratelimit", "x-ratelimit", "retry-after")


def _client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://test")


async def _responses(throttle: HTTPThrottle, count: int) -> list[httpx.Response]:
    """`count` requests in turn to a FastAPI route with `throttle` as its dependency."""
    app = FastAPI()

    @app.get("/x", dependencies=[Depends(throttle)])
    async def x() -> dict[str, str]:
        return {}

    async with _client(app) as client:
        return [await client.get("/x") for _ in range(count)]


def _fields(response: httpx.Response) -> list[tuple[str, str]]:
    return [(k, v) for k, v in response.headers.multi_items() if k.startswith(_RATE_LIMIT)]


def _names(response: httpx.Response) -> list[str]:
    return [name for name, _ in _fields(response)]


# -- the merge itself ----------------------------------------------------------------------


def test_list_fields_are_added_single_fields_kept_and_names_compared_without_case() -> None:
    headers = [(b"RateLimit", b'"a";r=1;t=60'), (b"Retry-After", b"60")]
    merge_headers(
        headers,
        [(b"ratelimit", b'"a";r=1;t=60'), (b"ratelimit", b'"b";r=4;t=60'), (b"retry-after", b"0")],
    )
    assert headers == [
        (b"RateLimit", b'"a";r=1;t=60'),
        (b"Retry-After", b"60"),
        (b"ratelimit", b'"b";r=4;t=60'),
    ]


@pytest.mark.parametrize(("theirs", "ours", "expected"), [(b"4", b"1", b"1"), (b"1", b"4", b"1")])
def test_the_legacy_fields_speak_of_the_throttle_with_fewest_units_left(
    theirs: bytes, ours: bytes, expected: bytes
) -> None:
    headers = [(b"x-ratelimit-limit", b"5"), (b"x-ratelimit-remaining", theirs)]
    merge_headers(headers, [(b"x-ratelimit-limit", b"2"), (b"x-ratelimit-remaining", ours)])
    assert dict(headers)[b"x-ratelimit-remaining"] == expected and len(headers) == 2
    assert dict(headers)[b"x-ratelimit-limit"] == (b"2" if ours < theirs else b"5")


def test_the_legacy_fields_are_all_of_one_writer() -> None:
    """The limit of one throttle never stands beside the remaining units of another: the
    winner's legacy fields are sent, all of them, and none of the other's."""
    theirs = [(b"x-ratelimit-remaining", b"0"), (b"content-type", b"text/plain")]
    merge_headers(theirs, [(b"x-ratelimit-limit", b"10"), (b"x-ratelimit-remaining", b"9")])
    assert theirs == [(b"x-ratelimit-remaining", b"0"), (b"content-type", b"text/plain")]
    theirs = [(b"X-RateLimit-Reset", b"5"), (b"X-RateLimit-Remaining", b"7")]
    ours = [(b"x-ratelimit-limit", b"2"), (b"x-ratelimit-remaining", b"1")]
    merge_headers(theirs, ours)
    assert theirs == ours


def test_an_answer_s_own_headers_win_when_asked() -> None:
    headers = [(b"X-RateLimit-Remaining", b"9")]
    merge_headers(headers, [(b"x-ratelimit-remaining", b"0")], theirs_win=True)
    assert headers == [(b"X-RateLimit-Remaining", b"9")]


# -- through the integrations ----------------------------------------------------------------


@pytest.mark.parametrize("route_kind", ["depends", "decorator"])
async def test_a_middleware_and_a_route_throttle_send_the_legacy_fields_once(
    route_kind: str,
) -> None:
    """docs/guides/headers.md: the legacy fields are sent once, those of the throttle with
    the fewest units left; the IETF fields list both."""
    backend = InMemoryBackend()
    site = HTTPThrottle("site", rate="5/min", backend=backend, headers="both")
    route = HTTPThrottle("route", rate="2/min", backend=backend, headers="both")
    app = FastAPI()
    if route_kind == "depends":

        @app.get("/x", dependencies=[Depends(route)])
        async def x() -> list[int]:
            return []

    else:

        @app.get("/x")
        @fastapi_throttled(route)
        async def x_decorated() -> JSONResponse:
            return JSONResponse([])

    app.add_middleware(ThrottleMiddleware, middleware_throttles=[site])
    async with _client(app) as client:
        responses = [await client.get("/x") for _ in range(3)]
    for response, left in zip(responses, ["1", "0", "0"]):
        names = _names(response)
        for single in ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"):
            assert names.count(single) == 1, _fields(response)
        assert response.headers["x-ratelimit-limit"] == "2"
        assert response.headers["x-ratelimit-remaining"] == left
        assert names.count("ratelimit") == 2 and names.count("ratelimit-policy") == 2
    assert [r.status_code for r in responses] == [200, 200, 429]
    assert _names(responses[2]).count("retry-after") == 1


async def test_two_middlewares_send_the_legacy_fields_once() -> None:
    backend = InMemoryBackend()
    outer = HTTPThrottle("outer", rate="5/min", backend=backend, headers="legacy")
    inner = HTTPThrottle("inner", rate="3/min", backend=backend, headers="legacy")

    async def endpoint(request: Any) -> PlainTextResponse:
        return PlainTextResponse("ok")

    app = Starlette(
        routes=[Route("/x", endpoint)],
        middleware=[
            Middleware(ThrottleMiddleware, middleware_throttles=[outer]),
            Middleware(ThrottleMiddleware, middleware_throttles=[inner]),
        ],
    )
    async with _client(app) as client:
        response = await client.get("/x")
    assert _fields(response) == [
        ("x-ratelimit-limit", "3"),
        ("x-ratelimit-remaining", "2"),
        ("x-ratelimit-reset", "60"),
    ]


async def test_a_refusal_s_retry_after_is_the_one_sent() -> None:
    """A middleware throttle with traffik 1.2's always preset (its `Retry-After: 0` on an
    admitted request) and a route throttle that refuses: one `Retry-After`, the wait."""
    backend = InMemoryBackend()
    site = HTTPThrottle("site", rate="100/min", backend=backend, headers=DEFAULT_HEADERS_ALWAYS)
    login = HTTPThrottle("login", rate="1/min", backend=backend)
    app = FastAPI()

    @app.post("/login", dependencies=[Depends(login)])
    async def do_login() -> dict[str, str]:
        return {}

    app.add_middleware(ThrottleMiddleware, middleware_throttles=[site])
    async with _client(app) as client:
        await client.post("/login")
        refused = await client.post("/login")
    assert refused.status_code == 429
    assert refused.headers.get_list("retry-after") == ["60"]


@pytest.mark.parametrize(
    "custom",
    [
        {"Retry-After": Header("5", when="always")},
        {"retry-after": Header.RESET_SECONDS(when="throttled")},
        {"RETRY-AFTER": Header.RESET_MILLISECONDS(when="throttled")},
    ],
)
async def test_a_custom_retry_after_does_not_make_a_second_one(custom: dict[str, Any]) -> None:
    throttle = HTTPThrottle("custom", rate="1/min", backend=InMemoryBackend(), headers=custom)
    refused = (await _responses(throttle, 2))[1]
    assert refused.status_code == 429
    assert refused.headers.get_list("retry-after") == ["60"]


@pytest.mark.parametrize("spelling", ["X-RateLimit-Limit", "x-ratelimit-limit", "RateLimit"])
async def test_an_http_exception_s_own_headers_win_however_spelt(spelling: str) -> None:
    """docs/guides/decorators.md: the exception's own headers win."""
    throttle = HTTPThrottle("z", rate="5/min", backend=InMemoryBackend(), headers="both")
    app = FastAPI()

    @app.get("/x")
    @fastapi_throttled(throttle)
    async def x() -> None:
        raise HTTPException(503, headers={spelling: "mine"})

    async with _client(app) as client:
        response = await client.get("/x")
    assert response.status_code == 503
    values = response.headers.get_list(spelling)
    if spelling.lower() == "ratelimit":  # a list: the exception's, and the throttle's policy
        assert values == ["mine", '"z";r=4;t=60']
    else:
        assert values == ["mine"]


async def test_traffik_12_endpoints_copying_get_headers_send_each_field_once() -> None:
    """traffik 1.2 wrote no headers itself, so its apps copied `get_headers()` into their
    responses; ours writes them too, and each is sent once."""
    backend = InMemoryBackend(namespace="copy")
    by_decorator = HTTPThrottle("deco", rate="3/min", headers=DEFAULT_HEADERS_ALWAYS)
    by_middleware = HTTPThrottle("mw", rate="3/min", headers=DEFAULT_HEADERS_ALWAYS)

    @throttled(by_decorator)
    async def deco(request: Any) -> PlainTextResponse:
        return PlainTextResponse("ok", headers=dict(await by_decorator.get_headers(request)))

    async def mw(request: Any) -> PlainTextResponse:
        return PlainTextResponse("ok", headers=dict(await by_middleware.get_headers(request)))

    app = Starlette(
        routes=[Route("/deco", deco), Route("/mw", mw)],
        lifespan=backend.lifespan,
        middleware=[
            Middleware(
                ThrottleMiddleware,
                middleware_throttles=[MiddlewareThrottle(by_middleware, path="/mw")],
                backend=backend,
            )
        ],
    )
    async with app.router.lifespan_context(app), _client(app) as client:
        for path in ("/deco", "/mw"):
            response = await client.get(path)
            assert sorted(_names(response)) == [
                "retry-after",
                "x-ratelimit-limit",
                "x-ratelimit-remaining",
            ], (path, _fields(response))


@pytest.mark.parametrize("preset", [DEFAULT_HEADERS_ALWAYS, DEFAULT_HEADERS_THROTTLED])
async def test_the_last_allowed_response_tells_a_wait_not_zero(preset: Any) -> None:
    """`Header.RESET_SECONDS(when="throttled")` holds on the last allowed response (no units
    left): its value is the wait until the limit is whole again, as `get_headers` says,
    never 0, which would send the client back at once."""
    throttle = HTTPThrottle("last", rate="2/min", backend=InMemoryBackend(), headers=preset)
    responses = await _responses(throttle, 3)
    assert [r.status_code for r in responses] == [200, 200, 429]
    assert responses[1].headers["x-ratelimit-remaining"] == "0"
    assert responses[1].headers["retry-after"] == "60"


async def test_a_header_resolver_never_fails_the_response() -> None:
    """A resolver giving a number is written as digits; one that raises, or gives anything
    else, leaves its header out (logged), and the response is the decision's."""

    def broken(connection: Any, stat: Any, context: Any) -> str:
        raise RuntimeError("resolver bug")

    throttle = HTTPThrottle(
        "resolvers",
        rate="2/min",
        backend=InMemoryBackend(),
        headers={
            "X-Left": Header(cast(Any, lambda c, stat, ctx: stat.hits_remaining), when="always"),
            "X-Broken": Header(broken, when="always"),
            "X-Object": Header(cast(Any, lambda c, stat, ctx: object()), when="always"),
            "X-When": Header("v", when=cast(Any, lambda c, stat, ctx: 1 / 0)),
        },
    )
    responses = await _responses(throttle, 3)
    assert [r.status_code for r in responses] == [200, 200, 429]
    assert [r.headers.get("x-left") for r in responses] == ["1", "0", "0"]
    for response in responses:
        assert not {"x-broken", "x-object", "x-when"} & set(response.headers)


async def test_two_throttles_setting_headers_on_one_response_both_show() -> None:
    """`set_headers` adds a throttle's policies to the list fields another wrote."""
    backend = InMemoryBackend()
    burst = HTTPThrottle("burst", rate="2/s", backend=backend)
    daily = HTTPThrottle("daily", rate="100/day", backend=backend)

    async def endpoint(request: Any) -> PlainTextResponse:
        await burst.hit(request)
        await daily.hit(request)
        response = PlainTextResponse("ok")
        await burst.set_headers(response, request)
        await daily.set_headers(response, request)
        await daily.set_headers(response, request)  # (again: the same line is not repeated)
        return response

    app = Starlette(routes=[Route("/x", endpoint)])
    async with _client(app) as client:
        response = await client.get("/x")
    assert response.headers.get_list("ratelimit") == ['"burst";r=1;t=1', '"daily";r=99;t=86400']
    assert response.headers.get_list("ratelimit-policy") == [
        '"burst";q=2;w=1',
        '"daily";q=100;w=86400',
    ]


async def test_the_decorator_s_headers_reach_a_returned_response_beside_a_dependency() -> None:
    """docs/guides/decorators.md: the headers reach a `Response` the endpoint returns, also
    when a `Depends(throttle)` on the route wrote the same legacy fields first (the
    decorator's replaced them on FastAPI's injected response, and carried nothing)."""
    backend = InMemoryBackend()
    first = HTTPThrottle("a", rate="5/min", backend=backend, headers="legacy")
    decorating = HTTPThrottle("z", rate="2/min", backend=backend, headers="legacy")
    app = FastAPI()

    @app.get("/x", dependencies=[Depends(first)])
    @fastapi_throttled(decorating)
    async def x() -> JSONResponse:
        return JSONResponse([])

    async with _client(app) as client:
        responses = [await client.get("/x") for _ in range(3)]
    assert [r.status_code for r in responses] == [200, 200, 429]
    assert [_fields(r)[:3] for r in responses[:2]] == [
        [("x-ratelimit-limit", "2"), ("x-ratelimit-remaining", "1"), ("x-ratelimit-reset", "60")],
        [("x-ratelimit-limit", "2"), ("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "60")],
    ]
