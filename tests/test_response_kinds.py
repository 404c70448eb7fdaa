"""What a client receives through `ThrottleMiddleware` and the decorators, for every kind of
response (streams, files, redirects, 204/304, headers the app sets itself) and inside stacks
of Starlette's own middleware (CORS, GZip, trusted hosts, `BaseHTTPMiddleware`)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, Callable, Optional

import httpx
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route

from traffik import HTTPThrottle, InMemoryBackend
from traffik.middleware import ThrottleMiddleware
from traffik.outcomes import Outcome

pytestmark = pytest.mark.anyio

ORIGIN = "https://app.example"


def _client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


class _Exchange:
    """One request run against an ASGI app by hand, its messages read as they are sent (httpx's
    `ASGITransport` returns only once the app is done, so it cannot show a stream)."""

    def __init__(self, app: Any, path: str) -> None:
        self.messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._gone = asyncio.Event()
        self._asked = False
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": [(b"host", b"test")],
            "client": ("127.0.0.1", 5000),
            "server": ("test", 80),
        }
        self.task = asyncio.ensure_future(app(scope, self._receive, self.messages.put))

    async def _receive(self) -> dict[str, Any]:
        if not self._asked:
            self._asked = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self._gone.wait()
        return {"type": "http.disconnect"}

    async def next(self) -> dict[str, Any]:
        return await asyncio.wait_for(self.messages.get(), 2)

    async def finish(self) -> None:
        await asyncio.wait_for(self.task, 2)


def _recording(seen: list[Outcome], charge: Callable[[Outcome], bool]) -> Callable[..., bool]:
    def charge_when(outcome: Outcome) -> bool:
        seen.append(outcome)
        return charge(outcome)

    return charge_when


# --- streams -------------------------------------------------------------------------------


async def test_a_stream_through_the_middleware_is_not_buffered_and_settles_when_it_starts():
    """The first chunk reaches the client while the endpoint still streams, and a throttle
    with `charge_when` settles on the status sent then: a long stream that succeeded does
    not keep its unit for as long as it streams."""
    backend = InMemoryBackend()
    seen: list[Outcome] = []
    throttle = HTTPThrottle(
        "kinds-stream",
        rate="1/min",
        backend=backend,
        charge_when=_recording(seen, lambda outcome: outcome.status_code >= 400),
    )
    read_first = asyncio.Event()

    async def events(request: Request) -> StreamingResponse:
        async def stream() -> Any:
            yield b"data: one\n\n"
            await read_first.wait()
            yield b"data: two\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream")

    app = Starlette(
        routes=[Route("/events", events)],
        middleware=[Middleware(ThrottleMiddleware, middleware_throttles=[throttle])],
    )
    first = _Exchange(app, "/events")
    start = await first.next()
    assert start["status"] == 200
    assert (b"ratelimit", b'"kinds-stream";r=0;t=60') in start["headers"]
    assert (await first.next())["body"] == b"data: one\n\n"  # before the endpoint finished
    # While the first stream still runs, its 200 has already given its unit back.
    second = _Exchange(app, "/events")
    assert (await second.next())["status"] == 200
    assert [outcome.status_code for outcome in seen] == [200, 200]
    read_first.set()
    await first.finish()
    await second.finish()


def _messages(exc: BaseException) -> list[str]:
    """The messages of `exc`, or of the exceptions an exception group holds."""
    inner = getattr(exc, "exceptions", None)
    return [text for each in inner for text in _messages(each)] if inner else [str(exc)]


async def test_an_endpoint_failing_after_its_response_started_settles_on_the_status_sent():
    backend = InMemoryBackend()
    seen: list[Outcome] = []
    throttle = HTTPThrottle(
        "kinds-late-failure",
        rate="5/min",
        backend=backend,
        charge_when=_recording(seen, lambda outcome: True),
    )

    async def breaks(request: Request) -> StreamingResponse:
        async def stream() -> Any:
            yield b"partial"
            raise RuntimeError("the stream broke")

        return StreamingResponse(stream())

    async def fails(request: Request) -> Response:
        raise RuntimeError("before any response")

    app = Starlette(
        routes=[Route("/breaks", breaks), Route("/fails", fails)],
        middleware=[Middleware(ThrottleMiddleware, middleware_throttles=[throttle])],
    )
    exchange = _Exchange(app, "/breaks")
    assert (await exchange.next())["status"] == 200
    with pytest.raises(Exception) as broke:  # (in an exception group on older Starlette)
        await exchange.finish()
    assert "the stream broke" in _messages(broke.value)
    exchange = _Exchange(app, "/fails")
    with pytest.raises(RuntimeError, match="before any response"):
        await exchange.finish()
    assert [outcome.status_code for outcome in seen] == [200, 500]
    assert seen[1].exception is not None


# --- the headers of other kinds of response ------------------------------------------------


async def test_files_ranges_redirects_head_and_empty_answers_keep_their_shape(tmp_path: Path):
    backend = InMemoryBackend()
    throttle = HTTPThrottle("kinds-shapes", rate="100/min", backend=backend)
    page = tmp_path / "page.txt"
    page.write_bytes(b"0123456789" * 10)

    async def file(request: Request) -> FileResponse:
        return FileResponse(page)

    async def cookies(request: Request) -> Response:
        response = PlainTextResponse("ok")
        response.set_cookie("a", "1")
        response.set_cookie("b", "2")
        return response

    app = Starlette(
        routes=[
            Route("/file", file, methods=["GET", "HEAD"]),
            Route("/moved", lambda request: RedirectResponse("/file")),
            Route("/cookies", cookies),
            Route("/empty", lambda request: Response(status_code=204)),
            Route("/same", lambda request: Response(status_code=304, headers={"ETag": '"x"'})),
        ],
        middleware=[Middleware(ThrottleMiddleware, middleware_throttles=[throttle])],
    )
    async with _client(app) as client:
        ranged = await client.get("/file", headers={"Range": "bytes=0-4"})
        head = await client.head("/file")
        moved = await client.get("/moved")
        cookies_set = await client.get("/cookies")
        empty = await client.get("/empty")
        same = await client.get("/same")
    assert (ranged.status_code, ranged.content) == (206, b"01234")
    assert ranged.headers["content-range"] == "bytes 0-4/100"
    assert (head.status_code, head.content, head.headers["content-length"]) == (200, b"", "100")
    assert (moved.status_code, moved.headers["location"]) == (307, "/file")
    assert cookies_set.headers.get_list("set-cookie")[0].startswith("a=1")
    assert cookies_set.headers.get_list("set-cookie")[1].startswith("b=2")
    assert (empty.status_code, empty.content) == (204, b"")
    assert (same.status_code, same.content) == (304, b"")
    for response in (ranged, head, moved, cookies_set, empty, same):
        assert len(response.headers.get_list("ratelimit")) == 1
        assert len(response.headers.get_list("ratelimit-policy")) == 1


# --- middleware stacks ---------------------------------------------------------------------


def _stacked(throttle: HTTPThrottle, outside: list[Middleware], inside: list[Middleware]) -> Any:
    async def data(request: Request) -> PlainTextResponse:
        return PlainTextResponse("x" * 600)

    return Starlette(
        routes=[Route("/data", data)],
        middleware=[
            *outside,
            Middleware(ThrottleMiddleware, middleware_throttles=[throttle]),
            *inside,
        ],
    )


def _cors(**options: Any) -> Middleware:
    options.setdefault("allow_origins", [ORIGIN])
    return Middleware(CORSMiddleware, expose_headers=["Retry-After", "RateLimit"], **options)


@pytest.mark.parametrize("where", ["outside", "inside"])
async def test_a_429_carries_the_cors_headers_wherever_cors_middleware_sits(where: str):
    """A browser shows a 429 without CORS headers as a CORS error: the refusal carries what
    the app's `CORSMiddleware` adds, also when `ThrottleMiddleware` is outside it."""
    throttle = HTTPThrottle(f"kinds-cors-{where}", rate="1/min", backend=InMemoryBackend())
    cors = [_cors()]
    app = _stacked(throttle, cors if where == "outside" else [], cors if where == "inside" else [])
    async with _client(app) as client:
        allowed = await client.get("/data", headers={"Origin": ORIGIN})
        refused = await client.get("/data", headers={"Origin": ORIGIN})
        stranger = await client.get("/data", headers={"Origin": "https://evil.example"})
        no_origin = await client.get("/data")
    assert allowed.status_code == 200
    assert refused.status_code == 429
    for response in (allowed, refused):
        assert response.headers["access-control-allow-origin"] == ORIGIN
        assert response.headers["access-control-expose-headers"] == "Retry-After, RateLimit"
        assert response.headers["vary"] == "Origin"
    assert refused.headers["retry-after"] == "60"
    # what CORSMiddleware answers other origins, and requests without one
    assert stranger.status_code == 429
    assert "access-control-allow-origin" not in stranger.headers
    assert no_origin.status_code == 429
    assert "access-control-allow-origin" not in no_origin.headers


@pytest.mark.parametrize("origin", [None, ORIGIN, "https://evil.example"])
async def test_a_429_gets_what_cors_middleware_gives_the_same_request_allowed(
    origin: Optional[str],
) -> None:
    # Starlette 1.x's CORSMiddleware answers a request without `Origin` with `Vary: Origin`
    # too; the refusal, replayed only for requests with one, went without it.
    throttle = HTTPThrottle("kinds-cors-same", rate="1/min", backend=InMemoryBackend())
    app = _stacked(throttle, [], [_cors()])
    headers = {} if origin is None else {"Origin": origin}
    async with _client(app) as client:
        allowed = await client.get("/data", headers=headers)
        refused = await client.get("/data", headers=headers)
    assert (allowed.status_code, refused.status_code) == (200, 429)
    cors = ("vary", "access-control-allow-origin", "access-control-expose-headers")
    assert [refused.headers.get(name) for name in cors] == [
        allowed.headers.get(name) for name in cors
    ]


async def test_a_429_passes_every_cors_layer_inside_under_other_middleware():
    throttle = HTTPThrottle("kinds-cors-deep", rate="1/min", backend=InMemoryBackend())

    class Passing(BaseHTTPMiddleware):
        async def dispatch(
            self, request: Request, call_next: Callable[[Request], Awaitable[Response]]
        ) -> Response:
            return await call_next(request)

    inside = [
        Middleware(GZipMiddleware, minimum_size=10),
        Middleware(Passing),
        _cors(allow_origins=["*"], allow_credentials=True),
        Middleware(TrustedHostMiddleware, allowed_hosts=["test"]),
    ]
    app = _stacked(throttle, [], inside)
    async with _client(app) as client:
        allowed = await client.get("/data", headers={"Origin": ORIGIN})
        refused = await client.get("/data", headers={"Origin": ORIGIN})
    assert allowed.headers["content-encoding"] == "gzip"
    assert allowed.text == "x" * 600
    assert refused.status_code == 429
    # what CORSMiddleware added to the allowed answer (with credentials: the origin, or `*`
    # on older Starlette without a cookie)
    assert refused.headers["access-control-allow-origin"] in (ORIGIN, "*")
    for name in ("access-control-allow-origin", "access-control-allow-credentials"):
        assert refused.headers.get(name) == allowed.headers.get(name), name
    assert refused.headers["access-control-allow-credentials"] == "true"


@pytest.mark.parametrize("factory", [Starlette, FastAPI])
async def test_a_429_behind_gzip_and_base_http_middleware_arrives_whole(factory: Any):
    throttle = HTTPThrottle(
        f"kinds-gzip-{factory.__name__}", rate="1/min", backend=InMemoryBackend()
    )

    class Tagging(BaseHTTPMiddleware):
        async def dispatch(
            self, request: Request, call_next: Callable[[Request], Awaitable[Response]]
        ) -> Response:
            response = await call_next(request)
            response.headers["X-Tag"] = "seen"
            return response

    async def data(request: Request) -> PlainTextResponse:
        return PlainTextResponse("x" * 600)

    app = factory(
        routes=[Route("/data", data)],
        middleware=[
            Middleware(GZipMiddleware, minimum_size=10),
            Middleware(Tagging),
            Middleware(ThrottleMiddleware, middleware_throttles=[throttle]),
        ],
    )
    async with _client(app) as client:
        allowed = await client.get("/data", headers={"Accept-Encoding": "gzip"})
        refused = await client.get(
            "/data", headers={"Accept-Encoding": "gzip", "Accept": "text/html"}
        )
    assert allowed.headers["content-encoding"] == "gzip" and allowed.text == "x" * 600
    assert allowed.headers.get_list("ratelimit") == [f'"{throttle.uid}";r=0;t=60']
    assert refused.status_code == 429
    assert refused.headers["x-tag"] == "seen"
    assert refused.headers["retry-after"] == "60"
    if factory is FastAPI:  # its HTTPException handler answers JSON, whatever is accepted
        assert refused.json() == {"detail": "Too many requests. Retry in 60 seconds."}
    else:
        assert refused.text == "Too many requests. Retry in 60 seconds."
