"""What the headers tell when the clock steps, through a FastAPI app, on every store.

`traffik.testing.clock_step_conformance` checks the decisions after a clock steps; here the
headers made of them (`headers="both"`: `RateLimit`, `X-RateLimit-*`, and `Retry-After` on a
429), for every strategy: a client spends its budget, the clock steps back 20 s (believed) or
10 min (not), or forward 400 days, and the client keeps coming. Every number told is a whole,
non-negative number of seconds within one clock's bounds (plus the part of the step that is
believed), and a client that waits its `Retry-After` is admitted.
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable

import httpx
import pytest
from fastapi import Depends, FastAPI

from traffik import HTTPThrottle, ManualClock, Rate
from traffik.backends.base import ThrottleBackend
from traffik.strategies import ADVANCED_STRATEGIES, BUILTIN_STRATEGIES, FixedWindow, Strategy
from traffik.strategies.base import AHEAD_MS
from traffik.testing.clock_step_conformance import HOLD_PERIODS, RESET_PERIODS

pytestmark = pytest.mark.anyio

START = 1_700_000_030.0  # 22:13:50 UTC: off the minute
RATE = "4/min"
STRATEGIES = [cls() for cls in (*BUILTIN_STRATEGIES, *ADVANCED_STRATEGIES)]
STEPS_MS = {"back-20s": -20_000, "back-10min": -600_000, "forward-400d": 400 * 86_400_000}


def _numbers(response: httpx.Response) -> dict[str, int]:
    """Every number the response's rate-limit headers tell, checked to be whole and >= 0."""
    headers = response.headers
    found = re.fullmatch(r'"api";r=(\d+);t=(\d+)', headers["ratelimit"])
    assert found is not None, headers
    told = {"r": int(found[1]), "t": int(found[2])}
    for name in ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"):
        assert headers[name].isdigit(), headers
        told[name] = int(headers[name])
    if response.status_code == 429:
        assert headers["retry-after"].isdigit(), headers
        told["retry-after"] = int(headers["retry-after"])
    return told


@pytest.mark.parametrize("step", STEPS_MS.values(), ids=list(STEPS_MS))
@pytest.mark.parametrize("strategy", STRATEGIES, ids=lambda s: type(s).__name__)
async def test_headers_after_the_clock_steps(
    make_backend: Callable[..., ThrottleBackend], strategy: Strategy, step: int
) -> None:
    if isinstance(strategy, FixedWindow) and make_backend.kind == "redis":  # type: ignore[attr-defined]
        pytest.skip("FixedWindow's window is a key TTL, which follows the server's clock here")
    clock = ManualClock(START)
    backend = make_backend(clock=clock)
    throttle = HTTPThrottle("api", rate=RATE, strategy=strategy, backend=backend, headers="both")
    app = FastAPI()

    @app.get("/r", dependencies=[Depends(throttle)])
    async def route() -> dict[str, Any]:
        return {}

    capacity = max(4, strategy.capacity(Rate.parse(RATE)))
    believed = min(-step, AHEAD_MS) if step < 0 else 0
    longest_wait = math.ceil((HOLD_PERIODS * 60_000 + believed) / 1000)
    longest_reset = math.ceil((RESET_PERIODS * 60_000 + believed) / 1000)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            for _ in range(capacity + 1):
                if (await client.get("/r")).status_code == 429:
                    break
            clock.set(START + step / 1000)
            waited = None
            for _ in range(12):
                response = await client.get("/r")
                told = _numbers(response)
                assert told["r"] == told["x-ratelimit-remaining"] <= 2 * capacity, told
                assert told["t"] <= longest_reset and told["x-ratelimit-reset"] <= longest_reset
                assert waited is None or response.status_code == 200, (waited, told)
                if response.status_code == 429:
                    waited = told["retry-after"]
                    assert 1 <= waited <= longest_wait, (step, told)
                    clock.advance(waited)
                else:
                    waited = None
                    clock.advance(5)
    finally:
        await backend.reset()
        await backend.close()
