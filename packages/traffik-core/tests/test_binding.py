"""Which backend a throttle talks to, per connection, and the backend lifecycle around it."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, Request
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

from traffik import HTTPThrottle, InMemoryBackend, MiddlewareThrottle, ThrottleMiddleware
from traffik.backends.context import get_throttle_backend
from traffik.exceptions import BackendConnectionError, ConfigurationError

pytestmark = pytest.mark.anyio

MODULE_THROTTLE = HTTPThrottle("binding:module", rate="2/min")
"""Defined once at import, as users do, and served by a fresh app and backend per test."""


def client_for(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def module_app(backend: InMemoryBackend) -> FastAPI:
    app = FastAPI(lifespan=backend.lifespan)

    @app.get("/items", dependencies=[Depends(MODULE_THROTTLE)])
    async def items() -> dict[str, bool]:
        return {"ok": True}

    return app


@pytest.mark.parametrize("run", range(3))
async def test_a_module_level_throttle_follows_each_apps_backend(run: int) -> None:
    backend = InMemoryBackend(namespace=f"app-{run}", persistent=False)
    app = module_app(backend)
    async with app.router.lifespan_context(app), client_for(app) as client:
        codes = [(await client.get("/items")).status_code for _ in range(3)]
        assert await backend.keys()  # counted on this app's own backend
    assert codes == [200, 200, 429]
    assert backend.closed()


async def test_an_app_whose_lifespan_never_ran_finds_its_backend() -> None:
    # httpx's ASGITransport never runs the lifespan: the backend given to it is still the
    # app's (it initialises itself on first use), for the app and a sub-app mounted in it.
    backend, other = InMemoryBackend(namespace="unrun"), InMemoryBackend(namespace="other")
    app = module_app(backend)
    sub = FastAPI()

    @sub.get("/items", dependencies=[Depends(MODULE_THROTTLE)])
    async def sub_items() -> dict[str, bool]:
        return {"ok": True}

    app.mount("/sub", sub)
    async with client_for(app) as client, client_for(module_app(other)) as second:
        codes = [(await client.get("/items")).status_code for _ in range(3)]
        mounted = [(await client.get("/sub/items")).status_code for _ in range(3)]
        assert [(await second.get("/items")).status_code for _ in range(3)] == [200, 200, 429]
    assert codes == [200, 200, 429]
    assert mounted == [200, 200, 429]
    assert len(await backend.keys()) == 2 and len(await other.keys()) == 1


async def test_an_app_with_included_routers_finds_its_backend_without_a_lifespan() -> None:
    # FastAPI's `include_router` wraps the app's lifespan with the router's (a merged
    # lifespan): the backend is still found behind it, as the testing page promises for a
    # client that never runs the lifespan.
    backend = InMemoryBackend(namespace="routed")
    app = module_app(backend)
    router = APIRouter()

    @router.get("/routed", dependencies=[Depends(MODULE_THROTTLE)])
    async def routed() -> dict[str, bool]:
        return {"ok": True}

    app.include_router(router)
    app.include_router(APIRouter(), prefix="/second")  # (a lifespan merged twice)
    async with client_for(app) as client:
        codes = [(await client.get("/items")).status_code for _ in range(3)]
        routed_codes = [(await client.get("/routed")).status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    assert routed_codes == [200, 200, 429]
    assert len(await backend.keys()) == 2


async def test_routers_with_two_backends_lifespans_name_neither_without_a_lifespan() -> None:
    # Two backends' lifespans merged into one app's: which one a throttle without a backend
    # uses cannot be told without running them, so the error says there is none.
    backend = InMemoryBackend(namespace="first")
    app = module_app(backend)
    app.include_router(APIRouter(lifespan=InMemoryBackend(namespace="second").lifespan))
    async with client_for(app) as client:
        with pytest.raises(ConfigurationError, match="has no backend"):
            await client.get("/items")


async def test_three_apps_in_turn_each_get_a_full_budget() -> None:
    for run in range(3):
        backend = InMemoryBackend(namespace=f"turn-{run}")
        app = module_app(backend)
        async with app.router.lifespan_context(app), client_for(app) as client:
            assert [(await client.get("/items")).status_code for _ in range(3)] == [200, 200, 429]


async def test_the_middlewares_backend_is_bound_to_its_throttles_only() -> None:
    mw_backend = InMemoryBackend(namespace="mw")
    app_backend = InMemoryBackend(namespace="app")
    by_middleware = HTTPThrottle("binding:mw", rate="5/min")
    in_route = HTTPThrottle("binding:route", rate="5/min")

    async def endpoint(request: Any) -> PlainTextResponse:
        await in_route.hit(request)
        return PlainTextResponse("ok")

    app = Starlette(
        routes=[Route("/", endpoint)],
        middleware=[
            Middleware(ThrottleMiddleware, middleware_throttles=[by_middleware], backend=mw_backend)
        ],
        lifespan=app_backend.lifespan,
    )
    async with app.router.lifespan_context(app), client_for(app) as client:
        assert (await client.get("/")).status_code == 200
        assert [k.split(":")[1] for k in await mw_backend.keys()] == ["binding%3Amw"]
        assert [k.split(":")[1] for k in await app_backend.keys()] == ["binding%3Aroute"]


async def test_dynamic_backends_follow_the_innermost_context() -> None:
    outer, inner = InMemoryBackend(namespace="outer"), InMemoryBackend(namespace="inner")
    throttle = HTTPThrottle("binding:dynamic", rate="1/min", dynamic_backend=True)
    app = FastAPI(lifespan=outer.lifespan)

    @app.get("/", dependencies=[Depends(throttle)])
    async def root() -> dict[str, bool]:
        return {"ok": True}

    async with app.router.lifespan_context(app), client_for(app) as client:
        assert (await client.get("/")).status_code == 200
        async with inner(close_on_exit=False):
            assert (await client.get("/")).status_code == 200  # a fresh counter inside
        assert (await client.get("/")).status_code == 429


SUB_APP_THROTTLE = HTTPThrottle("binding:sub", rate="1/min")
"""Module level, no backend: used in a mounted sub-app, served by the outer app's backend."""


def mounted_apps(backend: InMemoryBackend, kind: str) -> Any:
    """An app whose lifespan sets up `backend`, with a sub-app mounted at `/sub` that uses
    `SUB_APP_THROTTLE` (a FastAPI dependency, or the middleware of a Starlette sub-app)."""
    if kind == "fastapi":
        sub = FastAPI()

        @sub.get("/x", dependencies=[Depends(SUB_APP_THROTTLE)])
        async def x() -> dict[str, bool]:
            return {"ok": True}

        app = FastAPI(lifespan=backend.lifespan)
        app.mount("/sub", sub)
        return app

    async def endpoint(request: Any) -> PlainTextResponse:
        return PlainTextResponse("ok")

    sub = Starlette(
        routes=[Route("/x", endpoint)],
        middleware=[Middleware(ThrottleMiddleware, middleware_throttles=[SUB_APP_THROTTLE])],
    )
    inner = Starlette(routes=[Mount("/sub", app=sub)])  # two mounts deep
    return Starlette(routes=[Mount("/", app=inner)], lifespan=backend.lifespan)


@pytest.mark.parametrize("kind", ["fastapi", "starlette"])
def test_a_mounted_sub_app_finds_the_backend_of_the_app_served(kind: str) -> None:
    # As on a real server: the lifespan runs in a task of its own, so the backend reaches
    # the sub-app's requests through the request, not through a context variable.
    for run in range(2):  # a fresh app and backend each time: no backend is remembered
        backend = InMemoryBackend(namespace=f"sub-{kind}-{run}")
        with TestClient(mounted_apps(backend, kind)) as client:
            codes = [client.get("/sub/x").status_code for _ in range(2)]
            assert asyncio.run(backend.keys())  # counted on this app's backend
        assert codes == [200, 429]


# -- mounts: middleware rules and keys -------------------------------------------------


async def test_middleware_rules_match_paths_relative_to_the_mount() -> None:
    backend = InMemoryBackend(namespace="mounted")
    throttle = HTTPThrottle("binding:mounted", rate="2/min", backend=backend)

    async def item(request: Any) -> PlainTextResponse:
        return PlainTextResponse("ok")

    sub = Starlette(
        routes=[Route("/items/{item_id}", item), Route("/health", item)],
        middleware=[
            Middleware(
                ThrottleMiddleware,
                middleware_throttles=[MiddlewareThrottle(throttle, path="/items/**")],
            )
        ],
    )
    app = Starlette(routes=[Mount("/v1", app=sub)])
    async with client_for(app) as client:
        codes = [(await client.get(f"/v1/items/{n}")).status_code for n in range(3)]
        health = [(await client.get("/v1/health")).status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    assert health == [200, 200, 200]
    assert await backend.keys() == ["mounted:binding%3Amounted:{127.0.0.1}:GET:/v1/items/**:fw"]


# -- stat and reset of another route ----------------------------------------------------


async def test_stat_and_reset_can_name_the_route_they_read() -> None:
    backend = InMemoryBackend(namespace="stat")
    throttle = HTTPThrottle("binding:stat", rate="3/min", backend=backend)
    app = FastAPI()

    @app.get("/items/{item_id}", dependencies=[Depends(throttle)])
    async def item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    @app.get("/quota")
    async def quota(request: Request) -> JSONResponse:
        items = await throttle.stat(request, path="/items/{item_id}")
        own = await throttle.stat(request)
        assert items is not None and own is not None
        return JSONResponse({"items": items.hits_remaining, "own": own.hits_remaining})

    @app.post("/quota/reset")
    async def reset(request: Request) -> JSONResponse:
        return JSONResponse({"reset": await throttle.reset(request, path="/items/{item_id}")})

    async with client_for(app) as client:
        await client.get("/items/1")
        await client.get("/items/2")
        assert (await client.get("/quota")).json() == {"items": 1, "own": 3}
        assert (await client.post("/quota/reset")).json() == {"reset": True}
        assert (await client.get("/quota")).json() == {"items": 3, "own": 3}
    assert await throttle.reset("127.0.0.1", path="/items/{item_id}") is False
    with pytest.raises(ValueError, match="pass path="):
        await throttle.reset("127.0.0.1")


# -- lifecycle ---------------------------------------------------------------------------


async def test_two_tasks_in_async_with_backend_at_once() -> None:
    """Task A enters, task B enters, A leaves while B is inside, then B leaves: each task
    leaves its own context (a context variable's token belongs to the task that set it)."""
    backend = InMemoryBackend(namespace="tasks", persistent=True)
    a_inside, b_inside, a_left = asyncio.Event(), asyncio.Event(), asyncio.Event()
    seen: list[Any] = []

    async def task_a() -> None:
        async with backend:
            a_inside.set()
            await b_inside.wait()
            seen.append(get_throttle_backend())
        seen.append(get_throttle_backend())
        a_left.set()

    async def task_b() -> None:
        await a_inside.wait()
        async with backend:
            b_inside.set()
            await a_left.wait()
            seen.append(get_throttle_backend())
        seen.append(get_throttle_backend())

    await asyncio.gather(task_a(), task_b())
    assert seen == [backend, None, backend, None]


class SlowFailingBackend(InMemoryBackend):
    """Fault injection: an `_open` that takes `delay` seconds, then fails `failures` times."""

    def __init__(self, delay: float, failures: int) -> None:
        super().__init__(namespace="slow")
        self.delay, self.failures, self.opens = delay, failures, 0

    async def _open(self) -> None:
        self.opens += 1
        await asyncio.sleep(self.delay)
        if self.opens <= self.failures:
            raise BackendConnectionError("could not connect (injected)")
        await super()._open()


async def test_initialisation_is_single_flight() -> None:
    backend = SlowFailingBackend(delay=0.2, failures=1)
    results = await asyncio.gather(
        *(backend.increment(f"k{n}") for n in range(10)), return_exceptions=True
    )
    assert all(isinstance(r, BackendConnectionError) for r in results)
    assert backend.opens == 1  # one attempt, its outcome shared by all ten (not in turn)
    assert await backend.increment("k") == 1  # the next use tries again, and succeeds
    assert backend.opens == 2


async def test_a_cancelled_waiter_does_not_cancel_the_attempt() -> None:
    backend = SlowFailingBackend(delay=0.1, failures=0)
    first = asyncio.ensure_future(backend.initialize())
    await asyncio.sleep(0.01)
    first.cancel()
    await backend.initialize()
    assert backend.initialized and backend.opens == 1


# -- layers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "module", ["traffik.rates", "traffik.strategies", "traffik.typing", "traffik.decision"]
)
def test_lower_layers_do_not_import_backends(module: str) -> None:
    code = (
        f"import sys, {module}; "
        "loaded = sorted(m for m in sys.modules if m.startswith('traffik.backends')); "
        "print(loaded); assert not loaded, loaded"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


@pytest.mark.slow  # one interpreter per entry module (3 s)
def test_no_import_circle_from_any_entry_module() -> None:
    modules = [
        "traffik.backends.inmemory",
        "traffik.error_handlers",
        "traffik.throttles",
        "traffik.middleware",
        "traffik.buckets",
        "traffik.testing",
    ]
    for module in modules:
        subprocess.run([sys.executable, "-c", f"import {module}"], check=True)


@pytest.mark.parametrize("lifespan_ran", [False, True])
async def test_the_app_s_backend_comes_before_a_context_whether_its_lifespan_ran_or_not(
    lifespan_ran: bool,
) -> None:
    # The order (docs/clients-and-buckets.md, "Which backend"): the app's backend, then the
    # innermost `async with backend:`. A context won while the app's lifespan had never run,
    # and lost once it had run (and ended): which store a test counted on hung on the tests
    # before it.
    own, other = InMemoryBackend(namespace="app-own"), InMemoryBackend(namespace="context")
    app = module_app(own)
    if lifespan_ran:
        with TestClient(app) as client:
            assert client.get("/items").status_code == 200
        await own.initialize()  # (its lifespan closed it)
        await own.reset()
    async with other, client_for(app) as client:
        assert (await client.get("/items")).status_code == 200
        assert await other.keys() == []
        assert len(await own.keys()) == 1
