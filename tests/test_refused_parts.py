"""A request refused by one rate of several takes nothing from the others, and its answer says
so: each rate that would have admitted it reports the units it still has (not what it would
have had, charged), on every store and for every built-in strategy."""

from __future__ import annotations

import re
from typing import Callable

import httpx
import pytest
from fastapi import Depends, FastAPI

from traffik import HTTPThrottle
from traffik.backends.base import ThrottleBackend
from traffik.strategies import BUILTIN_STRATEGIES

pytestmark = pytest.mark.anyio


def _left(header: str) -> dict[str, int]:
    """Each policy's `r` in a `RateLimit` header."""
    return {name: int(left) for name, left in re.findall(r'"([^"]+)";r=(\d+)', header)}


@pytest.mark.parametrize("strategy", BUILTIN_STRATEGIES, ids=lambda cls: cls.__name__)
async def test_a_rate_that_would_admit_reports_what_it_still_has(
    make_backend: Callable[..., ThrottleBackend], strategy: type
) -> None:
    throttle = HTTPThrottle(
        "parts", rate="100/min;6/h", cost=3, backend=make_backend(), strategy=strategy()
    )

    app = FastAPI()

    @app.get("/r", dependencies=[Depends(throttle)])
    async def ok() -> dict[str, bool]:
        return {"ok": True}

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as http:
        admitted = [await http.get("/r") for _ in range(2)]  # 6 of the hour's 6
        refused = await http.get("/r")
    assert [r.status_code for r in admitted] == [200, 200]
    assert _left(admitted[1].headers["ratelimit"]) == {"parts:100/min": 94, "parts:6/h": 0}
    assert refused.status_code == 429
    # The hour refused: the minute took nothing, and still has 94 (not 91).
    assert _left(refused.headers["ratelimit"]) == {"parts:100/min": 94, "parts:6/h": 0}
