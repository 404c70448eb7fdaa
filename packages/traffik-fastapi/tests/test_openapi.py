"""The 429 response in the OpenAPI schema of throttled routes."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import APIRouter, Depends, FastAPI, Request, WebSocket

from traffik import HTTPThrottle, InMemoryBackend, WebSocketThrottle
from traffik.fastapi import RATE_LIMITED_RESPONSE, document_rate_limits, throttled
from traffik.middleware import MiddlewareThrottle, ThrottleMiddleware, glob


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


def headers_of(responses: dict[str, Any], status: str) -> set[str]:
    return set(responses[status].get("headers", {}))


def test_the_rate_limit_headers_of_the_throttles_are_documented(backend: InMemoryBackend) -> None:
    ietf = HTTPThrottle("docs-ietf", rate="5/min", backend=backend)
    legacy = HTTPThrottle("docs-legacy", rate="5/min", backend=backend, headers="legacy")
    silent = HTTPThrottle("docs-silent", rate="5/min", backend=backend, headers=None)
    watching = HTTPThrottle("docs-shadow", rate="5/min", backend=backend, shadow=True)
    app = document_rate_limits(FastAPI())

    @app.get("/ietf", dependencies=[Depends(ietf)])
    async def ietf_route() -> str:
        return "ok"

    @app.post("/legacy", status_code=201, response_model=int)
    @throttled(legacy, ietf)
    async def legacy_route() -> int:
        return 1

    @app.get("/silent", dependencies=[Depends(silent)])
    async def silent_route() -> str:
        return "ok"

    @app.get("/watched", dependencies=[Depends(watching)])
    async def watched_route() -> str:
        return "ok"

    ietf_names = {"RateLimit-Policy", "RateLimit"}
    legacy_names = {"X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"}
    responses = responses_of(app, "/ietf")
    assert_documents_429(responses)
    assert headers_of(responses, "429") == {"Retry-After", *ietf_names}
    assert headers_of(responses, "200") == ietf_names
    assert responses["200"]["headers"]["RateLimit"]["schema"] == {"type": "string"}
    responses = responses_of(app, "/legacy", "post")
    assert headers_of(responses, "429") == {"Retry-After", *ietf_names, *legacy_names}
    assert headers_of(responses, "201") == ietf_names | legacy_names
    assert responses["201"]["headers"]["X-RateLimit-Remaining"]["schema"] == {"type": "integer"}
    responses = responses_of(app, "/silent")
    assert headers_of(responses, "429") == {"Retry-After"}
    assert headers_of(responses, "200") == set()
    assert set(RATE_LIMITED_RESPONSE[429]["headers"]) == {"Retry-After"}  # untouched
    assert "429" not in responses_of(app, "/watched")  # a shadow throttle never refuses


def test_mounted_fastapi_apps_are_documented(backend: InMemoryBackend) -> None:
    throttle = HTTPThrottle("docs-mounted", rate="5/min", backend=backend)
    before, after = FastAPI(), FastAPI()
    for sub in (before, after):

        @sub.get("/items", dependencies=[Depends(throttle)])
        async def items() -> str:
            return "ok"

    app = FastAPI()
    app.mount("/before", before)
    document_rate_limits(app)
    app.mount("/after", after)
    assert_documents_429(responses_of(before, "/items"))  # its own schema, served at /before
    app.openapi()  # a sub-app mounted later: when the app's schema is built
    assert_documents_429(responses_of(after, "/items"))


def test_routes_under_a_throttle_middleware_are_documented(backend: InMemoryBackend) -> None:
    site = HTTPThrottle("docs-site", rate="100/min", backend=backend, headers="legacy")
    api = HTTPThrottle("docs-api", rate="5/min", backend=backend)
    writes = HTTPThrottle("docs-writes", rate="1/min", backend=backend)
    app = document_rate_limits(FastAPI())
    app.add_middleware(
        ThrottleMiddleware,
        middleware_throttles=[
            MiddlewareThrottle(api, path=glob("/api/**"), exempt=["/api/status"]),
            MiddlewareThrottle(writes, path="/api/", methods=["POST"]),
        ],
        exempt=["/health"],
    )
    app.add_middleware(ThrottleMiddleware, middleware_throttles=[site], exempt=["/api/", "/health"])

    @app.get("/api/items/{item_id}")
    async def item(item_id: int) -> int:
        return item_id

    @app.post("/api/items")
    async def create() -> str:
        return "ok"

    @app.get("/api/status")
    async def status() -> str:
        return "ok"

    @app.get("/health")
    async def health() -> str:
        return "ok"

    @app.get("/about")
    async def about() -> str:
        return "ok"

    assert_documents_429(responses_of(app, "/api/items/{item_id}"))
    assert headers_of(responses_of(app, "/api/items/{item_id}"), "200") == {
        "RateLimit-Policy",
        "RateLimit",
    }
    assert_documents_429(responses_of(app, "/api/items", "post"))
    assert "429" not in responses_of(app, "/api/status")
    assert "429" not in responses_of(app, "/health")
    assert headers_of(responses_of(app, "/about"), "200") == {
        "X-RateLimit-Limit",
        "X-RateLimit-Remaining",
        "X-RateLimit-Reset",
    }
