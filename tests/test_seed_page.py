# ruff: noqa
# mypy: ignore-errors
"""The seed page (shared/seed/testing-page.txt), its examples verbatim and in order.

The page's blocks read as one document (later blocks use names imported by earlier ones),
so they sit in one module. The only change is in the WebSocket example, marked there.
"""

# tests/test_my_endpoints.py

import pytest
import pytest_asyncio
from httpx import AsyncClient, ASGITransport
from fastapi import FastAPI, Request, Depends
from traffik import HTTPThrottle
from traffik.backends.inmemory import InMemoryBackend


@pytest.fixture
def backend():
    """Fresh backend for each test."""
    return InMemoryBackend(namespace="test", persistent=False)


@pytest.fixture
def app(backend):
    """FastAPI app with a rate-limited endpoint."""
    throttle = HTTPThrottle("test:api", rate="3/min", backend=backend)
    app = FastAPI(lifespan=backend.lifespan)

    @app.get("/items")
    async def get_items(request: Request = Depends(throttle)):
        return {"items": [1, 2, 3]}

    return app


@pytest.mark.anyio
async def test_allows_requests_under_limit(app):
    async with AsyncClient(transport=ASGITransport(app=app), base_url="http://test") as client:
        for _ in range(3):
            response = await client.get("/items")
            assert response.status_code == 200


@pytest.mark.anyio
async def test_rejects_requests_over_limit(app):
    async with AsyncClient(transport=ASGITransport(app=app), base_url="http://test") as client:
        # Use up all 3 allowed requests
        for _ in range(3):
            await client.get("/items")

        # The 4th should be rejected
        response = await client.get("/items")
        assert response.status_code == 429


import pytest
from traffik.strategies import (
    FixedWindow,
    TokenBucket,
    SlidingWindowCounter,
)

STRATEGIES = [
    FixedWindow(),
    TokenBucket(),
    SlidingWindowCounter(),
]


@pytest.mark.parametrize("strategy", STRATEGIES, ids=["fixed", "token", "sliding"])
@pytest.mark.anyio
async def test_rate_limit_with_strategy(strategy):
    backend = InMemoryBackend(namespace="test", persistent=False)
    throttle = HTTPThrottle(
        f"test:strategy:{type(strategy).__name__}",
        rate="2/min",
        backend=backend,
        strategy=strategy,
    )

    app = FastAPI(lifespan=backend.lifespan)

    @app.get("/data")
    async def get_data(request: Request = Depends(throttle)):
        return {"ok": True}

    async with AsyncClient(transport=ASGITransport(app=app), base_url="http://test") as client:
        assert (await client.get("/data")).status_code == 200
        assert (await client.get("/data")).status_code == 200
        assert (await client.get("/data")).status_code == 429


import pytest
from unittest.mock import AsyncMock, patch
from traffik.exceptions import BackendError


@pytest.mark.anyio
async def test_error_handler_fallback():
    """When the primary backend fails, the fallback should kick in."""
    primary = InMemoryBackend(namespace="primary", persistent=False)
    fallback = InMemoryBackend(namespace="fallback", persistent=False)

    from traffik.error_handlers import backend_fallback

    throttle = HTTPThrottle(
        "test:fallback",
        rate="10/min",
        backend=primary,
        on_error=backend_fallback(backend=fallback, fallback_on=(BackendError,)),
    )

    app = FastAPI(lifespan=primary.lifespan)

    @app.get("/api")
    async def api_endpoint(request: Request = Depends(throttle)):
        return {"ok": True}

    # Patch primary backend to raise BackendError
    with patch.object(primary, "increment_with_ttl", side_effect=BackendError("Redis down")):
        async with AsyncClient(transport=ASGITransport(app=app), base_url="http://test") as client:
            # Should succeed via fallback backend
            response = await client.get("/api")
            assert response.status_code == 200


@pytest.mark.anyio
async def test_on_error_allow():
    """on_error='allow' should let requests through when backend fails."""
    backend = InMemoryBackend(namespace="test", persistent=False)
    throttle = HTTPThrottle("test:allow", rate="1/min", backend=backend, on_error="allow")

    app = FastAPI(lifespan=backend.lifespan)

    @app.get("/api")
    async def api_endpoint(request: Request = Depends(throttle)):
        return {"ok": True}

    with patch.object(backend, "increment_with_ttl", side_effect=Exception("DB error")):
        async with AsyncClient(transport=ASGITransport(app=app), base_url="http://test") as client:
            response = await client.get("/api")
            assert response.status_code == 200  # Allowed through despite error


import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocket
from starlette.websockets import WebSocketDisconnect  # added with the catch below
from traffik import WebSocketThrottle
from traffik.backends.inmemory import InMemoryBackend
from fastapi import FastAPI


@pytest.mark.anyio
async def test_websocket_rate_limiting():
    backend = InMemoryBackend(namespace="test", persistent=False)
    ws_throttle = WebSocketThrottle("test:ws", rate="2/min", backend=backend)

    app = FastAPI(lifespan=backend.lifespan)

    @app.websocket("/ws")
    async def websocket_endpoint(websocket: WebSocket):
        await websocket.accept()
        # The one change to the page: catch the client's disconnect. Without it the endpoint
        # raises WebSocketDisconnect when the test leaves the `with` block, and Starlette's
        # TestClient re-raises that in the test, under any version of Starlette.
        try:
            while True:
                data = await websocket.receive_text()
                await ws_throttle.hit(websocket)  # Throttle each message
                await websocket.send_text(f"echo: {data}")
        except WebSocketDisconnect:
            pass

    client = TestClient(app)
    with client.websocket_connect("/ws") as ws:
        ws.send_text("hello")
        response = ws.receive_text()
        assert "echo" in response

        ws.send_text("world")
        response = ws.receive_text()
        assert "echo" in response

        # Third message should be rate-limited
        ws.send_text("third")
        # WebSocket throttle sends a rate_limit JSON message, not an exception
        response = ws.receive_json()
        assert response["type"] == "rate_limit"
