"""Throttles as plain FastAPI dependencies: rate-limit headers on allowed responses, and the package's API."""

from __future__ import annotations

import httpx
import pytest
from fastapi import Depends, FastAPI, Request

import traffik.fastapi
from traffik import HTTPThrottle, InMemoryBackend

pytestmark = pytest.mark.anyio


async def test_headers_on_allowed_responses_with_depends() -> None:
    backend = InMemoryBackend(namespace="fastapi-depends")
    ietf = HTTPThrottle("depends-ietf", rate="3/min", backend=backend)
    legacy = HTTPThrottle("depends-legacy", rate="5/min", backend=backend, headers="legacy")
    app = FastAPI()

    @app.get("/parameter")
    async def parameter(request: Request = Depends(ietf)) -> str:
        return request.url.path

    @app.get("/dependencies", dependencies=[Depends(legacy)])
    async def dependencies() -> str:
        return "ok"

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        responses = [await client.get("/parameter") for _ in range(2)]
        legacy_response = await client.get("/dependencies")
    assert [r.headers["ratelimit"] for r in responses] == [
        '"depends-ietf";r=2;t=60',
        '"depends-ietf";r=1;t=60',
    ]
    assert responses[0].headers["ratelimit-policy"] == '"depends-ietf";q=3;w=60'
    assert responses[0].json() == "/parameter"
    assert legacy_response.headers["x-ratelimit-limit"] == "5"
    assert legacy_response.headers["x-ratelimit-remaining"] == "4"
    assert legacy_response.headers["x-ratelimit-reset"] == "60"


def test_all_is_sorted_and_resolves() -> None:
    assert traffik.fastapi.__all__ == sorted(traffik.fastapi.__all__)
    for name in traffik.fastapi.__all__:
        assert getattr(traffik.fastapi, name) is not None
