"""A client that obeys the headers is never surprised: end to end, through a FastAPI app.

The numbers behind the headers are checked on every backend by
`traffik.testing.truth_conformance`; here the headers themselves, on a test clock, for every
strategy: after a 200 saying `r` units are left, exactly `r` more requests pass and the next
gets a 429; after its `Retry-After`, the request passes; at the `t` a 200 tells, the budget is
whole again.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI

from traffik import HTTPThrottle, InMemoryBackend, ManualClock
from traffik.strategies import Strategy
from traffik.testing.truth_conformance import TRUTH_STRATEGIES

pytestmark = pytest.mark.anyio

START = 1_700_000_056.5  # 22:14:16.5 UTC: off every window boundary


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _told(response: httpx.Response) -> tuple[int, int]:
    """The `r` and `t` of a response's `RateLimit` header."""
    found = re.fullmatch(r'"api";r=(\d+);t=(\d+)', response.headers["ratelimit"])
    assert found is not None, response.headers
    return int(found[1]), int(found[2])


@pytest.mark.parametrize("strategy", TRUTH_STRATEGIES, ids=lambda s: repr(s).replace(" ", ""))
@pytest.mark.parametrize("rate", ["5/min", "3/7s", "2/1500ms"])
async def test_headers_tell_the_truth(strategy: Strategy, rate: str) -> None:
    clock = ManualClock(START)
    throttle = HTTPThrottle(
        "api", rate=rate, strategy=strategy, backend=InMemoryBackend(clock=clock)
    )
    app = FastAPI()

    @app.get("/r", dependencies=[Depends(throttle)])
    async def route() -> dict[str, Any]:
        return {}

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        first = await client.get("/r")
        if first.status_code == 429:  # (an hour of TimeOfDay that allows nothing)
            assert int(first.headers["retry-after"]) >= 1
            return
        left, reset = _told(first)
        more = [(await client.get("/r")).status_code for _ in range(left + 1)]
        assert more == [200] * left + [429], (rate, left)
        refused = await client.get("/r")
        assert refused.status_code == 429
        clock.advance(int(refused.headers["retry-after"]))
        again = await client.get("/r")
        assert again.status_code == 200, (rate, refused.headers, again.headers)
        # At the reset the 200 tells, a fresh key's budget is back: as many pass as at first.
        left, reset = _told(again)
        clock.advance(reset)
        whole = await client.get("/r")
        assert whole.status_code == 200 and _told(whole)[0] >= _told(first)[0], (
            rate,
            _told(first),
            _told(whole),
        )
