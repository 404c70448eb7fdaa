"""A FastAPI app written as users write it, under `mypy --strict`: every form must check clean."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, Union

from fastapi import APIRouter, Depends, FastAPI
from starlette.applications import Starlette
from starlette.endpoints import HTTPEndpoint
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.websockets import WebSocket

from traffik import (
    EXEMPTED,
    Bypass,
    Decision,
    HTTPThrottle,
    InMemoryBackend,
    MiddlewareThrottle,
    Rate,
    Rule,
    ThrottleBackend,
    ThrottleExceptionInfo,
    ThrottleMiddleware,
    WebSocketThrottle,
    throttled,
)
from traffik.backends import from_url
from traffik.decorators import throttled as decorators_throttled
from traffik.error_handlers import fallback
from traffik.events import DecisionEvent, add_observer
from traffik.exceptions import ConnectionThrottled
from traffik.fastapi import document_rate_limits
from traffik.fastapi import throttled as fastapi_throttled
from traffik.headers import Header
from traffik.quotas import QuotaContext
from traffik.strategies import SlidingWindowCounter, TokenBucket
from traffik.testing import fresh_backend, override_rate, throttle_disabled
from traffik.throttles import MiddlewareThrottle as Traffik12MiddlewareThrottle

backend = InMemoryBackend(namespace="app")
remote: ThrottleBackend[Any, Any] = from_url("memory://", namespace="remote")
app = FastAPI(lifespan=backend.lifespan)
router = APIRouter()


async def api_key(request: Request) -> str:
    key = request.headers.get("X-API-Key")
    return EXEMPTED if key == "internal" else (key or "anonymous")


def sync_identifier(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def rate_for(request: Request, context: Mapping[str, Any]) -> Rate:
    return Rate.parse("1000/min" if request.headers.get("X-Plan") == "pro" else "100/min")


async def async_rate(request: Request, context: Mapping[str, Any]) -> str:
    return "10/s"


async def on_backend_error(request: Request, info: ThrottleExceptionInfo) -> float:
    return 0.0


async def decide_on_error(connection: Any, info: ThrottleExceptionInfo) -> Decision:
    raise info["exception"]


def cost_of(request: Request, context: Mapping[str, Any]) -> int:
    return 2 if request.method == "POST" else 1


def seen(event: DecisionEvent) -> None:
    print(event)


api = HTTPThrottle("api", rate="100/min")
two_limits = HTTPThrottle("two", rate=["10/s", "1000/day"], strategy=SlidingWindowCounter())
tiered = HTTPThrottle("tiered", rate=rate_for, identifier=api_key)
async_tiered = HTTPThrottle("async-tiered", rate=async_rate, identifier=sync_identifier)
lambdas = HTTPThrottle("lambdas", rate=lambda request, ctx: "5/s", cost=lambda request, ctx: 1)
typed = HTTPThrottle(
    "typed",
    rate=Rate(limit=10, seconds=1),
    strategy=TokenBucket(),
    backend=backend,
    cost=cost_of,
    headers="legacy",
    on_error="allow",
    rules=[Bypass(path="/health")],
    on_decision=seen,
)
on_errors = [
    HTTPThrottle("e1", rate="1/s", on_error=on_backend_error),
    HTTPThrottle("e2", rate="1/s", on_error=decide_on_error),
    HTTPThrottle("e3", rate="1/s", on_error=fallback(backend=backend)),
    HTTPThrottle("e4", rate="1/s", on_error="throttle", headers=None),
    HTTPThrottle("e5", rate="1/s", headers={"X-Limit": "10", "X-Left": Header("{remaining}")}),
    HTTPThrottle("e6", rate="1/s", backend="memory://", use_method=False),
]
ws_throttle = WebSocketThrottle("ws", rate="60/min")
remove_observer = add_observer(seen)


@app.get("/items")
async def items(request: Request = Depends(api)) -> dict[str, list[int]]:
    return {"items": [1, 2, 3]}


@app.get("/deps", dependencies=[Depends(api), Depends(tiered)])
async def deps() -> dict[str, bool]:
    return {"ok": True}


@app.get("/search")
@fastapi_throttled(api, two_limits)
async def search(q: str) -> list[str]:
    return [q]


@app.get("/sync")
@fastapi_throttled(api)
def sync_search(q: str) -> list[str]:
    return [q]


@app.get("/traffik12")
@decorators_throttled(api)
async def traffik12(q: str) -> list[str]:
    return [q]


@router.get("/routed", dependencies=[fastapi_throttled(api)])
async def routed() -> str:
    return "ok"


@app.get("/quota")
async def quota(request: Request) -> dict[str, float]:
    async with api.quota(request) as q:
        q(api, cost=2)
    assert isinstance(q, QuotaContext)
    stat = await api.stat(request)
    return {"left": stat.hits_remaining if stat is not None else 0.0}


@app.websocket("/ws")
async def ws(websocket: WebSocket = Depends(ws_throttle)) -> None:
    await websocket.accept()
    await ws_throttle.hit(websocket)


async def homepage(request: Request) -> Response:
    return JSONResponse({"hello": "world"})


def sync_homepage(request: Request) -> PlainTextResponse:
    return PlainTextResponse("hi")


throttled_home = throttled(api)(homepage)
throttled_sync = throttled(api)(sync_homepage)
at_once = throttled(api, route=homepage)


class Items(HTTPEndpoint):
    @throttled(api)
    async def get(self, request: Request) -> Response:
        return PlainTextResponse("items")


starlette_app = Starlette(
    routes=[Route("/", throttled_home), Route("/sync", throttled_sync), Route("/items", Items)]
)
starlette_app.add_middleware(
    ThrottleMiddleware,
    middleware_throttles=[MiddlewareThrottle(api, path="/api/", methods=["GET"])],
    backend=backend,
)
app.add_middleware(
    ThrottleMiddleware,
    middleware_throttles=[api, Traffik12MiddlewareThrottle(tiered)],
    backend="memory://",
)
starlette_with_list = Starlette(middleware=[api.as_middleware(path="/api/")])


async def use_helpers() -> None:
    async with fresh_backend() as test_backend:
        with throttle_disabled(api), override_rate(tiered, "1/s"):
            assert test_backend is not None
        with override_rate(tiered, ["10/s", "1000/day"]):  # (rates as a list, as everywhere)
            pass
    async with InMemoryBackend(namespace="entered") as entered:
        kept: InMemoryBackend = entered  # (the backend entered, its own type)
        assert kept is entered
    rule: Union[Rule, Bypass] = Rule(path="/api/")
    assert rule is not None


def open_and_close(backend: InMemoryBackend) -> None:
    # docs/testing.md opens a module-level backend so; a coroutine, as `asyncio.run` takes
    asyncio.run(backend.initialize())
    asyncio.run(backend.close())


def a_backend_of_any_kind(backend: ThrottleBackend) -> ThrottleBackend:
    # No type arguments: the store's client and connection types default to Any.
    return backend


class DictBackend(ThrottleBackend):
    """A backend of the user's own, as docs/concepts/backends.md writes one."""


the_memory: ThrottleBackend = a_backend_of_any_kind(InMemoryBackend())


# -- what the types give back (a typed app's reading of them) ----------------------------------


async def guarded(request: Request) -> Request:
    return await api(request)  # the request back, typed


async def guarded_socket(websocket: WebSocket) -> WebSocket:
    return await WebSocketThrottle("ws-typed", rate="5/s").hit(websocket)


def plan(connection: Request, stat: Any, context: Mapping[str, Any]) -> str:
    return str(context.get("plan", "free"))  # the context is a mapping, never None


planned = HTTPThrottle("planned", rate="5/s", headers={"X-Plan": Header(plan, when="always")})


def waited(exc: ConnectionThrottled) -> tuple[Union[float, None], int, Mapping[str, str]]:
    return exc.wait_period, exc.status_code, exc.headers or {}


class VersionedApp(FastAPI):
    version_tag = "v1"


documented: VersionedApp = document_rate_limits(VersionedApp())
memory_backend: InMemoryBackend = InMemoryBackend.from_url("memory://typed")


def units_left(connection: Request, stat: Any, context: Mapping[str, Any]) -> int:
    return int(stat.hits_remaining)  # a number: written as digits


counted = HTTPThrottle("counted", rate="5/s", headers={"X-Left": Header(units_left, when="always")})
