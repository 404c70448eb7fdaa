"""The hand-fused floors (`benchmarks.fused`) do the throttle's work: the same headers as the
throttle for the same requests, each client counted apart. A floor doing less would make a
target look out of reach that is not."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from benchmarks.apps import dependency_app
from benchmarks.fused import fused_dependency, fused_middleware
from traffik import HTTPThrottle, InMemoryBackend
from traffik.middleware import MiddlewareThrottle, ThrottleMiddleware
from traffik.strategies import BUILTIN_STRATEGIES

pytestmark = pytest.mark.anyio

_RATE = "5/min"
_FIELDS = ("ratelimit", "ratelimit-policy")


async def _answers(app: Any, path: str) -> list[tuple[int, dict[str, str]]]:
    """Three requests from one client, two from another, then one more from the first."""
    seen = []
    for peer in ("10.0.0.1", "10.0.0.1", "10.0.0.2", "10.0.0.1", "10.0.0.2"):
        transport = httpx.ASGITransport(app=app, client=(peer, 4000))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.get(path)
        seen.append(
            (response.status_code, {name: response.headers.get(name, "") for name in _FIELDS})
        )
    return seen


def _starlette(middleware: Any, *options: Any, **named: Any) -> Starlette:
    async def items(request: Any) -> JSONResponse:
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/items/{item_id}", items)])
    app.add_middleware(middleware, *options, **named)
    return app


async def test_the_fused_middleware_answers_as_throttle_middleware() -> None:
    throttle = HTTPThrottle("bench:mw", rate=_RATE, backend=InMemoryBackend())
    theirs = _starlette(
        ThrottleMiddleware, middleware_throttles=[MiddlewareThrottle(throttle, path="/items/")]
    )
    fused = _starlette(fused_middleware("bench:mw", _RATE, "/items/", "/items/"))
    expected = await _answers(theirs, "/items/1")
    assert [headers["ratelimit"].split(";t=")[0] for _, headers in expected] == [
        f'"bench:mw";r={left}' for left in (4, 3, 4, 2, 3)
    ]
    _assert_alike(await _answers(fused, "/items/2"), expected)


@pytest.mark.parametrize("strategy", BUILTIN_STRATEGIES, ids=lambda s: s.__name__)
async def test_the_fused_dependency_answers_as_the_throttle(strategy: type) -> None:
    throttle = HTTPThrottle("profile", rate=_RATE, backend=InMemoryBackend(), strategy=strategy())
    expected = await _answers(dependency_app(throttle), "/")
    assert [status for status, _ in expected] == [200] * 5
    assert {headers["ratelimit-policy"] for _, headers in expected} == {'"profile";q=5;w=60'}
    fused = dependency_app(fused_dependency("profile", _RATE, "GET:/", strategy()))
    _assert_alike(await _answers(fused, "/"), expected)


def _assert_alike(
    answers: list[tuple[int, dict[str, str]]], expected: list[tuple[int, dict[str, str]]]
) -> None:
    """The same statuses and fields, but for the seconds of `RateLimit`'s `t`, which may move
    by one between two runs on a window's position in time (a sliding window's, say)."""
    assert len(answers) == len(expected)
    for (status, headers), (their_status, theirs) in zip(answers, expected):
        assert (status, headers["ratelimit-policy"]) == (their_status, theirs["ratelimit-policy"])
        mine, told = headers["ratelimit"].split(";t="), theirs["ratelimit"].split(";t=")
        assert mine[0] == told[0]
        assert abs(int(mine[1]) - int(told[1])) <= 1, (headers, theirs)
