"""The 429 response in the OpenAPI schema of throttled routes."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import APIRouter, Depends, FastAPI, Request, WebSocket

from traffik import HTTPThrottle, InMemoryBackend, WebSocketThrottle
from traffik.fastapi import RATE_LIMITED_RESPONSE, document_rate_limits, throttled
from traffik.middleware import MiddlewareThrottle


@pytest.fixture
def backend() -> InMemoryBackend:
    return InMemoryBackend(namespace="openapi")


def responses_of(app: FastAPI, path: str, method: str = "get") -> dict[str, Any]:
    responses: dict[str, Any] = app.openapi()["paths"][path][method]["responses"]
    return responses


def assert_documents_429(responses: dict[str, Any]) -> None:
    entry = responses["429"]
    assert entry["description"].startswith("Too Many Requests")
    assert entry["headers"]["Retry-After"]["schema"] == {"type": "integer", "minimum": 1}
    schema = entry["content"]["application/json"]["schema"]
    assert schema["properties"] == {"detail": {"title": "Detail", "type": "string"}}
    assert schema["required"] == ["detail"]


def test_every_way_of_guarding_a_route_is_documented(backend: InMemoryBackend) -> None:
    throttle = HTTPThrottle("docs", rate="5/min", backend=backend)
    app = document_rate_limits(FastAPI())

    @app.get("/parameter")
    async def parameter(request: Request = Depends(throttle)) -> str:
        return "ok"

    @app.post("/dependencies", dependencies=[Depends(throttle)])
    async def dependencies() -> str:
        return "ok"

    @app.get("/decorated")
    @throttled(throttle)
    async def decorated() -> str:
        return "ok"

    @app.get("/marker", dependencies=[throttled(throttle, throttle)])
    async def marker() -> str:
        return "ok"

    router = APIRouter(dependencies=[Depends(throttle)])

    @router.get("/router")
    async def in_router() -> str:
        return "ok"

    included = APIRouter()

    @included.get("/included")
    async def in_included() -> str:
        return "ok"

    @app.get("/middleware-throttle", dependencies=[Depends(MiddlewareThrottle(throttle))])
    async def middleware_throttle() -> str:
        return "ok"

    @app.get("/free")
    async def free() -> str:
        return "ok"

    app.include_router(router)
    app.include_router(included, dependencies=[Depends(throttle)])

    for path, method in [
        ("/parameter", "get"),
        ("/dependencies", "post"),
        ("/decorated", "get"),
        ("/marker", "get"),
        ("/router", "get"),
        ("/included", "get"),
        ("/middleware-throttle", "get"),
    ]:
        assert_documents_429(responses_of(app, path, method))
    assert "429" not in responses_of(app, "/free")


def test_own_429_entries_are_kept_and_the_constant_works_by_hand(backend: InMemoryBackend) -> None:
    throttle = HTTPThrottle("docs-own", rate="5/min", backend=backend)
    app = document_rate_limits(FastAPI())

    @app.get(
        "/own", dependencies=[Depends(throttle)], responses={429: {"description": "Slow down"}}
    )
    async def own() -> str:
        return "ok"

    @app.get("/manual", responses=RATE_LIMITED_RESPONSE)
    async def manual() -> str:
        return "ok"

    assert responses_of(app, "/own")["429"]["description"] == "Slow down"
    assert_documents_429(responses_of(app, "/manual"))


def test_websocket_throttles_do_not_document_http_429s(backend: InMemoryBackend) -> None:
    throttle = WebSocketThrottle("docs-ws", rate="5/min", backend=backend)
    app = document_rate_limits(FastAPI())

    @app.websocket("/ws")
    async def ws(websocket: WebSocket = Depends(throttle)) -> None: ...

    @app.get("/odd", dependencies=[Depends(throttle)])
    async def odd() -> str:
        return "ok"

    assert "429" not in responses_of(app, "/odd")


def test_routes_added_after_install_count_and_the_schema_is_built_once(
    backend: InMemoryBackend,
) -> None:
    throttle = HTTPThrottle("docs-late", rate="5/min", backend=backend)
    app = document_rate_limits(FastAPI())

    @app.get("/late", dependencies=[Depends(throttle)])
    async def late() -> str:
        return "ok"

    schema = app.openapi()
    assert app.openapi() is schema
    assert_documents_429(schema["paths"]["/late"]["get"]["responses"])
