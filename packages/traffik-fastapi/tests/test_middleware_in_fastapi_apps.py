"""`ThrottleMiddleware` among a FastAPI app's other middleware (CORS)."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from traffik import HTTPThrottle, InMemoryBackend
from traffik.middleware import ThrottleMiddleware

pytestmark = pytest.mark.anyio

PREFLIGHT = {"Origin": "https://app.example", "Access-Control-Request-Method": "GET"}


def cors_app(throttle: HTTPThrottle, throttle_outermost: bool) -> FastAPI:
    app = FastAPI()
    layers = [
        (CORSMiddleware, {"allow_origins": ["https://app.example"], "allow_methods": ["*"]}),
        (ThrottleMiddleware, {"middleware_throttles": [throttle]}),
    ]
    for cls, options in layers if throttle_outermost else reversed(layers):
        app.add_middleware(cls, **options)  # type: ignore[arg-type]

    @app.get("/items")
    async def items() -> list[int]:
        return []

    return app


@pytest.mark.parametrize(
    "throttle_outermost", [False, True], ids=["cors-outside", "throttle-outside"]
)
async def test_preflights_are_not_counted(throttle_outermost: bool) -> None:
    # Whichever middleware is outermost: with CORSMiddleware outside it answers preflights
    # itself; with ThrottleMiddleware outside, the middleware lets them through uncounted.
    throttle = HTTPThrottle(
        f"cors-{throttle_outermost}", rate="2/min", backend=InMemoryBackend(), use_method=False
    )
    app = cors_app(throttle, throttle_outermost=throttle_outermost)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        codes = []
        for _ in range(2):
            codes.append((await client.options("/items", headers=PREFLIGHT)).status_code)
            codes.append(
                (await client.get("/items", headers={"Origin": PREFLIGHT["Origin"]})).status_code
            )
    assert codes == [200, 200, 200, 200]
