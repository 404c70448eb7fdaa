"""A client that writes part of an identifier must not pick its own tier or priority.

`TieredRate` and `PriorityQueue` read `tier:<name>:` / `priority:<level>:` from the key, where
the identifier (or the context's `scope`) writes it. An identifier often carries text a
client sent (an API key), so only the segment the app writes, at the start of the client
part or in the scope, may count: one a client slipped in after a `:` must not.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI, Request

from traffik import HTTPThrottle, InMemoryBackend
from traffik.strategies import TieredRate

pytestmark = pytest.mark.anyio


def api_key(request: Request) -> str:
    return "key:" + request.headers["x-api-key"]


@pytest.mark.parametrize("context", [{}, {"scope": "tier:free"}], ids=["default", "scope"])
async def test_an_api_key_cannot_name_its_own_tier(context: dict[str, Any]) -> None:
    throttle = HTTPThrottle(
        "tiers",
        rate="2/min",
        backend=InMemoryBackend(),
        identifier=api_key,
        strategy=TieredRate({"free": 1, "enterprise": 100}, default_tier="free"),
        context=context,
    )
    app = FastAPI()

    @app.get("/items", dependencies=[Depends(throttle)])
    async def items() -> list[Any]:
        return []

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        codes = [
            (await http.get("/items", headers={"x-api-key": "tier:enterprise:x"})).status_code
            for _ in range(4)
        ]
    assert codes == [200, 200, 429, 429]  # the free tier: 2/min
