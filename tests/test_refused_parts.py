"""A request refused by one rate of several takes nothing from the others, and its answer says
so: each rate that would have admitted it reports the units it still has (not what it would
have had, charged), on every store and for every built-in strategy."""

from __future__ import annotations

import re
from typing import Callable

import httpx
import pytest
from fastapi import Depends, FastAPI
from starlette.requests import Request

from traffik import HTTPThrottle
from traffik.backends.base import ThrottleBackend
from traffik.quotas import QuotaContext
from traffik.strategies import BUILTIN_STRATEGIES, FixedWindow, TokenBucket

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


def _request() -> Request:
    scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "query_string": b""}
    return Request({**scope, "client": ("203.0.113.7", 1)})


async def _apply(*hits: tuple[HTTPThrottle, int], steps: bool = False) -> bool:
    """One quota over `hits`; with `steps`, each hit in a context of its own (`step`)."""
    quota = QuotaContext(_request())
    for at, (throttle, cost) in enumerate(hits):
        quota(throttle, cost=cost, skip_handler=True, context={"step": at} if steps else None)
    return await quota.apply()


@pytest.mark.parametrize("reports_first", [False, True], ids=["reports-second", "reports-first"])
async def test_a_refusing_fixed_window_on_another_backend_takes_nothing(
    make_backend: Callable[..., ThrottleBackend], reports_first: bool
) -> None:
    # Two backends, decided one after the other: the fixed window that refuses is one hit of
    # a larger decision, so it keeps nothing of it either (alone, it would count it).
    calls = HTTPThrottle("calls", rate="100/min", backend=make_backend(), strategy=TokenBucket())
    reports = HTTPThrottle("reports", rate="3/min", backend=make_backend(), strategy=FixedWindow())

    def hits(cost: int) -> list[tuple[HTTPThrottle, int]]:
        pair = [(calls, 1), (reports, cost)]
        return pair[::-1] if reports_first else pair

    assert await _apply(*hits(2))
    assert not await _apply(*hits(2))  # 2 + 2 > 3
    stat = await reports.stat(_request())
    assert stat is not None and stat.hits_remaining == 1
    assert await _apply(*hits(1))


async def test_hits_summed_on_one_fixed_window_that_refuse_take_nothing(
    make_backend: Callable[..., ThrottleBackend],
) -> None:
    # Two hits on one bucket are one item of the step, their costs summed: refused, the
    # fixed window keeps nothing of the sum.
    reports = HTTPThrottle("reports", rate="5/min", backend=make_backend(), strategy=FixedWindow())
    assert await _apply((reports, 1))
    assert not await _apply((reports, 2), (reports, 3), steps=True)  # 1 + 5 > 5
    stat = await reports.stat(_request())
    assert stat is not None and stat.hits_remaining == 4
    assert await _apply((reports, 4))


async def test_a_quota_of_one_fixed_window_hit_refused_takes_nothing(
    make_backend: Callable[..., ThrottleBackend],
) -> None:
    # A quota context's apply is one decision, even of one hit: refused, it takes nothing
    # (decided alone, outside a context, a fixed window counts the hit it refuses).
    reports = HTTPThrottle("reports", rate="5/min", backend=make_backend(), strategy=FixedWindow())
    assert await _apply((reports, 1))
    assert not await _apply((reports, 2), (reports, 3))  # one entry of cost 5: 1 + 5 > 5
    stat = await reports.stat(_request())
    assert stat is not None and stat.hits_remaining == 4
    assert await _apply((reports, 4))
